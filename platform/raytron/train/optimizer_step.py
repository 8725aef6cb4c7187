"""Megatron-Core's optimizer step with the gradient norm and its clipping kept on the device (no host sync).

Megatron-Core 0.16.1's `optimizer.step()` reads the global gradient norm back to the host
(`get_grad_norm_fp32`: `total_norm.item()`) to decide in Python whether to clip, and without Apex or
Transformer Engine its norm fallback reads every parameter's norm back too (`local_multi_tensor_l2_norm`:
~190 syncs per SmolLM2 step in docs/gpu-fast-path.md). Each read drains the GPU's queue. This runs the same
three phases through Megatron's own split of `step()` (`prepare_grads`, then clipping, then
`step_with_ready_grads`), with the norm as one `torch._foreach_norm` (fp32) + all-reduce and the clipping
as an unconditional multiply by Megatron's coefficient max_norm / (norm + 1e-6) where it is below 1, else 1
(a NaN norm leaves the gradients as Megatron does), on the device: equal to Megatron's step up to fp32
rounding of that coefficient (tests/test_optimizer_step.py). The norm stays a device tensor; the loop reads
it once per log window. Megatron modes this does not cover (precision-aware optimizer: decoupled grads) are
refused.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def megatron_optimizers(optimizer) -> list:
    """The optimizers inside a Megatron `ChainedOptimizer` (what `get_megatron_optimizer` returns), or it alone."""
    return getattr(optimizer, "chained_optimizers", [optimizer])


def grad_norm(optimizer) -> torch.Tensor:
    """The global L2 norm of the main gradients Megatron counts (`get_main_grads_for_grad_norm`: shared and
    TP-duplicated parameters once), over the optimizer's grad-stats group, as an fp32 device scalar."""
    grads = [grad for opt in megatron_optimizers(optimizer) for grad in opt.get_main_grads_for_grad_norm()]
    if grads:
        squares = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).square().sum()
    else:  # a rank whose shard holds no gradients adds nothing (on this rank's device: NCCL reduces GPU tensors)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        squares = torch.zeros((), dtype=torch.float32, device=device)
    dist.all_reduce(squares, group=optimizer.get_grad_stats_parallel_group())
    return squares.sqrt()


@torch.no_grad()
def optimizer_step(optimizer) -> torch.Tensor | None:
    """Clip the main gradients to the optimizer config's `clip_grad` (0: no clipping) by their global norm and
    step the optimizer (what Megatron's `optimizer.step()` does).
    Returns the norm before clipping (a device scalar), or None when the step was skipped for inf/NaN
    gradients (only with a loss scaler, which bf16 and fp32 runs do not use)."""
    if optimizer.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
        raise ValueError("optimizer_step clips `param.grad`; Megatron's precision-aware optimizer keeps "
                         "`decoupled_grad`: use Megatron's optimizer.step() with it")
    if optimizer.prepare_grads():  # model grads -> main grads (bf16); the inf/NaN check of a loss scaler
        return None
    norm = grad_norm(optimizer)
    if optimizer.config.clip_grad > 0:
        coefficient = optimizer.config.clip_grad / (norm + 1.0e-6)
        coefficient = torch.where(coefficient < 1.0, coefficient, 1.0)  # Megatron: `if clip_coeff < 1.0`
        grads = [param.grad for opt in megatron_optimizers(optimizer) for param in opt.get_parameters()
                 if param.grad is not None]
        if grads:
            torch._foreach_mul_(grads, coefficient)
    optimizer.step_with_ready_grads()
    return norm
