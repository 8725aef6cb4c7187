"""SwiGLU (Shazeer, 2020: silu(x1) * x2 over the two halves of the fc1 output) as one op each way, swapped into
Megatron-Core's MLP through its activation-module spec hook (`MLPSubmodules.activation_func`).

Megatron's unfused GLU (`torch.chunk`, silu, multiply) compiles to an Inductor backward that builds the fc1 gradient
with a `cat`, reading the saved halves once per output half: 0.87 ms a layer at 128 x 1,024 tokens on an H200 (in the
compiled step's profile), about twice the bytes it must move (docs/gpu-fast-path.md, sixteenth session). On CUDA the op is two Triton kernels
(`swiglu_triton`) that read each input once and write each output once, in fp32 math.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.module import MegatronModule
from torch import nn

from raytron.errors import RaytronError
from raytron.models.kernels import triton_kernels


def _reference_forward(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.to(torch.promote_types(x.dtype, torch.float32)).chunk(2, dim=-1)
    return (nn.functional.silu(x1) * x2).to(x.dtype)


def _reference_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    wide = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x.to(wide).chunk(2, dim=-1)
    dy, gate = dy.to(wide), torch.sigmoid(x1)
    return torch.cat((dy * x2 * gate * (1 + x1 * (1 - gate)), dy * x1 * gate), dim=-1).to(x.dtype)


@torch.library.custom_op("raytron::swiglu", mutates_args=())
def swiglu(x: torch.Tensor) -> torch.Tensor:
    """silu(x1) * x2, x = [..., 2 * f] the gate half x1 then the linear half x2 (Megatron's fc1 layout)."""
    if x.shape[-1] % 2:
        raise ValueError(f"swiglu: the last dimension ({x.shape[-1]}) holds two halves, so it must be even")
    return triton_kernels("swiglu_triton").forward(x) if x.is_cuda else _reference_forward(x)


@torch.library.custom_op("raytron::swiglu_backward", mutates_args=())
def swiglu_backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of `swiglu`'s x, [..., 2 * f]."""
    return triton_kernels("swiglu_triton").backward(dy, x) if x.is_cuda else _reference_backward(dy, x)


@swiglu.register_fake
def _(x):
    return x.new_empty(*x.shape[:-1], x.shape[-1] // 2)


@swiglu_backward.register_fake
def _(dy, x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    return swiglu_backward(dy, x)


swiglu.register_autograd(_backward, setup_context=_setup_context)


class SwiGLU(MegatronModule):
    """The activation module of a gated MLP spec: [..., 2 * f] -> [..., f]. Megatron-Core builds it with the
    config (`MLPSubmodules.activation_func`, used when `config.use_te_activation_func`); as a MegatronModule it
    takes part in distributed checkpoints (with no state)."""

    def __init__(self, config):
        super().__init__(config)
        if not (config.gated_linear_unit and config.activation_func is nn.functional.silu
                and config.activation_func_clamp_value is None and config.glu_linear_offset == 0):
            raise RaytronError("model.kernels=fused computes SwiGLU only (gated silu, no clamp, no linear offset): "
                               "set model.kernels=megatron")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x)
