"""Training checkpoints with megatron.core.dist_checkpointing (model + optimizer shards + trainer state)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing

from raytron.errors import RaytronError

TRAINER_STATE = "trainer_state.json"


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
            f"checkpoint {path} could not be read ({type(error).__name__}: {error}). "
            "Delete it to fall back to the previous one, or start over with run.resume=false."
        ) from error
    model.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(state.pop("scheduler"))
    return state
