"""The Ray Train worker loop for sequence classification (IMDb sentiment) on Megatron-Core.

Each Ray Train worker is one Megatron-Core rank. Ray shards the streamed dataset over all workers;
the ranks of one tensor-parallel group all-gather their micro-batches so they run the same rows
(Megatron-LM broadcasts within the TP group for the same reason). Gradient accumulation, grad
sync and the optimizer step follow Megatron's `forward_backward_no_pipelining` + `train_step`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state

from raytron.config import SentimentConfig, resolve_pretrained
from raytron.data.imdb import LABELS
from raytron.models.classifier import classifier_from_hf
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.store import write_classifier
from raytron.train import checkpoint
from raytron.train.distributed import init_megatron
from raytron.train.optim import wrap_for_training

log = logging.getLogger("raytron.train")
TRAIN_COLUMNS = ["input_ids", "attention_mask", "label", "log_length", "vader_compound"]


def build_classifier(cfg: SentimentConfig, device: torch.device, bf16: bool):
    """The pretrained encoder (HF -> Megatron-Core) with a fresh head, on `device`."""
    pretrained = resolve_pretrained(cfg.model.pretrained)
    model, tconfig, hf_config = classifier_from_hf(
        pretrained, len(cfg.model.features), len(LABELS), cfg.model.head_dropout,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
    )
    return model.to(device), tconfig, hf_config, pretrained


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


def model_inputs(batch: dict[str, torch.Tensor], features: list[str]):
    feats = torch.stack([batch[name].float() for name in features], dim=-1)
    return batch["input_ids"].long(), batch["attention_mask"].long(), feats


def evaluate_split(ddp, shard, per_worker: int, features: list[str], device) -> dict[str, float]:
    """Loss and accuracy over a sharded split, summed over the data-parallel ranks."""
    ddp.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, rows
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=per_worker, device=device):
            batch = tp_gather({k: batch[k] for k in TRAIN_COLUMNS})
            logits = ddp(*model_inputs(batch, features)).float()
            totals += torch.stack([
                F.cross_entropy(logits, batch["label"], reduction="sum").double(),
                (logits.argmax(-1) == batch["label"]).sum().double(),
                torch.tensor(float(len(logits)), dtype=torch.float64, device=device),
            ])
    dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    ddp.train()
    return {"loss": (totals[0] / totals[2]).item(), "accuracy": (totals[1] / totals[2]).item()}


def record_metrics(wandb_run, run_dir: Path, metrics: dict) -> None:
    """Log to W&B at `metrics["step"]` and append one JSON line to `<run>/metrics.jsonl` (readable without W&B)."""
    wandb_run.log(metrics, step=metrics["step"])
    with open(run_dir / "metrics.jsonl", "a") as out:
        out.write(json.dumps(metrics) + "\n")


def export_model(cfg: SentimentConfig, model, hf_config, pretrained, metrics: dict) -> None:
    """Write the current weights as the run's model folder (all TP ranks gather, rank 0 writes)."""
    bert_full = {name: tensor.float() for name, tensor in gather_full_state_dict(model.bert).items()}
    if dist.get_rank() == 0:
        meta = {
            "task": "sentiment",
            "labels": list(LABELS),
            "features": cfg.model.features,
            "max_length": cfg.data.max_length,
            "head_tokens": cfg.data.head_tokens,
            "hidden_size": hf_config["hidden_size"],
            "pretrained": str(pretrained),
            "metrics": metrics,
            "config": cfg.model_dump(),
        }
        head = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
        write_classifier(cfg.run_dir / "model", hf_config, pretrained, bert_full, head, meta)
    dist.barrier()


def train_worker(config: dict) -> None:
    """`train_loop_per_worker` for Ray Train: fine-tune, validate each epoch, checkpoint, export the best."""
    cfg = SentimentConfig.model_validate(config["job"])
    num_train_rows: int = config["num_train_rows"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    device = init_megatron(cfg.parallel.tensor, cfg.parallel.pipeline, cfg.train.seed)
    rank = dist.get_rank()
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    model, tconfig, hf_config, pretrained = build_classifier(cfg, device, bf16)

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

    state = {"step": 0, "epoch": 0, "best_val_accuracy": -1.0}
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
        "rank %d: TP=%d DP=%d, %d steps/epoch x %d epochs (%d total), micro %d x accumulation %d, %s",
        rank, tp, dp, steps_per_epoch, cfg.train.epochs, total_steps, cfg.train.micro_batch_size,
        accumulation, "bf16" if bf16 else "fp32",
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
            micro.append(tp_gather({k: batch[k] for k in TRAIN_COLUMNS}))
            if len(micro) < accumulation:
                continue
            optimizer.zero_grad()
            ddp.zero_grad_buffer()
            step_loss = 0.0
            for index, mb in enumerate(micro):
                sync = ddp.no_sync() if index < len(micro) - 1 else contextlib.nullcontext()
                with sync:
                    logits = ddp(*model_inputs(mb, cfg.model.features)).float()
                    loss = F.cross_entropy(logits, mb["label"]) / len(micro)
                    loss.backward()
                step_loss += loss.item()
                window_tokens += int(mb["attention_mask"].sum())
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
        val = evaluate_split(ddp, val_shard, per_worker, cfg.model.features, device)
        improved = val["accuracy"] > state["best_val_accuracy"]
        if improved:
            state["best_val_accuracy"] = val["accuracy"]
            export_model(cfg, model, hf_config, pretrained, {"val_accuracy": val["accuracy"], "val_loss": val["loss"],
                                                             "step": state["step"], "epoch": state["epoch"]})
        val_metrics = {"val/loss": val["loss"], "val/accuracy": val["accuracy"], "step": state["step"]}
        if rank == 0:
            log.info("epoch %d: val loss %.4f accuracy %.4f%s", state["epoch"], val["loss"], val["accuracy"],
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
        wandb_run.summary["best_val_accuracy"] = state["best_val_accuracy"]
        wandb_run.finish()
    if not math.isfinite(state["best_val_accuracy"]):
        raise RuntimeError("validation accuracy is not finite")
