"""The one Ray Train worker loop every task runs on Megatron-Core (sentiment, summarization, topics encoder).

Each Ray Train worker is one Megatron-Core rank. Every rank holds the encoded splits and takes its
data-parallel slice of each step's seeded global batch (`raytron.train.sampler`); the ranks of one
tensor-parallel group take the same rows. Gradient accumulation, grad sync and the optimizer step are
`raytron.train.step.train_step`. The worker reads top-down: `setup` (groups, model, rows, schedule,
`restore`), then per epoch `train_epoch` (checkpoints every `train.checkpoint_every` steps) and
`end_epoch` (validate, export the best, checkpoint). A checkpoint holds every rank's state and the data
position, so a restarted run trains on exactly the batches an uninterrupted one would. What differs per
task (model, loss, validation metrics, export) is a `Task` (`raytron.train.tasks`).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ray.train
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from raytron.config import JobConfig
from raytron.runtime import init_megatron, use_deterministic_kernels
from raytron.storage import filesystem, join, push
from raytron.store import META
from raytron.train import checkpoint
from raytron.train.compile import compile_layers
from raytron.train.cuda_graphs import GraphedTraining
from raytron.train.flops import peak_flops_per_device
from raytron.train.optim import wrap_for_training
from raytron.train.sampler import (
    Rows,
    StepSampler,
    bucket_widths,
    load_rows,
    row_lengths,
    to_device,
    validation_batches,
)
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

    def lengths(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Real tokens of each row (its token columns are right-padded after them), for length bucketing."""

    def check_rows(self, rows: Rows, split: str) -> None:
        """Raise a RaytronError naming the first row of `split` this task cannot train on (once, on the host: the
        step itself never reads anything back)."""

    def measure(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Device tensors `items` (loss items), `tokens` (real tokens), `positions` (token positions computed,
        padding included) and `flops` (model training FLOPs) of a micro-batch, from the batch alone (no forward)."""

    def validation_sums(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float64 sums over a validation micro-batch (added over batches and DP ranks)."""

    def validation_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Metrics from the summed `validation_sums`, `selection` among them."""

    def export(self, model, metrics: dict) -> None:
        """Write the run's model folder from the bare module (every TP rank calls; rank 0 writes)."""


def validate(worker: "Worker") -> dict[str, float]:
    """The task's validation metrics over the whole validation split (each DP rank scores its share: at least one row,
    launcher.check_split_sizes)."""
    worker.ddp.eval()
    dp_group = parallel_state.get_data_parallel_group()
    num_rows = len(next(iter(worker.val_rows.values())))
    lengths = row_lengths(worker.task, worker.val_rows) if worker.cfg.train.bucket_by_length else None
    totals = None
    with torch.no_grad():
        for index in validation_batches(num_rows, worker.cfg.train.micro_batch_size,
                                        dist.get_rank(dp_group), dist.get_world_size(dp_group), lengths):
            sums = worker.task.validation_sums(worker.ddp, to_device(worker.val_rows, index, worker.device, lengths))
            totals = sums if totals is None else totals + sums
    dist.all_reduce(totals, group=dp_group)
    worker.ddp.train()
    return worker.task.validation_metrics(totals)


def record_metrics(wandb_run, run_dir: Path, metrics: dict) -> None:
    """Log to W&B at `metrics["step"]` and append one JSON line to `<run>/metrics.jsonl` (readable without W&B)."""
    wandb_run.log(metrics, step=metrics["step"])
    with open(run_dir / "metrics.jsonl", "a") as out:
        out.write(json.dumps(metrics) + "\n")


@dataclass
class Plan:
    """How the training rows become steps."""

    accumulation: int
    """Micro-batches per optimizer step on each data-parallel rank."""
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, cfg: JobConfig, num_train_rows: int) -> "Plan":
        accumulation = cfg.train.global_batch_size // (cfg.train.micro_batch_size * cfg.parallel.data)
        steps_per_epoch = num_train_rows // cfg.train.global_batch_size  # >= 1: launcher.check_split_sizes
        total = steps_per_epoch * cfg.train.epochs
        return cls(accumulation, steps_per_epoch, min(total, cfg.train.max_steps or total))

    def position(self, step: int) -> tuple[int, int]:
        """The data position after `step` optimizer steps: (epochs completed, steps done in the next one)."""
        return divmod(step, self.steps_per_epoch)


