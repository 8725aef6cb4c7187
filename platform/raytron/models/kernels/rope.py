"""Rotary embedding fused with Megatron-Core's QKV split: one op reads the fused QKV projection and returns the
rotated query and key and the value; its backward writes the fused gradient in one pass.

RoPE as in RoFormer (Su et al., 2021) and Megatron-Core's `_apply_rotary_pos_emb_bshd` (halves rotated, not
interleaved); the split is `SelfAttention.get_query_key_value_tensors`' layout (`raytron.models.qkv`): per query
group, its query heads, then its key and its value. Unfused, torch.compile turns the split, the two rotations, the
layout change for SDPA and their backward into Inductor kernels far below the H200's memory bandwidth
(docs/gpu-fast-path.md, sixteenth session). On CUDA the op is two hand-written Triton kernels
(`rope_triton`: a few tokens' heads per program, cos and sin computed once per position, fp32 math).
"""

from __future__ import annotations

import torch

from raytron.models.kernels import triton_kernels


def _rotate(x: torch.Tensor, freqs: torch.Tensor, sign: float) -> torch.Tensor:
    """x [..., 2, half] rotated by sign * freqs [s, half] (broadcast over x's middle dims), in fp32 or wider."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    freqs = freqs.to(x.dtype)
    cos, sin = freqs.cos(), sign * freqs.sin()
    cos, sin = (t.view(t.shape[0], *[1] * (x.dim() - 3), t.shape[1]) for t in (cos, sin))
    x1, x2 = x.unbind(-2)
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-2)


def _reference_forward(mixed, freqs, groups: int, q_per_group: int):
    s, b = mixed.shape[:2]
    half = freqs.shape[-1]
    heads = mixed.view(s, b, groups, q_per_group + 2, 2, half)
    rotated = _rotate(heads[:, :, :, : q_per_group + 1], freqs, 1.0).to(mixed.dtype)
    q = rotated[:, :, :, :q_per_group].reshape(s, b, groups * q_per_group, 2 * half)
    k = rotated[:, :, :, q_per_group].reshape(s, b, groups, 2 * half)
    v = heads[:, :, :, q_per_group + 1].reshape(s, b, groups, 2 * half)
    return tuple(t.clone(memory_format=torch.contiguous_format) for t in (q, k, v))  # an op's outputs alias nothing


def _reference_backward(dq, dk, dv, freqs, groups: int, q_per_group: int):
    s, b = dq.shape[:2]
    half = freqs.shape[-1]
    dq = dq.reshape(s, b, groups, q_per_group, 2, half)
    dk = dk.reshape(s, b, groups, 1, 2, half)
    rotated = _rotate(torch.cat((dq, dk), dim=3), freqs, -1.0).to(dq.dtype)
    fused = torch.cat((rotated, dv.reshape(s, b, groups, 1, 2, half)), dim=3)
    return fused.reshape(s, b, groups * (q_per_group + 2) * 2 * half)


@torch.library.custom_op("raytron::rope_qkv", mutates_args=())
def rope_qkv(mixed: torch.Tensor, freqs: torch.Tensor, groups: int, q_per_group: int) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split Megatron's fused QKV `mixed` [s, b, groups * (q_per_group + 2) * d] into query [s, b, heads, d], key
    and value [s, b, groups, d], query and key rotated by `freqs` [s, d / 2] (position times inverse frequency,
    fp32; Megatron-Core's rotary embedding is this twice along d)."""
    if freqs.shape[0] != mixed.shape[0]:
        raise ValueError(f"rope_qkv: {freqs.shape[0]} positions' angles for a sequence of {mixed.shape[0]}")
    if mixed.shape[-1] != groups * (q_per_group + 2) * 2 * freqs.shape[-1]:
        raise ValueError(f"rope_qkv: a fused QKV width of {mixed.shape[-1]} is not {groups} groups x "
                         f"({q_per_group} + 2) heads x {2 * freqs.shape[-1]}")
    if mixed.is_cuda:
        return triton_kernels("rope_triton").forward(mixed, freqs, groups, q_per_group)
    return _reference_forward(mixed, freqs, groups, q_per_group)


@torch.library.custom_op("raytron::rope_qkv_backward", mutates_args=())
def rope_qkv_backward(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, freqs: torch.Tensor, groups: int,
                      q_per_group: int) -> torch.Tensor:
    """The gradient of `rope_qkv`'s `mixed`: each head rotated back by -freqs, laid out as Megatron's fused QKV."""
    if dq.is_cuda:
        return triton_kernels("rope_triton").backward(dq, dk, dv, freqs, groups, q_per_group)
    return _reference_backward(dq, dk, dv, freqs, groups, q_per_group)


@rope_qkv.register_fake
def _(mixed, freqs, groups, q_per_group):
    s, b, width = mixed.shape
    d = 2 * freqs.shape[-1]
    assert width == groups * (q_per_group + 2) * d, "rope_qkv: mixed's width is not groups * (q_per_group + 2) * d"
    return (mixed.new_empty(s, b, groups * q_per_group, d), mixed.new_empty(s, b, groups, d),
            mixed.new_empty(s, b, groups, d))


@rope_qkv_backward.register_fake
def _(dq, dk, dv, freqs, groups, q_per_group):
    s, b = dq.shape[:2]
    return dq.new_empty(s, b, groups * (q_per_group + 2) * 2 * freqs.shape[-1])


def _setup_context(ctx, inputs, output):
    _, freqs, ctx.groups, ctx.q_per_group = inputs
    ctx.save_for_backward(freqs)


def _backward(ctx, dq, dk, dv):
    (freqs,) = ctx.saved_tensors
    return rope_qkv_backward(dq, dk, dv, freqs, ctx.groups, ctx.q_per_group), None, None, None


rope_qkv.register_autograd(_backward, setup_context=_setup_context)
