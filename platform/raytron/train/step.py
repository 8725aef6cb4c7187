"""One optimizer step of a Megatron-Core model: forward-backward over the micro-batches, grad sync,
optimizer and LR-scheduler step (Megatron-LM's `forward_backward_no_pipelining` + `train_step`).
The training loop, the step benchmark and the tests all run this function."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class StepResult:
    loss: torch.Tensor
    """Mean loss over the micro-batches (a detached device tensor: no host sync here)."""
    tokens: int
    """Real tokens the micro-batches held."""
    grad_norm: float | None
    """Global gradient norm before clipping; None when the optimizer does not report one."""


def train_step(ddp, optimizer, scheduler, loss_fn: Callable, micro_batches: list[dict]) -> StepResult:
    """Accumulate gradients over `micro_batches` (`loss_fn(ddp, batch) -> (mean loss, tokens)`), sync them
    across data-parallel ranks once, clip, step the optimizer and advance the schedule by one."""
    optimizer.zero_grad()
    ddp.zero_grad_buffer()
    total = torch.zeros((), device=next(ddp.parameters()).device)
    tokens = 0
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else ddp.no_sync():  # grads reduce once, after the last
            loss, batch_tokens = loss_fn(ddp, batch)
            (loss / len(micro_batches)).backward()
        total += loss.detach().float() / len(micro_batches)
        tokens += batch_tokens
    ddp.finish_grad_sync()
    _, grad_norm, _ = optimizer.step()
    scheduler.step(increment=1)
    return StepResult(total, tokens, None if grad_norm is None else float(grad_norm))
