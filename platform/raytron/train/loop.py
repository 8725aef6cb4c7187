"""The one Ray Train worker loop every task runs on Megatron-Core (sentiment, summarization).

Each Ray Train worker is one Megatron-Core rank. Ray shards the streamed dataset over all workers;
the ranks of one tensor-parallel group all-gather their micro-batches so they run the same rows
(Megatron-LM broadcasts within the TP group for the same reason). Gradient accumulation, grad
sync and the optimizer step follow Megatron's `forward_backward_no_pipelining` + `train_step`.
What differs per task (model, loss, validation metrics, export) is a `Task` (`raytron.train.tasks`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Protocol

import ray.train
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from raytron.config import JobConfig
from raytron.train import checkpoint
from raytron.train.distributed import init_megatron
from raytron.train.optim import wrap_for_training

log = logging.getLogger("raytron.train")


class Task(Protocol):
    """What the loop needs from a task: Megatron-style, implementations are swapped, not branched on."""

    columns: tuple[str, ...]
    """Dataset columns a batch carries."""
    selection: str
    """Validation metric that picks the exported model (higher is better)."""
    published_as: str
    """Default model-store name of the exported model."""

    def build(self, device: torch.device, params_dtype: torch.dtype) -> tuple[torch.nn.Module, TransformerConfig]:
        """The pretrained model with this rank's TP shard, on `device`."""

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Mean training loss of a micro-batch and the real tokens it holds."""

    def validation_sums(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float64 sums over a validation micro-batch (added over batches and DP ranks)."""

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Metrics from the summed `validation_sums`, `selection` among them."""

    def export(self, model, metrics: dict) -> None:
        """Write the run's model folder from the bare module (every TP rank calls; rank 0 writes)."""