@dataclass
class Worker:
    """One rank's training state: what `setup` builds and the epoch functions advance."""

    cfg: JobConfig
    task: Task
    plan: Plan
    sampler: StepSampler
    train_rows: Rows
    val_rows: Rows
    device: torch.device
    model: torch.nn.Module
    """The bare Megatron module (checkpoints and export use its keys)."""
    ddp: torch.nn.Module
    forward: Callable[..., torch.Tensor]
    """What the training loss calls as the model: `ddp`, or its CUDA-graphed replay (`train.cuda_graphs`)."""
    optimizer: object
    scheduler: object
    peak_flops: float | None = None
    """This device's peak FLOP/s for MFU (`train.peak_tflops` or the GPU's datasheet); None on CPUs."""
    wandb_run: object | None = None
    """Rank 0's W&B run; None on the other ranks."""
    state: dict = field(default_factory=dict)
    """What a checkpoint restores: step, epoch (completed), best_val, wandb_run_id, and what a resume must keep
    (`checkpoint.run_identity`: the data position, the rows and their tokens, the optimizer layout)."""

    @property
    def rank0(self) -> bool:
        return dist.get_rank() == 0

    @property
    def done(self) -> bool:
        return self.state["step"] >= self.plan.total_steps  # the epochs' steps, or max_steps if fewer


def setup(config: dict) -> Worker:
    """Megatron groups on Ray's process group, the task's pretrained model wrapped for training, the splits'
    rows, the schedule, the last checkpoint restored (Ray hands it back after a restart or a rerun), W&B on rank 0."""
    from raytron.config import TASK_CONFIGS
    from raytron.train.tasks import make_task

    cfg: JobConfig = TASK_CONFIGS[config["job"]["task"]].model_validate(config["job"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    device = init_megatron(cfg.parallel.tensor, cfg.parallel.pipeline, cfg.train.seed)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    task = make_task(cfg)
    model, tconfig = task.build(device, torch.bfloat16 if bf16 else torch.float32)
    if cfg.train.compile:
        # static: a graph per width (one, unbucketed) in training and in evaluation, at two micro-batch sizes (the
        # recipe's, and validation's last)
        widths = bucket_widths(cfg.data.max_length) if cfg.train.bucket_by_length else 1
        compile_layers(model, device, static_shapes=4 * widths if cfg.train.compile_static_shapes else None)
    train_rows = load_rows(ray.train.get_dataset_shard("train"), task.columns)
    val_rows = load_rows(ray.train.get_dataset_shard("val"), task.columns)
    task.check_rows(train_rows, "train")
    task.check_rows(val_rows, "val")
    num_rows = len(next(iter(train_rows.values())))
    plan = Plan.of(cfg, num_rows)
    dp_group = parallel_state.get_data_parallel_group()
    sampler = StepSampler(num_rows, cfg.train.global_batch_size, cfg.train.micro_batch_size,
                          dist.get_rank(dp_group), dist.get_world_size(dp_group), cfg.train.seed,
                          row_lengths(task, train_rows) if cfg.train.bucket_by_length else None)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, plan.total_steps)
    forward = GraphedTraining(ddp) if cfg.train.cuda_graphs else ddp
    worker = Worker(cfg, task, plan, sampler, train_rows, val_rows, device, model, ddp, forward, optimizer, scheduler,
                    peak_flops_per_device(cfg.train.peak_tflops, device))
    worker.state = {"step": 0, "epoch": 0, "best_val": -math.inf, "wandb_run_id": None,
                    **checkpoint.run_identity(cfg, num_rows)}
    restored_metrics = restore(worker, config["resume_from"])
    if worker.rank0:
        from raytron.tracking import log_missing_history, start_run

        worker.wandb_run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", cfg.model_dump(),
                                     run_id=worker.state["wandb_run_id"])
        worker.state["wandb_run_id"] = worker.wandb_run.id
        if restored_metrics and (logged := log_missing_history(worker.wandb_run, cfg.run_dir, restored_metrics)):
            log.info("W&B: logged again the %d restored metrics rows that no earlier attempt's offline run holds",
                     logged)
    log.info(
        "rank %d: %s, TP=%d DP=%d, %d steps/epoch x %d epochs (%d total), micro %d x accumulation %d, %s",
        dist.get_rank(), type(task).__name__, cfg.parallel.tensor, cfg.parallel.data, plan.steps_per_epoch,
        cfg.train.epochs, plan.total_steps, cfg.train.micro_batch_size, plan.accumulation, "bf16" if bf16 else "fp32",
    )
    return worker


