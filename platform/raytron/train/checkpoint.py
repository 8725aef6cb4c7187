"""Training checkpoints with megatron.core.dist_checkpointing (model + optimizer shards + trainer state)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing

from raytron.errors import RaytronError

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
"""sha256 of every file, written last: a checkpoint without it is incomplete, one that differs is corrupt."""


def _digests(path: Path) -> dict[str, str]:
    return {
        file.name: hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(path.iterdir())
        if file.is_file() and file.name != MANIFEST
    }


def save(path: Path, model, optimizer, scheduler, state: dict) -> None:
    """`model` is the bare Megatron module (no DDP/Float16Module wrapper, whose keys differ). Every rank writes its shards into `path` (a filesystem all ranks share); rank 0 the trainer state."""
    if dist.get_rank() == 0:  # a crashed earlier save may have left shards behind
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    dist.barrier()
    model_sd = model.sharded_state_dict()
    dist_checkpointing.save({"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd)}, str(path))
    if dist.get_rank() == 0:
        (path / TRAINER_STATE).write_text(json.dumps({**state, "scheduler": scheduler.state_dict()}))
    dist.barrier()
    if dist.get_rank() == 0:
        (path / MANIFEST).write_text(json.dumps(_digests(path), indent=1))
    dist.barrier()


def verify(path: Path) -> None:
    """Raise a RaytronError naming the problem if the checkpoint at `path` is incomplete or corrupt."""
    advice = "Delete it to resume from the previous checkpoint, or start over with run.resume=false."
    if not (path / MANIFEST).is_file():
        raise RaytronError(f"checkpoint {path} is incomplete ({MANIFEST} missing: the save was interrupted). {advice}")
    expected = json.loads((path / MANIFEST).read_text())
    actual = _digests(path)
    changed = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    if changed:
        raise RaytronError(f"checkpoint {path} is corrupt: {', '.join(changed)} differ from its manifest. {advice}")


def load(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer and scheduler from `path`; return the trainer state (step, epoch, ...)."""
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
        model_sd = model.sharded_state_dict()
        loaded = dist_checkpointing.load(
            {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True)}, str(path)
        )
    except Exception as error:  # noqa: BLE001 - any read failure means the same to the user
        raise RaytronError(
            f"checkpoint {path} could not be read ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "Delete it to fall back to the previous one, or start over with run.resume=false."
        ) from None  # Ray reports a chained worker error by its cause: keep ours on top
    model.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(state.pop("scheduler"))
    return state