def tp_gather(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate the micro-batches of all ranks in this TP group (identical result on each)."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if tp == 1:
        return batch
    group = parallel_state.get_tensor_model_parallel_group()
    out = {}
    for key, tensor in batch.items():
        parts = [torch.empty_like(tensor) for _ in range(tp)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        out[key] = torch.cat(parts)
    return out


def validate(task: Task, ddp, shard, per_worker: int, device) -> dict[str, float]:
    """The task's validation metrics over a sharded split, summed over the data-parallel ranks."""
    ddp.eval()
    totals = None
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=per_worker, device=device):
            sums = task.validation_sums(ddp, tp_gather({k: batch[k] for k in task.columns}))
            totals = sums if totals is None else totals + sums
    dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    ddp.train()
    return task.validation_metrics(totals)


def record_metrics(wandb_run, run_dir: Path, metrics: dict) -> None:
    """Log to W&B at `metrics["step"]` and append one JSON line to `<run>/metrics.jsonl` (readable without W&B)."""
    wandb_run.log(metrics, step=metrics["step"])
    with open(run_dir / "metrics.jsonl", "a") as out:
        out.write(json.dumps(metrics) + "\n")


def train_worker(config: dict) -> None:
    """`train_loop_per_worker` for Ray Train: fine-tune, validate each epoch, checkpoint, export the best."""
    from raytron.config import TASK_CONFIGS
    from raytron.train.tasks import make_task

    cfg: JobConfig = TASK_CONFIGS[config["job"]["task"]].model_validate(config["job"])
    num_train_rows: int = config["num_train_rows"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    device = init_megatron(cfg.parallel.tensor, cfg.parallel.pipeline, cfg.train.seed)
    rank = dist.get_rank()
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    task = make_task(cfg)
    model, tconfig = task.build(device, torch.bfloat16 if bf16 else torch.float32)

    tp, dp = cfg.parallel.tensor, cfg.parallel.data
    per_worker = cfg.train.micro_batch_size // tp
    accumulation = cfg.train.global_batch_size // (cfg.train.micro_batch_size * dp)
    rows_per_worker = num_train_rows // dist.get_world_size()
    steps_per_epoch = rows_per_worker // (per_worker * accumulation)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{num_train_rows} training rows give no full step of global_batch_size={cfg.train.global_batch_size}"
        )
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, total_steps)

    state = {"step": 0, "epoch": 0, "best_val": -math.inf}
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            state = checkpoint.load(Path(path), model, optimizer, scheduler)
        log.info("resumed from %s at step %d (epoch %d)", restored.path, state["step"], state["epoch"])
        if state["step"] >= total_steps:
            log.info("this run is already complete; use run.resume=false or a new run.name to train again")

    wandb_run = None
    if rank == 0:
        from raytron.tracking import start_run

        wandb_run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", cfg.model_dump())
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    log.info(
        "rank %d: %s, TP=%d DP=%d, %d steps/epoch x %d epochs (%d total), micro %d x accumulation %d, %s",
        rank, type(task).__name__, tp, dp, steps_per_epoch, cfg.train.epochs, total_steps,
        cfg.train.micro_batch_size, accumulation, "bf16" if bf16 else "fp32",
    )
    ddp.train()
    while state["epoch"] < cfg.train.epochs and state["step"] < total_steps:
        batches = train_shard.iter_torch_batches(
            batch_size=per_worker, drop_last=True, device=device, local_shuffle_buffer_size=1000,
            local_shuffle_seed=cfg.train.seed + state["epoch"],
        )
        window_start, window_tokens, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
        micro = []
        for batch in batches:
            micro.append(tp_gather({k: batch[k] for k in task.columns}))
            if len(micro) < accumulation:
                continue
            optimizer.zero_grad()
            ddp.zero_grad_buffer()
            step_loss = 0.0
            for index, mb in enumerate(micro):
                sync = ddp.no_sync() if index < len(micro) - 1 else contextlib.nullcontext()
                with sync:
                    loss, tokens = task.loss(ddp, mb)
                    (loss / len(micro)).backward()
                step_loss += loss.item() / len(micro)
                window_tokens += tokens
            ddp.finish_grad_sync()
            _, grad_norm, _ = optimizer.step()
            scheduler.step(increment=1)
            micro = []
            state["step"] += 1
            window_loss += step_loss
            window_steps += 1
            if state["step"] % cfg.train.log_every == 0 or state["step"] == total_steps:
                elapsed = time.perf_counter() - window_start
                # every TP rank counted the same rows: tokens of the whole job = ours x DP
                metrics = {
                    "train/loss": window_loss / window_steps,
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/grad_norm": float(grad_norm or 0.0),
                    "train/tokens_per_s": window_tokens * dp / elapsed,
                    "train/step_time_ms": 1000 * elapsed / window_steps,
                    "step": state["step"],
                    "epoch": state["step"] / steps_per_epoch,
                }
                if rank == 0:
                    log.info(
                        "epoch %d step %d/%d loss %.4f lr %.2e %.0f tok/s %.1f ms/step",
                        state["epoch"] + 1, state["step"], total_steps, metrics["train/loss"], metrics["train/lr"],
                        metrics["train/tokens_per_s"], metrics["train/step_time_ms"],
                    )
                    record_metrics(wandb_run, cfg.run_dir, metrics)
                ray.train.report(metrics)
                window_start, window_tokens, window_loss, window_steps = time.perf_counter(), 0, 0.0, 0
            if state["step"] >= total_steps:
                break
        state["epoch"] += 1
        val = validate(task, ddp, val_shard, per_worker, device)
        improved = val[task.selection] > state["best_val"]
        if improved:
            state["best_val"] = val[task.selection]
            task.export(model, {**{f"val_{k}": v for k, v in val.items()}, "step": state["step"], "epoch": state["epoch"]})
        val_metrics = {**{f"val/{k}": v for k, v in val.items()}, "step": state["step"]}
        if rank == 0:
            log.info("epoch %d: validation %s%s", state["epoch"], ", ".join(f"{k} {v:.4f}" for k, v in val.items()),
                     " (best so far: model exported)" if improved else "")
            record_metrics(wandb_run, cfg.run_dir, val_metrics)
        staging = cfg.run_dir / "checkpoint-staging" / f"step-{state['step']:07d}"
        checkpoint.save(staging, model, optimizer, scheduler, state)
        report = {**val_metrics, "epoch": state["epoch"]}
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(staging) if rank == 0 else None)
        dist.barrier()
        if rank == 0:  # Ray copied it into the run's storage
            shutil.rmtree(staging, ignore_errors=True)
    if wandb_run is not None:
        wandb_run.summary[f"best_val_{task.selection}"] = state["best_val"]
        wandb_run.finish()
    if not math.isfinite(state["best_val"]):
        raise RuntimeError(f"validation {task.selection} is not finite")