SCHEDULE_KEYS = ("max_lr", "min_lr", "lr_warmup_steps", "lr_decay_steps", "lr_decay_style")


def restore(worker: Worker, resume_from: str | None) -> list[dict]:
    """Continue from the newest checkpoint of this job (after a restart), else from `resume_from` (the launcher's
    pick from an earlier job), if any: weights, optimizer, RNG, data position and the run's metrics up to it.
    The LR schedule is the current config's at the checkpoint's step (changes logged). Returns the metrics rows
    restored (none for a fresh run)."""
    restored = ray.train.get_checkpoint()
    if restored is None and resume_from is not None:
        fs, path = filesystem(resume_from)
        restored = ray.train.Checkpoint(path, filesystem=fs)
    metrics_file = worker.cfg.run_dir / "metrics.jsonl"
    if restored is None:
        if worker.rank0:  # a fresh run (or a retry before the first checkpoint) starts a fresh metrics file
            metrics_file.parent.mkdir(parents=True, exist_ok=True)
            metrics_file.write_text("")
        return []
    with restored.as_directory() as path:
        state = checkpoint.load(Path(path), worker.model, worker.optimizer, worker.scheduler)
    saved_schedule, metrics = state.pop("scheduler"), state.pop("metrics")
    worker.state.update({k: v for k, v in state.items() if k != "world_size"})
    if worker.rank0:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(metrics)
        changed = {k: (saved_schedule[k], getattr(worker.scheduler, k)) for k in SCHEDULE_KEYS
                   if saved_schedule[k] != getattr(worker.scheduler, k)}
        epoch, done_in_epoch = worker.plan.position(worker.state["step"])
        log.info("resumed at step %d (epoch %d, %d of its steps done) from %s; LR %.4g at this step%s",
                 worker.state["step"], epoch + 1, done_in_epoch, restored.path,
                 worker.optimizer.param_groups[0]["lr"],
                 "; the schedule follows the current config: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
                 if changed else "")
    if worker.done:
        log.info("this run is already complete; use run.resume=false or a new run.name to train again")
    return [json.loads(line) for line in metrics.splitlines() if line.strip()]


def micro_batch_groups(worker: Worker):
    """The rest of this epoch's optimizer steps from the data position (the steps done: a run that `max_steps`
    stopped mid-epoch goes on inside that epoch): lists of `accumulation` micro-batches."""
    epoch, first = worker.plan.position(worker.state["step"])
    for step_in_epoch in range(first, worker.plan.steps_per_epoch):
        yield [to_device(worker.train_rows, index, worker.device, worker.sampler.lengths)
               for index in worker.sampler.micro_batches(epoch, step_in_epoch)]


