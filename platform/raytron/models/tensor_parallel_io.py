"""Move full (unsharded) state dicts in and out of a tensor-parallel Megatron-Core model.

Megatron-Core marks each sharded parameter with `tensor_model_parallel` and `partition_dim`;
a rank's shard is its equal chunk of the full tensor along that dim. Loading slices, saving
all-gathers over the TP group. (dist_checkpointing does the same for training checkpoints; this
is for interchange with HF formats, which are unsharded.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def _is_sharded(param: torch.nn.Parameter) -> bool:
    return bool(getattr(param, "tensor_model_parallel", False))


def load_full_state_dict(model: torch.nn.Module, full: dict[str, torch.Tensor], *, optional_prefixes=()) -> None:
    """Copy each full tensor's local TP shard into `model`; parameters under `optional_prefixes`
    may be absent from `full` (they keep their initialization). Raises on any other mismatch."""
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in full and not n.startswith(tuple(optional_prefixes))]
    unexpected = [n for n in full if n not in params]
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in params.items():
            if name not in full:
                continue
            tensor = full[name]
            if _is_sharded(param) and tp_size > 1:
                tensor = tensor.chunk(tp_size, dim=param.partition_dim)[tp_rank]
            if tensor.shape != param.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(param.shape)}")
            param.copy_(tensor)


def gather_full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """All parameters as full tensors on the CPU (every TP rank gets the same dict)."""
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    full = {}
    for name, param in model.named_parameters():
        tensor = param.detach()
        if _is_sharded(param) and tp_size > 1:
            parts = [torch.empty_like(tensor) for _ in range(tp_size)]
            dist.all_gather(parts, tensor.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
            tensor = torch.cat(parts, dim=param.partition_dim)
        full[name] = tensor.cpu().clone()
    return full
