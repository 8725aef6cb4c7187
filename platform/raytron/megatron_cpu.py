"""Run Megatron-Core on the CPU (gloo): redirect the few `torch.cuda` calls it makes to CPU twins.

Megatron-Core 0.16.1 is GPU-first: its RNG tracker seeds and swaps CUDA RNG states, DDP places its
grad buffers on `torch.cuda.current_device()`, the optimizer and grad clipping build tensors on
`device="cuda"`, and checkpointing synchronizes the GPU. Without a GPU (laptops, CI) each of those
calls raises "Torch not compiled with CUDA enabled", or, for the RNG, silently does nothing.

`_patches()` is the whole shim: one row per replaced attribute, with the Megatron-Core code that
needs it. tests/test_megatron_cpu.py leaves out each row in turn and shows that building, training
(Megatron DDP + optimizer + grad clipping) and checkpointing a model then fails. `enable()` installs
the rows once per process (`raytron.runtime.init_megatron` calls it) and does nothing when a GPU is
present, so the GPU path runs stock Megatron-Core; `disable()` puts the originals back.
"""

from __future__ import annotations

import logging
import threading
from importlib import metadata
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

from raytron.errors import RaytronError

WRITTEN_FOR = "0.16.1"
"""The Megatron-Core version whose code paths the table was checked against."""


def _is_cuda(device) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda"
    )


class _CudaToCpu(TorchFunctionMode):
    """Sees every torch call of this thread, for the CUDA literals no module attribute can redirect.
    Each rewrite is a class flag that a row of the table turns on."""

    device_argument = False
    type_name = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.device_argument and _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        result = func(*args, **kwargs)
        if self.type_name and func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return result.replace("torch.", "torch.cuda.", 1)
        return result


def _drop_fork_warning(record: logging.LogRecord) -> bool:
    return "CPU RNG state changed" not in record.getMessage()


class Patch(NamedTuple):
    target: Any
    attribute: str
    replacement: Any
    reason: str

    @property
    def name(self) -> str:
        owner = getattr(self.target, "__name__", None) or f"logging.getLogger({self.target.name!r})"
        return f"{owner}.{self.attribute}"


def _patches() -> list[Patch]:
    from megatron.core.tensor_parallel import random as mcore_random

    cuda = torch.cuda
    rng_log = logging.getLogger(mcore_random.__name__)
    return [
        Patch(cuda, "get_rng_state", lambda device="cuda": torch.get_rng_state(),
              "RNG tracker `add` (model_parallel_cuda_manual_seed) saves the CUDA RNG state"),
        Patch(cuda.random, "get_rng_state", lambda device="cuda": torch.get_rng_state(),
              "RNG tracker `fork` (dropout in TP regions) reads it through `_get_cuda_rng_state`"),
        Patch(cuda, "manual_seed", lambda seed: torch.default_generator.manual_seed(int(seed)),
              "RNG tracker `add` seeds each tracked stream (without a GPU the call is queued, never run)"),
        Patch(mcore_random, "_set_cuda_rng_state", lambda state, *a, **k: torch.set_rng_state(state),
              "RNG tracker `add`/`fork` switch streams (without a GPU the switch is queued, never run)"),
        Patch(rng_log, "filters", [*rng_log.filters, _drop_fork_warning],
              "RNG tracker `fork` warns on every dropout that the CPU RNG moved: here CPU and CUDA RNG are one"),
        Patch(cuda, "current_device", lambda: "cpu",
              "`device=torch.cuda.current_device()`: DDP grad buffers, TP collectives, RoPE"),
        Patch(cuda, "synchronize", lambda device=None: None,
              "dist_checkpointing.save (`preload_tensors` in strategies/filesystem_async.py)"),
        Patch(_CudaToCpu, "device_argument", True,
              "`device='cuda'` literals: FP32Optimizer's loss scale, grad-norm and clipping buffers"),
        Patch(_CudaToCpu, "type_name", True,
              "`param.type()` compared with 'torch.cuda.*': the bf16 and distributed optimizers' construction, and "
              "the grad clipping of Megatron's own `optimizer.step()` (tests/test_optimizer_step.py compares with it)"),
    ]


_originals: list[tuple[Any, str, Any]] = []
_mode: _CudaToCpu | None = None
_mode_thread: int | None = None


def patch_names() -> list[str]:
    """The rows of the shim by name: what `enable(skip=...)` accepts."""
    return [patch.name for patch in _patches()]


def is_enabled() -> bool:
    return _mode is not None


def _check(condition: bool, what: str) -> None:
    if not condition:
        try:
            installed = metadata.version("megatron-core")
        except metadata.PackageNotFoundError:
            installed = "not installed"
        raise RaytronError(
            f"the Megatron-Core CPU shim (raytron/megatron_cpu.py) {what} (megatron-core {installed}, "
            f"torch {torch.__version__}; the shim was written for megatron-core {WRITTEN_FOR}): update its table"
        )


def enable(skip: frozenset[str] = frozenset()) -> bool:
    """Install the CPU redirections, only when CUDA is unavailable; return whether they are active.

    Idempotent: once active, a later call changes nothing (`disable()` first to change `skip`).
    `skip` leaves out the named rows (tests). An attribute the table replaces that does not exist
    (another Megatron-Core or torch version) is a RaytronError, and nothing stays patched."""
    global _mode, _mode_thread
    if torch.cuda.is_available():
        return False
    if _mode is not None:
        return True
    patches = _patches()
    unknown = set(skip) - {patch.name for patch in patches}
    if unknown:
        raise ValueError(f"no such patches: {sorted(unknown)}; the shim has {[p.name for p in patches]}")
    try:
        for patch in patches:
            if patch.name in skip:
                continue
            _check(hasattr(patch.target, patch.attribute), f"replaces {patch.name}, which does not exist")
            _originals.append((patch.target, patch.attribute, getattr(patch.target, patch.attribute)))
            setattr(patch.target, patch.attribute, patch.replacement)
            _check(getattr(patch.target, patch.attribute) is patch.replacement, f"could not replace {patch.name}")
        mode = _CudaToCpu()
        mode.__enter__()
        _mode, _mode_thread = mode, threading.get_ident()
        if _CudaToCpu.device_argument:
            _check(torch.empty(0, device="cuda").device.type == "cpu", "could not redirect device='cuda'")
        if _CudaToCpu.type_name:
            _check(torch.empty(0).type() == "torch.cuda.FloatTensor", "could not rename Tensor.type()")
    except BaseException:
        disable()
        raise
    return True


def disable() -> None:
    """Undo `enable()` (in the thread that called it): restore every replaced attribute and leave
    the torch-function mode. Does nothing when the shim is not active."""
    global _mode, _mode_thread
    if _mode is not None:
        if threading.get_ident() != _mode_thread:
            raise RuntimeError("megatron_cpu.disable() must run in the thread that called enable()")
        _mode.__exit__(None, None, None)
        _mode = _mode_thread = None
    while _originals:
        target, attribute, original = _originals.pop()
        setattr(target, attribute, original)

