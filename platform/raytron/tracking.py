"""Weights & Biases runs and artifacts: offline unless the user brings a key; lineage dataset -> model -> evaluation.

System metrics are on (W&B's monitor samples CPU, memory, disk, network and GPUs every 15 s in its
own wandb-core process). Each exported model and each evaluation is an artifact whose files are the
run's folder (`policy="immutable"`: checksummed, not copied; `wandb sync` uploads them from there).
Lineage: online, a job declares its inputs with `run.use_artifact` (W&B's lineage graph); offline,
W&B refuses `use_artifact`, so every artifact also names its inputs (name, type, digest) in its
metadata under `inputs`, which both modes keep.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from raytron.config import JobConfig, WandbConfig

log = logging.getLogger("raytron.tracking")


def wandb_mode(cfg: WandbConfig) -> str:
    """Configured mode, else $WANDB_MODE, else online with $WANDB_API_KEY, else offline."""
    return cfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def start_run(cfg: WandbConfig, run_dir: Path, name: str, job_type: str, config: dict, run_id: str | None = None,
              group: str | None = None):
    """A W&B run writing under `run_dir/wandb` (offline runs sync later with `wandb sync`). `run_id` resumes that
    run (store `run.id` to pass it after a restart); `group` gathers runs (default: `wandb.group`, else the run
    name; a Ray Tune search sets its name, one run per trial)."""
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        mode=wandb_mode(cfg),
        dir=str(run_dir),
        id=run_id,
        resume="allow" if run_id else None,
        name=f"{name}-{job_type}",
        group=group or cfg.group or name,
        job_type=job_type,
        config=config,
        settings=wandb.Settings(silent=True),
    )


def finish_run(run, timeout_s: float = 120) -> None:
    """`run.finish()`, then for an offline run wait until wandb-core has written its log through the exit record:
    `finish()` returns first (measured: 5 ms, the log still empty), and Ray tears a worker down as soon as its loop
    returns, which killed wandb-core with the records unwritten (CI: a fine-tune's log without its exit record)."""
    from raytron.wandb_log import has_exit_record, read_records

    transactions = Path(run.settings.sync_file) if run.offline else None
    run.finish()
    deadline = time.monotonic() + timeout_s
    while transactions is not None and time.monotonic() < deadline:
        try:
            if transactions.is_file() and has_exit_record(read_records(transactions)):
                return
        except ValueError as damaged:
            log.warning("W&B: %s; `wandb sync` will stop short of its end", damaged)
            return
        time.sleep(0.2)
    if transactions is not None:
        log.warning("W&B: %s has no exit record after %d s; `wandb sync` may stop short of its end", transactions,
                    timeout_s)


def log_missing_history(run, run_dir: Path, rows: list[dict]) -> int:
    """After a restart, log the metrics rows restored from the checkpoint that no offline attempt of this run on this
    disk holds; return how many. wandb-core writes an offline run's log a few seconds behind, so a killed attempt
    loses its last rows (measured: killed after step 9, its log held steps 1-6 of a checkpoint at 8), and on another
    pod it left nothing here at all. Online runs are left as W&B resumes them: what the killed attempt had streamed
    is on the server; rows it had not sent yet are not logged again (the server's copy cannot be read here)."""
    from raytron.wandb_log import history_steps

    if not run.offline:
        return 0
    attempts = (run_dir / "wandb").glob(f"offline-run-*-{run.id}*/run-{run.id}.wandb")  # "-1": same-second starts
    held = set().union(*(history_steps(path) for path in attempts))
    missing = [row for row in rows if row["step"] not in held]
    for row in missing:  # a step's train and validation rows are two lines: W&B merges them into its one row
        run.log(row, step=row["step"])
    return len(missing)


def dataset_artifact(cfg: JobConfig):
    """The corpus a job read: its file under the data root (or the prepared shards) by reference, checksummed;
    the slice it took is the `data` section, in the metadata. Without a local file, the Hub dataset's address."""
    import wandb

    from raytron.data.sources import SOURCES, local_file

    data = cfg.data
    artifact = wandb.Artifact(data.dataset, type="dataset", metadata={"slice": data.model_dump()})
    prepared = getattr(data, "prepared_dir", None)
    source = Path(prepared) if prepared else local_file(data.dataset, data.data_dir)
    if source is not None:
        artifact.add_reference(source.resolve().as_uri(), name=source.name)
    else:
        artifact.add_reference(f"https://huggingface.co/datasets/{SOURCES[data.dataset].hub}", checksum=False)
    return artifact


def folder_artifact(name: str, kind: str, folder: Path, metadata: dict | None = None):
    """An artifact holding every file of `folder` (checksummed in place, uploaded from there by `wandb sync`)."""
    import wandb

    artifact = wandb.Artifact(name, type=kind, metadata=metadata or {})
    artifact.add_dir(str(folder), policy="immutable")
    return artifact


def model_artifact(cfg: JobConfig, folder: Path | None = None):
    """The exported model folder (`<run>/model` by default) as a `model` artifact named after the folder's run."""
    folder = Path(folder or cfg.run_dir / "model")
    return folder_artifact(f"{cfg.run.name}-{folder.name.replace('_', '-')}", "model", folder)


def evaluation_artifact(cfg: JobConfig, folder: Path):
    """An evaluation's report folder (`<run>/eval`, `<run>/topics`) as an `evaluation` artifact."""
    return folder_artifact(f"{cfg.run.name}-{folder.name}", "evaluation", folder)


def reference(artifact) -> dict:
    """What an output's metadata keeps of one input."""
    return {"name": artifact.name, "type": artifact.type, "digest": artifact.digest}


def log_with_inputs(run, outputs: list, inputs: list) -> list:
    """Declare `inputs` (online: `use_artifact`, W&B's lineage graph) and log `outputs`, each naming the inputs
    in its metadata (offline W&B cannot record uses); returns the logged outputs."""
    if run.settings.mode == "online":
        inputs = [run.use_artifact(artifact) for artifact in inputs]
    refs = [reference(artifact) for artifact in inputs]
    for artifact in outputs:
        artifact.metadata = {**artifact.metadata, "inputs": refs}
        run.log_artifact(artifact)
    return outputs


def log_model(run, cfg: JobConfig, folder: Path | None = None):
    """After a fine-tune's export (rank 0): the corpus in, the model folder out; None when nothing was exported."""
    folder = Path(folder or cfg.run_dir / "model")
    if not folder.is_dir():
        return None
    return log_with_inputs(run, [model_artifact(cfg, folder)], [dataset_artifact(cfg)])[0]


def log_evaluation(run, cfg: JobConfig, model_dir: Path | None, out_dir: Path):
    """After an evaluation: the corpus and the evaluated model (when there is one: baselines alone have none) in,
    the report folder out (an `evaluation` artifact)."""
    model = [model_artifact(cfg, model_dir)] if model_dir is not None and Path(model_dir).is_dir() else []
    return log_with_inputs(run, [evaluation_artifact(cfg, out_dir)], [dataset_artifact(cfg), *model])[0]
