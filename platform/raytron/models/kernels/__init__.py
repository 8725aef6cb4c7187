"""raytron's fused ops for the Llama decoder (`model.kernels=fused`): torch custom ops whose CUDA implementations are
Triton kernels and whose other implementations are the same math in torch (what the CPU tests check against
Megatron-Core's unfused modules)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Literal

from raytron.errors import RaytronError

Kernels = Literal["fused", "megatron"]
"""fused: `rope.rope_qkv` in FusedRopeSelfAttention and `swiglu.SwiGLU` as the MLP's activation module;
megatron: Megatron-Core's SelfAttention and MLP with their unfused rotary embedding and GLU."""


def triton_kernels(name: str) -> ModuleType:
    """`raytron.models.kernels.<name>`, imported on first CUDA use: CPU-only installs have no Triton."""
    if importlib.util.find_spec("triton") is None:
        raise RaytronError("model.kernels=fused on CUDA needs Triton (PyTorch's CUDA wheels bring it: pip install "
                           "triton), or set model.kernels=megatron")
    return importlib.import_module(f"raytron.models.kernels.{name}")
