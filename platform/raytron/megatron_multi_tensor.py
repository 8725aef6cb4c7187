"""Host-sync-free stand-ins for the Apex multi-tensor kernels that Megatron-Core's gradient clipping falls back from.

Without Apex or Transformer Engine, Megatron-Core 0.16.1's `clip_grads` uses `local_multi_tensor_l2_norm`
(megatron/core/utils.py), which builds `torch.tensor([torch.norm(g) for g in grads])`: every parameter's gradient
norm is read back to the host, one `cudaStreamSynchronize` each (~190 per SmolLM2 step in docs/gpu-fast-path.md's
profile), and its `local_multi_tensor_scale` launches two kernels per tensor. Here both are `torch._foreach_*`
calls with the fallbacks' signatures and results; Megatron then reads the total norm once, as it would with Apex.
`install()` swaps them in only where `clip_grads` chose its fallbacks (with Apex or TE: untouched). The bf16
optimizer's param copies never call the scale op (Megatron copies bf16 tensor by tensor), so they are left as is.
"""

from __future__ import annotations

import torch


def l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args) -> tuple[torch.Tensor, None]:
    """The L2 norm of every tensor of `tensor_lists` together, as a 1-element fp32 tensor on their device (computed
    in fp32: for bf16 tensors the fallback's per-tensor norms are rounded to bf16 first)."""
    tensors = [tensor for tensor_list in tensor_lists for tensor in tensor_list]
    if not tensors:  # as the fallback: the norm of nothing is 0
        return torch.zeros(1, dtype=torch.float32, device="cuda" if torch.cuda.is_available() else "cpu"), None
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)  # bf16 gradients too: each norm in fp32
    return torch.linalg.vector_norm(torch.stack(norms)).reshape(1), None


def scale(chunk_size, noop_flag, tensor_lists, factor: float) -> None:
    """tensor_lists[1][i] = tensor_lists[0][i] * factor (cast as `copy_` casts; in place when both lists are one)."""
    sources, targets = tensor_lists
    if not targets:
        return
    if sources is targets:  # clipping: [grads, grads]; no second copy of every gradient
        torch._foreach_mul_(targets, factor)
    else:
        torch._foreach_copy_(targets, torch._foreach_mul(sources, factor))


def install() -> list[str]:
    """Replace Megatron-Core's local fallbacks in its gradient clipping by these; the names of what was replaced."""
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads

    replaced = []
    for attribute, fallback, ours in (("l2_norm_impl", utils.local_multi_tensor_l2_norm, l2_norm),
                                      ("multi_tensor_scale_impl", utils.local_multi_tensor_scale, scale)):
        if getattr(clip_grads, attribute, None) is fallback:
            setattr(clip_grads, attribute, ours)
            replaced.append(f"{clip_grads.__name__}.{attribute}")
    return replaced
