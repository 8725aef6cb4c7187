"""One optimizer step of a Megatron-Core model: forward-backward over the micro-batches, grad sync,
optimizer and LR-scheduler step (Megatron-LM's `forward_backward_no_pipelining` + `train_step`).
The training loop, the step benchmark and the tests all run this function.

The loss of a step is the mean over every loss item (token or row) of the global batch, as Megatron's
`calculate_per_token_loss` defines it, not a mean of micro-batch means: the items of all micro-batches
are counted first and summed over the data-parallel ranks, and each micro-batch's summed loss is scaled
by DP / that count before backward (Megatron DDP then averages over DP). Nothing is read back to the
host: the step's loss, tokens, FLOPs and gradient norm stay device tensors until the caller logs them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from raytron.train.optimizer_step import optimizer_step


@dataclass
class StepResult:
    loss: torch.Tensor
    """Mean loss over the global batch's loss items (a detached device tensor)."""
    tokens: torch.Tensor
    """Real tokens of the global batch (all data-parallel ranks)."""
    positions: torch.Tensor
    """Token positions the global batch computed, padding included (all data-parallel ranks)."""
    flops: torch.Tensor
    """Model training FLOPs of the global batch (see `raytron.train.flops`)."""
    grad_norm: torch.Tensor | None
    """Global gradient norm before clipping (a device scalar); None when the step was skipped."""


def train_step(ddp, optimizer, scheduler, task, micro_batches: list[dict], forward=None) -> StepResult:
    """Accumulate `task.loss` gradients over `micro_batches`, sync them across data-parallel ranks once,
    clip, step the optimizer (`raytron.train.optimizer_step`) and advance the schedule by one. `forward` is what
    the loss calls as the model: `ddp` itself unless given (`raytron.train.cuda_graphs.GraphedTraining`)."""
    dp_group = parallel_state.get_data_parallel_group()
    counts = torch.stack([torch.stack([m["items"], m["tokens"], m["positions"], m["flops"]]).double()
                          for m in map(task.measure, micro_batches)]).sum(0)
    dist.all_reduce(counts, group=dp_group)
    items, tokens, positions, flops = counts
    scale = dist.get_world_size(dp_group) / items
    optimizer.zero_grad()
    ddp.zero_grad_buffer()
    loss_sum = torch.zeros((), dtype=torch.float64, device=counts.device)
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else ddp.no_sync():  # grads reduce once, after the last
            loss = task.loss(ddp if forward is None else forward, batch)
            (loss * scale.to(loss.dtype)).backward()
        loss_sum += loss.detach().double()
    ddp.finish_grad_sync()
    grad_norm = optimizer_step(optimizer)
    scheduler.step(increment=1)
    dist.all_reduce(loss_sum, group=dp_group)
    return StepResult(loss_sum / items, tokens, positions, flops, grad_norm)