def train_epoch(worker: Worker) -> None:
    """Steps until the epoch's data or the step budget ends; metrics every `train.log_every` steps and for the
    epoch's last steps, a checkpoint every `train.checkpoint_every` steps (the epoch's last step is checkpointed by
    `end_epoch`). Each window times its steps only: validation and checkpoints lie outside it."""
    cfg, state, plan = worker.cfg, worker.state, worker.plan
    window = new_window()
    for group in micro_batch_groups(worker):
        result = train_step(worker.ddp, worker.optimizer, worker.scheduler, worker.task, group, worker.forward)
        state["step"] += 1
        for key in ("loss", "tokens", "positions", "flops"):  # device tensors: read once per window
            window[key] = window[key] + getattr(result, key)
        window["steps"] += 1
        if state["step"] % cfg.train.log_every == 0 or state["step"] == plan.total_steps:
            window = new_window(start=log_window(worker, window, result.grad_norm))
        if state["step"] >= plan.total_steps:
            break
        epoch_end = plan.position(state["step"])[1] == 0
        if cfg.train.checkpoint_every and state["step"] % cfg.train.checkpoint_every == 0 and not epoch_end:
            paused = steps_finished(worker)
            save_checkpoint(worker, {"step": state["step"]})
            window["start"] += time.perf_counter() - paused
    if window["steps"]:  # the epoch's last steps, fewer than log_every
        log_window(worker, window, result.grad_norm)


def steps_finished(worker: Worker) -> float:
    """The time once the GPU has finished the steps queued so far (so that a pause after it times the pause only)."""
    if worker.device.type == "cuda":
        torch.cuda.synchronize(worker.device)
    return time.perf_counter()


def new_window(start: float | None = None) -> dict:
    return {"start": time.perf_counter() if start is None else start, "steps": 0, "loss": 0.0, "tokens": 0.0,
            "positions": 0.0, "flops": 0.0}


def log_window(worker: Worker, window: dict, grad_norm: torch.Tensor | None) -> float:
    """Log the mean loss, LR, throughput, TFLOP/s and MFU of the steps since the last log (to the log, W&B and
    metrics.jsonl), and on a GPU the peak memory this rank allocated so far (the grad norm when the optimizer gave
    one: a missing norm is left out, not logged as 0). Returns when the window ended: the next one starts there,
    so the time spent logging counts against the steps after it.

    The step queues its GPU work without waiting for it: the window's totals are read first (which waits for the
    GPU to finish its steps), then the clock. Not reported to Ray Train: a report is a barrier over the workers, and
    Ray Train 2.60's controller takes one report per worker each `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (2 s then), so
    reporting every window stalled fast steps (docs/gpu-fast-path.md). Train gets the epoch-end and checkpoint
    reports."""
    values = [window[key] for key in ("loss", "tokens", "positions", "flops")] + ([] if grad_norm is None else [grad_norm])
    loss, tokens, positions, flops, *norm = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]).tolist()
    end = time.perf_counter()
    elapsed = end - window["start"]
    step = worker.state["step"]
    flops_per_device = flops / elapsed / dist.get_world_size()  # steps' FLOPs are global
    metrics = {
        "train/loss": loss / window["steps"],
        "train/lr": worker.optimizer.param_groups[0]["lr"],
        **({"train/grad_norm": norm[0]} if norm else {}),
        "train/tokens_per_s": tokens / elapsed,
        "train/real_token_fraction": tokens / positions,
        "train/step_time_ms": 1000 * elapsed / window["steps"],
        "train/tflops_per_device": flops_per_device / 1e12,
        **({} if worker.peak_flops is None else {"train/mfu": flops_per_device / worker.peak_flops}),
        **({} if worker.device.type != "cuda" else
           {"train/peak_memory_gib": torch.cuda.max_memory_allocated(worker.device) / 2**30}),
        "step": step,
        "epoch": step / worker.plan.steps_per_epoch,
    }
    if worker.rank0:
        log.info("epoch %d step %d/%d loss %.4f lr %.2e %.0f tok/s (%.0f%% of positions real) %.1f ms/step "
                 "%.1f TFLOP/s%s%s", worker.state["epoch"] + 1, step, worker.plan.total_steps, metrics["train/loss"],
                 metrics["train/lr"], metrics["train/tokens_per_s"], 100 * metrics["train/real_token_fraction"],
                 metrics["train/step_time_ms"], metrics["train/tflops_per_device"],
                 f" MFU {metrics['train/mfu']:.1%}" if "train/mfu" in metrics else "",
                 f" peak {metrics['train/peak_memory_gib']:.2f} GiB" if "train/peak_memory_gib" in metrics else "")
        record_metrics(worker.wandb_run, worker.cfg.run_dir, metrics)
    return end


