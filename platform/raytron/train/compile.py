"""`train.compile`: Megatron-Core's transformer layers compiled in place with `torch.compile`.

The fine-tune steps are host-bound (docs/gpu-fast-path.md: ~2,700 kernel launches per decoder step, the GPU
busy under half of it), so fusing each layer's norms, rotary, activations and residual adds into Inductor
kernels is where the time is. Each `TransformerLayer` is compiled, not the whole block: with Dynamo's
inlined module parameters the layers of a model share one graph (compiled once, not once per layer), and
the block's own contexts stay eager. DDP and the optimizer stay eager too (the summarization task compiles its
loss itself, raytron.train.summarization); `nn.Module.compile` keeps the parameter names, so checkpoints and
exports do not change. Automatic dynamic shapes make the bucketed widths (multiples of 64) share one graph
after the first recompile; `static_shapes` compiles one graph per shape instead (faster kernels, more compile
time: `train.compile_static_shapes`).

Dropout in attention (the encoders, with TP > 1: one TP rank draws from the default stream, raytron.models.attention)
switches the CUDA RNG state through Megatron's tracker `fork`, whose setter runs a callback under torch.cuda's
initialization lock (`_lazy_call`). Dynamo, compiling that callback as a new frame, restores the CUDA RNG state
afterwards through the same lock and waits on it forever: the encoder's first compiled step never finished on a GPU
(docs/gpu-fast-path.md, ninth session). The setter runs eagerly, never compiled; the attention call inside the fork
then runs eagerly too (a graph break), the rest of the layer compiled.
"""

from __future__ import annotations

import logging
import shutil
import types
import warnings

import megatron.core.utils
import torch
from megatron.core.tensor_parallel import random as megatron_random
from megatron.core.transformer.transformer_layer import TransformerLayer

from raytron.errors import RaytronError

log = logging.getLogger("raytron.train")


def _warn_outside_compiled_code(*args, **kwargs) -> None:
    if not torch.compiler.is_compiling():
        warnings.warn(*args, **kwargs)


def compile_layers(model: torch.nn.Module, device: torch.device, static_shapes: int | None = None) -> int:
    """Compile every TransformerLayer of `model` in place (compiled on first call); returns how many. With
    `static_shapes`, one graph per input shape, for up to that many shapes (None: dynamic shapes)."""
    if device.type == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
        raise RaytronError("train.compile=true on a CPU needs a C++ compiler for torch.compile's CPU kernels "
                           "(none on PATH): install g++, or set train.compile=false")
    layers = [module for module in model.modules() if isinstance(module, TransformerLayer)]
    if not layers:
        raise RaytronError(f"train.compile=true: {type(model).__name__} has no Megatron-Core TransformerLayer to "
                           "compile; set train.compile=false")
    # Megatron-Core 0.16.1's RowParallelLinear passes tp_group=None on every forward, and the helper that fills
    # it in calls warnings.warn, which Dynamo cannot trace: every layer would break into pieces. It warns as
    # before wherever it is not being compiled.
    megatron.core.utils.warnings = types.SimpleNamespace(warn=_warn_outside_compiled_code)
    if not getattr(megatron_random._set_cuda_rng_state, "_torchdynamo_disable", False):  # the module's docstring
        megatron_random._set_cuda_rng_state = torch.compiler.disable(megatron_random._set_cuda_rng_state)
    if static_shapes:
        # the layers share one code object, whose graphs Dynamo caps (default 8; past it, frames run eagerly), and
        # it caps all code objects' graphs together (default 256): both must leave room for every shape
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, static_shapes)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 2 * static_shapes)
    for layer in layers:
        layer.compile(dynamic=False if static_shapes else None)
    log.info("torch.compile: %d transformer layers of %s compile on their first step (%s)", len(layers),
             type(model).__name__, f"static shapes: a graph per input shape, up to {static_shapes}" if static_shapes
             else "dynamic shapes after the first recompile")
    return len(layers)
