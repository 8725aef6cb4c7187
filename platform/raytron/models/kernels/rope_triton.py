"""Triton kernels of `raytron.models.kernels.rope` (CUDA only): the QKV split with RoPE, forward and backward. A program
takes ROWS tokens with all their heads (each head as two halves of d / 2), computes the positions' cos and sin once
in fp32, and writes every output element once: memory-bound, where Inductor's fusion of the unfused ops was not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS = 4
"""Tokens per program: with SmolLM2's 15 head slots of 64, a block of 4 x 16 x 32 elements per half. Tuned for it
only: a rank with many more heads (e.g. 80 slots of 128) gets blocks 16x larger, which would need a grid over heads."""


@triton.jit
def _rope_qkv_forward(mixed, freqs, q, k, v, tokens, batch, GROUPS: tl.constexpr, Q_PER_GROUP: tl.constexpr,
             HALF: tl.constexpr, SLOTS_POW2: tl.constexpr, ROWS: tl.constexpr):
    SLOTS: tl.constexpr = Q_PER_GROUP + 2
    D: tl.constexpr = 2 * HALF
    token = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None, None]
    slot = tl.arange(0, SLOTS_POW2)[None, :, None]  # group * SLOTS + j: j < Q_PER_GROUP query, then key, value
    col = tl.arange(0, HALF)[None, None, :]
    group, j = slot // SLOTS, slot % SLOTS
    live = (token < tokens) & (slot < GROUPS * SLOTS)
    src = mixed + token * (GROUPS * SLOTS * D) + slot * D + col
    x1 = tl.load(src, mask=live, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=live, other=0.0).to(tl.float32)
    angle = tl.load(freqs + (token // batch) * HALF + col, mask=token < tokens, other=0.0)
    cos, sin = tl.cos(angle), tl.sin(angle)
    rotated = j <= Q_PER_GROUP
    y1 = tl.where(rotated, x1 * cos - x2 * sin, x1).to(q.dtype.element_ty)
    y2 = tl.where(rotated, x2 * cos + x1 * sin, x2).to(q.dtype.element_ty)
    q_at = q + token * (GROUPS * Q_PER_GROUP * D) + (group * Q_PER_GROUP + j) * D + col
    kv_at = token * (GROUPS * D) + group * D + col
    is_q, is_k, is_v = live & (j < Q_PER_GROUP), live & (j == Q_PER_GROUP), live & (j == Q_PER_GROUP + 1)
    tl.store(q_at, y1, mask=is_q)
    tl.store(q_at + HALF, y2, mask=is_q)
    tl.store(k + kv_at, y1, mask=is_k)
    tl.store(k + kv_at + HALF, y2, mask=is_k)
    tl.store(v + kv_at, y1, mask=is_v)
    tl.store(v + kv_at + HALF, y2, mask=is_v)


@triton.jit
def _rope_qkv_backward(dq, dk, dv, freqs, dmixed, tokens, batch, q_s, q_b, q_h, k_s, k_b, k_h, v_s, v_b, v_h,
              GROUPS: tl.constexpr, Q_PER_GROUP: tl.constexpr, HALF: tl.constexpr, SLOTS_POW2: tl.constexpr,
              ROWS: tl.constexpr):
    SLOTS: tl.constexpr = Q_PER_GROUP + 2
    D: tl.constexpr = 2 * HALF
    token = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None, None]
    slot = tl.arange(0, SLOTS_POW2)[None, :, None]
    col = tl.arange(0, HALF)[None, None, :]
    group, j = slot // SLOTS, slot % SLOTS
    live = (token < tokens) & (slot < GROUPS * SLOTS)
    pos, row = token // batch, token % batch
    is_q, is_k, is_v = live & (j < Q_PER_GROUP), live & (j == Q_PER_GROUP), live & (j == Q_PER_GROUP + 1)
    head = (group * Q_PER_GROUP + j).to(tl.int64)  # times SDPA's [b, h, s, d] head stride: past int32
    q_at = dq + pos * q_s + row * q_b + head * q_h + col
    k_at = dk + pos * k_s + row * k_b + group.to(tl.int64) * k_h + col
    v_at = dv + pos * v_s + row * v_b + group.to(tl.int64) * v_h + col
    g1 = (tl.load(q_at, mask=is_q, other=0.0).to(tl.float32) + tl.load(k_at, mask=is_k, other=0.0).to(tl.float32)
          + tl.load(v_at, mask=is_v, other=0.0).to(tl.float32))
    g2 = (tl.load(q_at + HALF, mask=is_q, other=0.0).to(tl.float32)
          + tl.load(k_at + HALF, mask=is_k, other=0.0).to(tl.float32)
          + tl.load(v_at + HALF, mask=is_v, other=0.0).to(tl.float32))
    angle = tl.load(freqs + pos * HALF + col, mask=token < tokens, other=0.0)
    cos, sin = tl.cos(angle), tl.sin(angle)
    rotated = j <= Q_PER_GROUP
    x1 = tl.where(rotated, g1 * cos + g2 * sin, g1).to(dmixed.dtype.element_ty)
    x2 = tl.where(rotated, g2 * cos - g1 * sin, g2).to(dmixed.dtype.element_ty)
    dst = dmixed + token * (GROUPS * SLOTS * D) + slot * D + col
    tl.store(dst, x1, mask=live)
    tl.store(dst + HALF, x2, mask=live)


def _shape(freqs: torch.Tensor, groups: int, q_per_group: int) -> dict:
    half = freqs.shape[-1]
    if half & (half - 1):
        raise ValueError(f"rope_qkv's Triton kernels need a power-of-two head_dim / 2, not {half}")
    return dict(GROUPS=groups, Q_PER_GROUP=q_per_group, HALF=half,
                SLOTS_POW2=triton.next_power_of_2(groups * (q_per_group + 2)), ROWS=ROWS)


def forward(mixed, freqs, groups: int, q_per_group: int):
    s, b, _ = mixed.shape
    d = 2 * freqs.shape[-1]
    mixed, freqs = mixed.contiguous(), freqs.float().contiguous()
    q = mixed.new_empty(s, b, groups * q_per_group, d)
    k, v = mixed.new_empty(s, b, groups, d), mixed.new_empty(s, b, groups, d)
    _rope_qkv_forward[(triton.cdiv(s * b, ROWS),)](mixed, freqs, q, k, v, s * b, b,
                                                   **_shape(freqs, groups, q_per_group))
    return q, k, v


def _unit_stride(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """t with a unit stride along d (SDPA's gradients may come in any layout), and its s, b, head strides."""
    t = t if t.stride(-1) == 1 else t.contiguous()
    return t, t.stride()[:3]


def backward(dq, dk, dv, freqs, groups: int, q_per_group: int):
    s, b = dq.shape[:2]
    freqs = freqs.float().contiguous()
    (dq, q_strides), (dk, k_strides), (dv, v_strides) = map(_unit_stride, (dq, dk, dv))
    dmixed = dq.new_empty(s, b, groups * (q_per_group + 2) * 2 * freqs.shape[-1])
    _rope_qkv_backward[(triton.cdiv(s * b, ROWS),)](dq, dk, dv, freqs, dmixed, s * b, b, *q_strides, *k_strides,
                                                    *v_strides, **_shape(freqs, groups, q_per_group))
    return dmixed
