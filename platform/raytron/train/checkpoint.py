"""Training checkpoints: every rank's megatron.core.dist_checkpointing shards, RNG states and manifest.

Each rank writes into its own node-local folder and reports it to Ray Train, which merges the folders of
one report into one checkpoint in the run's storage (Ray Train's documented multi-worker checkpointing):
no rank needs a disk another node sees. What one checkpoint holds:

    __<rank>_*.distcp, .metadata, common.pt, metadata.json   model + optimizer (dist_checkpointing)
    rng-rank<r>.pt            rank r's RNG states: python, numpy, torch, CUDA, Megatron's RNG tracker
    trainer_state.json        step, epoch, best validation, W&B run id, the LR schedule, what a resume must keep
                              (run_identity: the data position, the rows and their tokens, the optimizer layout)
    metrics.jsonl             the run's metrics up to this step (restored with it: no step logged twice)
    manifest-rank<r>.json     sha256 and size of every file rank r wrote, written last by that rank

Verification (before any worker starts) reads the manifests through pyarrow.fs, on disk or S3 alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, tensor_parallel
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

from raytron.config import JobConfig
from raytron.errors import RaytronError
from raytron.storage import copy_stream, reaching, read_remote, shown
from raytron.train.optimizer_step import megatron_optimizers

log = logging.getLogger("raytron.checkpoint")
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.jsonl"
ADVICE = ("Delete that checkpoint folder to resume from the previous one (rerun the same command), or start over with "
          "run.resume=false.")


DATA_SETTINGS = ("dataset", "seed", "max_length", "head_tokens", "max_summary_tokens")
"""The `data.*` settings that decide which rows a run has and what their tokens are (those its task's data section
has)."""
PRETRAINED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                    "special_tokens_map.json")
"""What names a pretrained model by content: its architecture and its tokenizer."""


def pretrained_digest(folder: str) -> str:
    """The pretrained model by content (`model.pretrained` is pinned to a folder that differs between machines)."""
    digest = hashlib.sha256()
    for name in PRETRAINED_FILES:
        if (path := Path(folder) / name).is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def run_identity(cfg: JobConfig, num_train_rows: int) -> dict:
    """What a resumed run must share with its checkpoint: what the data position means (batch size, rows, seed,
    bucketing), which rows there are and what their tokens are (the data settings, the pretrained model's config
    and tokenizer), and the optimizer state's layout (a distributed optimizer's shards reshard across DP only, so
    its TP x PP stays)."""
    data = cfg.data.model_dump()
    layout = {"train.distributed_optimizer": cfg.train.distributed_optimizer}
    if cfg.train.distributed_optimizer:
        layout |= {"parallel.tensor": cfg.parallel.tensor, "parallel.pipeline": cfg.parallel.pipeline}
    return {"global_batch_size": cfg.train.global_batch_size, "train_rows": num_train_rows, "seed": cfg.train.seed,
            "bucket_by_length": cfg.train.bucket_by_length, "model.pretrained": pretrained_digest(cfg.model.pretrained),
            **{f"data.{key}": data[key] for key in DATA_SETTINGS if key in data}, **layout}


def manifest_name(rank: int) -> str:
    return f"manifest-rank{rank:05d}.json"


def rng_name(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"


def rng_states() -> dict:
    return {
        "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(states["tracker"])


def _file_digest(path: Path) -> dict:
    with open(path, "rb") as source:
        return {"sha256": hashlib.file_digest(source, "sha256").hexdigest(), "size": path.stat().st_size}


# The distributed optimizer's state as one shard per rank's buffers: saved and loaded without communication, resumable
# on another DP size (Megatron-Core 0.16's default, 'fully_sharded_model_space', is deprecated and fails to save:
# "ShardedTensor.flattened_range is not supported"; 'fully_reshardable' gathers through CUDA tensors only). The plain
# optimizer ignores it; its checkpoints reshard across TP and DP.
OPTIMIZER_LAYOUT = {"distrib_optim_sharding_type": "dp_reshardable"}


def save(folder: Path, model, optimizer, scheduler, state: dict, metrics_file: Path) -> None:
    """This rank's part of a checkpoint into `folder`, its own node-local staging folder. `model` is the bare
    Megatron module (no DDP/Float16Module wrapper, whose keys differ)."""
    rank = dist.get_rank()
    shutil.rmtree(folder, ignore_errors=True)  # a crashed earlier save may have left files behind
    folder.mkdir(parents=True)
    model_sd = model.sharded_state_dict()
    optimizer_sd = optimizer.sharded_state_dict(model_sd, metadata=OPTIMIZER_LAYOUT)
    dist_checkpointing.save({"model": model_sd, "optimizer": optimizer_sd}, str(folder))
    torch.save(rng_states(), folder / rng_name(rank))
    if rank == 0:
        trainer = {**state, "scheduler": scheduler.state_dict(), "world_size": dist.get_world_size()}
        (folder / TRAINER_STATE).write_text(json.dumps(trainer))
        if metrics_file.is_file():
            shutil.copyfile(metrics_file, folder / METRICS)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {p.relative_to(folder).as_posix(): _file_digest(p) for p in files}
    (folder / manifest_name(rank)).write_text(json.dumps(manifest, indent=1))


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with read_remote(fs, path) as source:
        return source.read()


def read_trainer_state(fs: pafs.FileSystem, path: str) -> dict:
    return json.loads(_read(fs, f"{path}/{TRAINER_STATE}"))


def verify(fs: pafs.FileSystem, path: str, shown_as: str) -> dict:
    """Raise a RaytronError naming the problem if the checkpoint is incomplete or corrupt; else its trainer state."""
    with reaching(shown_as, "checkpoint"):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        actual = {i.path[len(path) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}
        if manifest_name(0) not in actual or TRAINER_STATE not in actual:
            raise RaytronError(f"checkpoint {shown(shown_as)} is incomplete (rank 0's manifest or {TRAINER_STATE} is "
                               f"missing: the save was interrupted). {ADVICE}")
        state = read_trainer_state(fs, path)
        world = state["world_size"]
        missing = [r for r in range(world) if manifest_name(r) not in actual]
        if missing:
            raise RaytronError(f"checkpoint {shown(shown_as)} is incomplete: ranks {missing} of {world} never finished "
                               f"their part. {ADVICE}")
        expected = {}
        for rank in range(world):
            expected.update(json.loads(_read(fs, f"{path}/{manifest_name(rank)}")))
        changed = sorted(name for name in expected.keys() | (actual.keys() - {manifest_name(r) for r in range(world)})
                         if name not in actual or name not in expected or actual[name] != expected[name]["size"]
                         or _remote_digest(fs, f"{path}/{name}") != expected[name]["sha256"])
    if changed:
        raise RaytronError(f"checkpoint {shown(shown_as)} is corrupt: {', '.join(changed)} differ from its manifests. "
                           f"{ADVICE}")
    return state


def _remote_digest(fs: pafs.FileSystem, path: str) -> str:
    with read_remote(fs, path) as source:
        return copy_stream(source)[0]


def distributed_parts(optimizer) -> list[DistributedOptimizer]:
    parts = megatron_optimizers(optimizer)
    return [part for part in parts if isinstance(part, DistributedOptimizer)]


def load(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG states from a local copy of a checkpoint; return
    the trainer state (step, epoch, data position, W&B run id, ...) with the checkpoint's `metrics.jsonl` text."""
    try:
        state = json.loads((folder / TRAINER_STATE).read_text())
        model_sd = model.sharded_state_dict()
        for part in distributed_parts(optimizer):
            if not part.optimizer.state:
                # Megatron-Core 0.16's state_dict (without TE/Apex) needs Adam's states to exist; the load overwrites
                # these dummies (the same method Megatron calls before loading its FSDP layout), except Adam's step
                part._init_optimizer_states_with_dummy_values()
        loaded = dist_checkpointing.load(
            {"model": model_sd,
             "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=OPTIMIZER_LAYOUT)},
            str(folder),
        )
    except Exception as error:  # noqa: BLE001 - any read failure means the same to the user
        first_line = (str(error).splitlines() or ["no message"])[0]
        raise RaytronError(
            f"checkpoint {folder} could not be read ({type(error).__name__}: {first_line}). {ADVICE}"
        ) from None  # Ray reports a chained worker error by its cause: keep ours on top
    model.load_state_dict(loaded["model"])
    with torch.no_grad():  # the distributed optimizer copies into fp32 main params that are views of leaves
        optimizer.load_state_dict(loaded["optimizer"])
    for part in distributed_parts(optimizer):
        # ... whose torch Adam keeps the dummies' step count (1): Adam steps once per training step (bf16/fp32 skip
        # none), so its bias correction resumes at the trainer's step (tests/test_megatron_cpu.py)
        for adam_state in part.optimizer.state.values():
            adam_state["step"] = torch.tensor(float(state["step"]))
    scheduler.load_state_dict(state["scheduler"])
    rng = folder / rng_name(dist.get_rank())
    if state["world_size"] == dist.get_world_size():
        set_rng_states(torch.load(rng, weights_only=False))
    else:
        log.warning("checkpoint written by %d ranks, resumed on %d: model and optimizer resharded, RNG streams "
                    "started afresh (dropout masks differ from an uninterrupted run)", state["world_size"],
                    dist.get_world_size())
    metrics = folder / METRICS
    state["metrics"] = metrics.read_text() if metrics.is_file() else ""
    return state
