"""The one Ray Train worker loop every task runs on Megatron-Core (sentiment, summarization, topics encoder).

Each Ray Train worker is one Megatron-Core rank. Ray shards the streamed dataset over all workers;
the ranks of one tensor-parallel group all-gather their micro-batches so they run the same rows
(Megatron-LM broadcasts within the TP group for the same reason). Gradient accumulation, grad
sync and the optimizer step are `raytron.train.step.train_step`. The worker reads top-down:
`setup` (groups, model, schedule, restore), then per epoch `train_epoch` and `end_epoch` (validate,
export the best, checkpoint). What differs per task (model, loss, validation metrics, export) is a `Task` (`raytron.train.tasks`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ray.train
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from raytron.config import JobConfig
from raytron.runtime import init_megatron
from raytron.train import checkpoint
from raytron.train.flops import peak_flops_per_device
from raytron.train.optim import wrap_for_training
from raytron.train.step import train_step

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

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a micro-batch, summed over its loss items (tokens or rows)."""

    def measure(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Device tensors `items` (loss items), `tokens` (real tokens) and `flops` (model training FLOPs) of a
        micro-batch, from the batch alone (no forward)."""

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


@dataclass
class Plan:
    """How the training rows become steps on this worker."""

    rows_per_micro_batch: int
    """Rows this worker reads per micro-batch (micro_batch_size / TP: the TP group gathers them)."""
    accumulation: int
    """Micro-batches per optimizer step."""
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, cfg: JobConfig, num_train_rows: int, world_size: int) -> "Plan":
        tp, dp = cfg.parallel.tensor, cfg.parallel.data
        per_worker = cfg.train.micro_batch_size // tp
        accumulation = cfg.train.global_batch_size // (cfg.train.micro_batch_size * dp)
        steps_per_epoch = num_train_rows // world_size // (per_worker * accumulation)
        if steps_per_epoch == 0:
            raise ValueError(
                f"{num_train_rows} training rows give no full step of global_batch_size={cfg.train.global_batch_size}"
            )
        total = steps_per_epoch * cfg.train.epochs
        return cls(per_worker, accumulation, steps_per_epoch, min(total, cfg.train.max_steps or total))


@dataclass
class Worker:
    """One rank's training state: what `setup` builds and the epoch functions advance."""

    cfg: JobConfig
    task: Task
    plan: Plan
    device: torch.device
    model: torch.nn.Module
    """The bare Megatron module (checkpoints and export use its keys)."""
    ddp: torch.nn.Module
    optimizer: object
    scheduler: object
    wandb_run: object | None
    """Rank 0's W&B run; None on the other ranks."""
    peak_flops: float | None = None
    """This device's peak FLOP/s for MFU (`train.peak_tflops` or the GPU's datasheet); None on CPUs."""
    state: dict = field(default_factory=lambda: {"step": 0, "epoch": 0, "best_val": -math.inf})

    @property
    def rank0(self) -> bool:
        return dist.get_rank() == 0

    @property
    def done(self) -> bool:
        return self.state["epoch"] >= self.cfg.train.epochs or self.state["step"] >= self.plan.total_steps


def setup(config: dict) -> Worker:
    """Megatron groups on Ray's process group, the task's pretrained model wrapped for training, the
    schedule, the last checkpoint restored (Ray hands it back after a restart or a rerun), W&B on rank 0."""
    from raytron.config import TASK_CONFIGS
    from raytron.train.tasks import make_task

    cfg: JobConfig = TASK_CONFIGS[config["job"]["task"]].model_validate(config["job"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    device = init_megatron(cfg.parallel.tensor, cfg.parallel.pipeline, cfg.train.seed)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    task = make_task(cfg)
    model, tconfig = task.build(device, torch.bfloat16 if bf16 else torch.float32)
    plan = Plan.of(cfg, config["num_train_rows"], dist.get_world_size())
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, plan.total_steps)
    wandb_run = None
    if dist.get_rank() == 0:
        from raytron.tracking import start_run

        wandb_run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", cfg.model_dump())
    worker = Worker(cfg, task, plan, device, model, ddp, optimizer, scheduler, wandb_run,
                    peak_flops_per_device(cfg.train.peak_tflops, device))
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            worker.state = checkpoint.load(Path(path), model, optimizer, scheduler)
        log.info("resumed from %s at step %d (epoch %d), lr %.3g", restored.path, worker.state["step"],
                 worker.state["epoch"], optimizer.param_groups[0]["lr"])
        if worker.done:
            log.info("this run is already complete; use run.resume=false or a new run.name to train again")
    log.info(
        "rank %d: %s, TP=%d DP=%d, %d steps/epoch x %d epochs (%d total), micro %d x accumulation %d, %s",
        dist.get_rank(), type(task).__name__, cfg.parallel.tensor, cfg.parallel.data, plan.steps_per_epoch,
        cfg.train.epochs, plan.total_steps, cfg.train.micro_batch_size, plan.accumulation, "bf16" if bf16 else "fp32",
    )
    return worker


def micro_batch_groups(worker: Worker, shard):
    """This epoch's optimizer steps: lists of `accumulation` micro-batches, TP-gathered, in a seeded order."""
    batches = shard.iter_torch_batches(
        batch_size=worker.plan.rows_per_micro_batch, drop_last=True, device=worker.device,
        local_shuffle_buffer_size=1000, local_shuffle_seed=worker.cfg.train.seed + worker.state["epoch"],
    )
    group = []
    for batch in batches:
        group.append(tp_gather({k: batch[k] for k in worker.task.columns}))
        if len(group) == worker.plan.accumulation:
            yield group
            group = []


def train_epoch(worker: Worker, shard) -> None:
    """Steps until the epoch's data or the step budget ends; metrics every `train.log_every` steps."""
    cfg, state = worker.cfg, worker.state
    window = new_window()
    for group in micro_batch_groups(worker, shard):
        result = train_step(worker.ddp, worker.optimizer, worker.scheduler, worker.task, group)
        state["step"] += 1
        for key in ("loss", "tokens", "flops"):  # device tensors: read once per window
            window[key] = window[key] + getattr(result, key)
        window["steps"] += 1
        if state["step"] % cfg.train.log_every == 0 or state["step"] == worker.plan.total_steps:
            log_window(worker, window, result.grad_norm)
            window = new_window()
        if state["step"] >= worker.plan.total_steps:
            break


def new_window() -> dict:
    return {"start": time.perf_counter(), "steps": 0, "loss": 0.0, "tokens": 0.0, "flops": 0.0}


def log_window(worker: Worker, window: dict, grad_norm: float | None) -> None:
    """Report the mean loss, LR, throughput, TFLOP/s and MFU of the steps since the last report (the grad
    norm when the optimizer gave one: a missing norm is left out, not logged as 0)."""
    elapsed = time.perf_counter() - window["start"]
    step = worker.state["step"]
    flops_per_device = float(window["flops"]) / elapsed / dist.get_world_size()  # steps' FLOPs are global
    metrics = {
        "train/loss": float(window["loss"]) / window["steps"],
        "train/lr": worker.optimizer.param_groups[0]["lr"],
        **({} if grad_norm is None else {"train/grad_norm": grad_norm}),
        "train/tokens_per_s": float(window["tokens"]) / elapsed,
        "train/step_time_ms": 1000 * elapsed / window["steps"],
        "train/tflops_per_device": flops_per_device / 1e12,
        **({} if worker.peak_flops is None else {"train/mfu": flops_per_device / worker.peak_flops}),
        "step": step,
        "epoch": step / worker.plan.steps_per_epoch,
    }
    if worker.rank0:
        log.info("epoch %d step %d/%d loss %.4f lr %.2e %.0f tok/s %.1f ms/step %.1f TFLOP/s%s",
                 worker.state["epoch"] + 1, step, worker.plan.total_steps, metrics["train/loss"], metrics["train/lr"],
                 metrics["train/tokens_per_s"], metrics["train/step_time_ms"], metrics["train/tflops_per_device"],
                 f" MFU {metrics['train/mfu']:.1%}" if "train/mfu" in metrics else "")
        record_metrics(worker.wandb_run, worker.cfg.run_dir, metrics)
    ray.train.report(metrics)


def end_epoch(worker: Worker, val_shard) -> None:
    """Validate, export the model when the selection metric improved, then checkpoint."""
    state, task = worker.state, worker.task
    state["epoch"] += 1
    val = validate(task, worker.ddp, val_shard, worker.plan.rows_per_micro_batch, worker.device)
    improved = val[task.selection] > state["best_val"]
    if improved:
        state["best_val"] = val[task.selection]
        task.export(worker.model, {**{f"val_{k}": v for k, v in val.items()}, "step": state["step"], "epoch": state["epoch"]})
    val_metrics = {**{f"val/{k}": v for k, v in val.items()}, "step": state["step"]}
    if worker.rank0:
        log.info("epoch %d: validation %s%s", state["epoch"], ", ".join(f"{k} {v:.4f}" for k, v in val.items()),
                 " (best so far: model exported)" if improved else "")
        record_metrics(worker.wandb_run, worker.cfg.run_dir, val_metrics)
    save_checkpoint(worker, {**val_metrics, "epoch": state["epoch"]})


def save_checkpoint(worker: Worker, metrics: dict) -> None:
    """Every rank writes its dist_checkpointing shards to a staging folder; rank 0 reports it to Ray Train."""
    staging = worker.cfg.run_dir / "checkpoint-staging" / f"step-{worker.state['step']:07d}"
    checkpoint.save(staging, worker.model, worker.optimizer, worker.scheduler, worker.state)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging) if worker.rank0 else None)
    dist.barrier()
    if worker.rank0:  # Ray copied it into the run's storage
        shutil.rmtree(staging, ignore_errors=True)


def train_worker(config: dict) -> None:
    """`train_loop_per_worker` for Ray Train: fine-tune, validate each epoch, checkpoint, export the best."""
    worker = setup(config)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    worker.ddp.train()
    while not worker.done:
        train_epoch(worker, train_shard)
        end_epoch(worker, val_shard)
    if worker.wandb_run is not None:
        from raytron.tracking import log_model

        worker.wandb_run.summary[f"best_val_{worker.task.selection}"] = worker.state["best_val"]
        log_model(worker.wandb_run, worker.cfg)  # the exported best model, with the corpus as its input
        worker.wandb_run.finish()
    if not math.isfinite(worker.state["best_val"]):
        raise RuntimeError(f"validation {worker.task.selection} is not finite")