def end_epoch(worker: Worker) -> None:
    """Validate, export the model when the selection metric improved, then checkpoint."""
    state, task = worker.state, worker.task
    state["epoch"] = worker.plan.position(state["step"])[0]  # completed epochs (a max_steps stop: not this one)
    val = validate(worker)
    improved = val[task.selection] > state["best_val"]
    if improved:
        state["best_val"] = val[task.selection]
        task.export(worker.model, {**{f"val_{k}": v for k, v in val.items()}, "step": state["step"], "epoch": state["epoch"]})
        if worker.rank0:  # to the run's storage, raytron.json last (a no-op when the run is a local folder)
            push(worker.cfg.run_dir / "model", join(worker.cfg.run_uri, "model"), last=META)
    val_metrics = {**{f"val/{k}": v for k, v in val.items()}, "step": state["step"]}
    if worker.rank0:
        log.info("epoch %g: validation %s%s", round(state["step"] / worker.plan.steps_per_epoch, 2),
                 ", ".join(f"{k} {v:.4f}" for k, v in val.items()), " (best so far: model exported)" if improved else "")
        record_metrics(worker.wandb_run, worker.cfg.run_dir, val_metrics)
    save_checkpoint(worker, {**val_metrics, "epoch": state["epoch"]})


REGISTRATION_TIMEOUT_S = 60.0
"""How long a checkpoint waits for Ray Train to register it (typically up to the controller's poll interval,
raytron.runtime.REPORT_POLL_S). The controller keeps this time, so a controller whose event loop stalls holds the
worker longer; such a controller cannot drive the run on anyway."""


def save_checkpoint(worker: Worker, metrics: dict) -> None:
    """Every rank writes its part into a node-local folder and reports it; Ray Train merges the parts into
    `checkpoint_step-<step>` in the run's storage (and deletes the local folders). Training goes on once Ray Train
    has registered it: the controller takes a report in only when it next polls the workers
    (raytron.runtime.REPORT_POLL_S), and a worker killed before that resumed from the checkpoint before (a kill 0.3 s
    after a report cost 15 steps on the GPU: docs/gpu-fast-path.md, twelfth session), where a kill may cost only the
    steps since the last checkpoint."""
    step = worker.state["step"]
    name = f"checkpoint_step-{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f"raytron-step{step}-rank{dist.get_rank()}-"))
    metrics_file = worker.cfg.run_dir / "metrics.jsonl"
    checkpoint.save(staging, worker.model, worker.optimizer, worker.scheduler, worker.state, metrics_file)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging),
                     checkpoint_dir_name=name, delete_local_checkpoint_after_upload=True)
    start = time.perf_counter()
    registered = ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=REGISTRATION_TIMEOUT_S)
    if not any(reported.checkpoint.path.rstrip("/").endswith(name) for reported in registered):
        log.warning("rank %d: Ray Train has not registered %s after %.1f s; training goes on, and a restart before it "
                    "does resumes from the checkpoint before", dist.get_rank(), name, time.perf_counter() - start)
    if worker.rank0:
        push_metrics(worker)
        log.info("step %d: checkpoint saved", step)


def push_metrics(worker: Worker) -> None:
    """The run's metrics.jsonl to its storage (a no-op when the run is a local folder)."""
    push(worker.cfg.run_dir, worker.cfg.run_uri, only=("metrics.jsonl",))


def train_worker(config: dict) -> None:
    """`train_loop_per_worker` for Ray Train: fine-tune, validate each epoch, checkpoint, export the best."""
    worker = setup(config)
    worker.ddp.train()
    while not worker.done:
        train_epoch(worker)
        end_epoch(worker)
    if worker.wandb_run is not None:
        from raytron.tracking import finish_run, log_model

        worker.wandb_run.summary[f"best_val_{worker.task.selection}"] = worker.state["best_val"]
        log_model(worker.wandb_run, worker.cfg)  # the exported best model, with the corpus as its input
        finish_run(worker.wandb_run)
        push_metrics(worker)
    if not math.isfinite(worker.state["best_val"]):
        raise RuntimeError(f"validation {worker.task.selection} is not finite")
