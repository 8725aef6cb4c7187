"""Host-sync-free stand-ins for the Apex multi-tensor kernels that Megatron-Core falls back from without Apex or TE.

Megatron-Core 0.16.1's fallback `local_multi_tensor_l2_norm` (megatron/core/utils.py) builds
`torch.tensor([torch.norm(t) for t in tensors])`: every parameter's gradient norm is read back to the host, one
`cudaStreamSynchronize` each (~190 per SmolLM2 step, docs/gpu-fast-path.md's profile), so the host stalls
before every launch of the optimizer's step. Its `local_multi_tensor_scale` launches two kernels per tensor.
Here both are `torch._foreach_*` calls (one fused launch per tensor group, no read-back), with the fallbacks'
signatures and results; Megatron then reads the total norm once, as it would with Apex.
`install()` swaps them in only where Megatron-Core chose its fallbacks (Apex or TE present: untouched).
"""

from __future__ import annotations

import torch


def l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args) -> tuple[torch.Tensor, None]:
    """The L2 norm of every tensor of `tensor_lists` together, as a 1-element fp32 tensor on their device."""
    tensors = [tensor for tensor_list in tensor_lists for tensor in tensor_list]
    norms = torch._foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack([norm.float() for norm in norms])).reshape(1), None


def scale(chunk_size, noop_flag, tensor_lists, factor: float) -> None:
    """tensor_lists[1][i] = tensor_lists[0][i] * factor (dtype cast as `copy_` does)."""
    sources, targets = tensor_lists
    torch._foreach_copy_(targets, torch._foreach_mul(sources, factor) if factor != 1.0 else sources)


def install() -> list[str]:
    """Replace Megatron-Core's local fallbacks by these where it uses them; the names of what was replaced."""
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads, optimizer

    replaced = []
    for module, attribute, fallback, ours in ((clip_grads, "l2_norm_impl", utils.local_multi_tensor_l2_norm, l2_norm),
                                              (clip_grads, "multi_tensor_scale_impl", utils.local_multi_tensor_scale, scale),
                                              (optimizer, "multi_tensor_scale_impl", utils.local_multi_tensor_scale, scale)):
        if getattr(module, attribute, None) is fallback:
            setattr(module, attribute, ours)
            replaced.append(f"{module.__name__}.{attribute}")
    return replaced
