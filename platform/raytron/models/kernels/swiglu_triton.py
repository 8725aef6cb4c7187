"""Triton kernels of `raytron.models.kernels.swiglu` (CUDA only): each program takes BLOCK elements of the output
(forward) or of each gradient half (backward), flat over tokens x f, so every load and store is contiguous."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _swiglu_forward(x, y, n, F: tl.constexpr, BLOCK: tl.constexpr):
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = at < n
    src = x + (at // F) * (2 * F) + at % F
    x1 = tl.load(src, mask=live, other=0.0).to(tl.float32)
    x2 = tl.load(src + F, mask=live, other=0.0).to(tl.float32)
    tl.store(y + at, (x1 * tl.sigmoid(x1) * x2).to(y.dtype.element_ty), mask=live)


@triton.jit
def _swiglu_backward(dy, x, dx, n, F: tl.constexpr, BLOCK: tl.constexpr):
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = at < n
    half = (at // F) * (2 * F) + at % F
    x1 = tl.load(x + half, mask=live, other=0.0).to(tl.float32)
    x2 = tl.load(x + half + F, mask=live, other=0.0).to(tl.float32)
    g = tl.load(dy + at, mask=live, other=0.0).to(tl.float32)
    gate = tl.sigmoid(x1)
    tl.store(dx + half, (g * x2 * gate * (1 + x1 * (1 - gate))).to(dx.dtype.element_ty), mask=live)
    tl.store(dx + half + F, (g * x1 * gate).to(dx.dtype.element_ty), mask=live)


def forward(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    f = x.shape[-1] // 2
    y = x.new_empty(*x.shape[:-1], f)
    _swiglu_forward[(triton.cdiv(y.numel(), BLOCK),)](x, y, y.numel(), F=f, BLOCK=BLOCK)
    return y


def backward(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    x, dy = x.contiguous(), dy.contiguous()
    dx = torch.empty_like(x)
    _swiglu_backward[(triton.cdiv(dy.numel(), BLOCK),)](dy, x, dx, dy.numel(), F=x.shape[-1] // 2, BLOCK=BLOCK)
    return dx
