"""Run Megatron-Core on the CPU (gloo): redirect the few `torch.cuda` calls it makes to CPU twins.

Megatron-Core 0.16.1 is GPU-first: building a model seeds a CUDA RNG tracker, layers ask for
`torch.cuda.current_device()` to place buffers, and the optimizer and checkpointing synchronize
streams. On a machine without a GPU (laptops, CI) each of those calls raises "Torch not compiled
with CUDA enabled". `enable()` swaps each one for its CPU equivalent; it does nothing when a GPU
is present, so the GPU path runs stock Megatron-Core. Every redirection is listed below with the
Megatron-Core code that needs it.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch.overrides import TorchFunctionMode

_enabled = False


def _is_cuda(device) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda"
    )


class _CudaToCpu(TorchFunctionMode):
    """Rewrites `device="cuda"` in tensor factories and `.to("cuda")`/`.cuda()` to the CPU.

    Megatron-Core hard-codes the device string in places (e.g. `FP32Optimizer._scale`,
    `torch.zeros(..., device="cuda")` in the schedules and grad clipping) that no module
    attribute can redirect; a torch-function mode sees every such call.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to:
            args = tuple("cpu" if _is_cuda(arg) else arg for arg in args)
        result = func(*args, **kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # grad clipping asserts `grad.type() == "torch.cuda.FloatTensor"`: name the CUDA twin.
            return result.replace("torch.", "torch.cuda.", 1)
        return result


class _NullStream:
    """Stands in for `torch.cuda.Stream`: CPU work is already ordered, so waits are no-ops."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, stream):
        pass

    def wait_event(self, event):
        pass

    def synchronize(self):
        pass

    def record_event(self, event=None):
        return _NullEvent()


class _NullEvent(_NullStream):
    """Stands in for `torch.cuda.Event` (timers and stream waits)."""

    def record(self, stream=None):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def enable() -> bool:
    """Install the CPU redirections once, only when CUDA is unavailable; return whether active."""
    global _enabled
    if torch.cuda.is_available():
        return False
    if _enabled:
        return True
    cuda = torch.cuda
    # RNG tracker (tensor_parallel/random.py): seeds and swaps "cuda" RNG states per TP rank.
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.manual_seed_all = lambda seed: None  # torch.manual_seed calls it after seeding the CPU
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    # ...and the tracker then warns that the CPU state moved inside a "GPU" fork: here they are one.
    logging.getLogger(mcore_random.__name__).addFilter(
        lambda record: "CPU RNG state changed" not in record.getMessage()
    )
    # Buffer placement everywhere (`device=torch.cuda.current_device()`): the CPU device.
    cuda.current_device = lambda: "cpu"
    # Streams, events and syncs (DDP buckets, optimizer, dist_checkpointing): nothing to order.
    cuda.synchronize = lambda device=None: None
    cuda.Stream = _NullStream
    cuda.Event = _NullEvent
    cuda.current_stream = lambda device=None: _NullStream()
    cuda.default_stream = lambda device=None: _NullStream()
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    # Memory statistics (logging, checkpoint sizing): report zero GPU memory.
    cuda.memory_allocated = lambda device=None: 0
    cuda.max_memory_allocated = lambda device=None: 0
    cuda.empty_cache = lambda: None
    # NVTX ranges (transformer layers push/pop them): no profiler to annotate.
    cuda.nvtx.range_push = lambda msg: None
    cuda.nvtx.range_pop = lambda: None
    # Literal `device="cuda"`, `.cuda()` and `.to("cuda")` (optimizer scale, schedules, grad
    # clipping, dist_checkpointing exchanges) and `Tensor.type()` names: a torch-function mode for this thread.
    _CudaToCpu().__enter__()
    _enabled = True
    return True
