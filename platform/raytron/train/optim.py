"""Megatron-Core DDP, optimizer and LR/WD schedule for a model, from our TrainConfig."""

from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.module import Float16Module

from raytron.config import TrainConfig
from raytron.train.cuda_graphs import use_capture_stream


def wrap_for_training(model, tconfig, train: TrainConfig, total_steps: int):
    """bf16 wrapper (when configured), Megatron DDP with fp32 grad reduction, Adam, warmup + decay; with
    `train.cuda_graphs`, all of it on the stream the graphs are captured on. A restored
    scheduler keeps only its step count: the schedule is always the current config's (`raytron.train.loop`
    logs what changed), never the checkpoint's, which would train added epochs at min_lr."""
    if train.cuda_graphs:  # before DDP keeps each parameter's AccumulateGrad node (raytron.train.cuda_graphs)
        use_capture_stream(next(model.parameters()).device)
    if tconfig.bf16:
        model = Float16Module(tconfig, model)
    ddp = DistributedDataParallel(
        config=tconfig,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=train.distributed_optimizer,
        ),
        module=model,
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=train.lr,
            min_lr=train.min_lr,
            weight_decay=train.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_eps=1e-8,
            clip_grad=train.clip_grad,
            bf16=tconfig.bf16,
            params_dtype=torch.bfloat16 if tconfig.bf16 else torch.float32,
            use_distributed_optimizer=train.distributed_optimizer,
        ),
        [ddp],
    )
    warmup = int(train.warmup_fraction * total_steps)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=train.lr,
        min_lr=train.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(total_steps, warmup + 1),
        lr_decay_style=train.decay_style,
        start_wd=train.weight_decay,
        end_wd=train.weight_decay,
        wd_incr_steps=max(total_steps, 1),
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,  # on resume: this config's schedule at the checkpoint's step
    )
    return ddp, optimizer, scheduler
