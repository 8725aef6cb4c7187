"""Weights & Biases runs: offline unless the user brings a key, one place for the mode rule."""

from __future__ import annotations

import os
from pathlib import Path

from raytron.config import WandbConfig


def wandb_mode(cfg: WandbConfig) -> str:
    """Configured mode, else $WANDB_MODE, else online with $WANDB_API_KEY, else offline."""
    return cfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def start_run(cfg: WandbConfig, run_dir: Path, name: str, job_type: str, config: dict):
    """A W&B run writing under `run_dir/wandb` (offline runs sync later with `wandb sync`)."""
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        mode=wandb_mode(cfg),
        dir=str(run_dir),
        name=f"{name}-{job_type}",
        group=name,
        job_type=job_type,
        config=config,
        settings=wandb.Settings(silent=True, x_disable_stats=True),
    )
