"""Read an offline W&B run back from its files: the records of `run-<id>.wandb` (raytron.wandb_log reads them),
gathered per kind."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from raytron.wandb_log import has_exit_record, read_records


@dataclass
class OfflineRun:
    """What one offline run recorded."""

    folder: Path
    run: object = None
    """The RunRecord (run_id, run_group, job_type)."""
    history: list[dict] = field(default_factory=list)
    """Each logged step's values, JSON-decoded."""
    config: dict = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    """System-metric samples."""
    artifacts: dict[str, object] = field(default_factory=dict)
    """Logged artifacts (ArtifactRecord) by name."""
    finished: bool = False
    """Whether its log ends with the exit record (an attempt Ray Train killed has none)."""

    def values(self, key: str) -> list:
        return [step[key] for step in self.history if key in step]


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(folder: Path, timeout_s: float = 60, killed: bool = False) -> list:
    """The run's records once its exit record is written (`run.finish()` returns before wandb-core's writer has
    flushed everything). An attempt killed mid-run (`killed`: a later attempt resumed its id) never writes one: its
    records once the file has not grown for 5 s."""
    deadline, size, changed = time.monotonic() + timeout_s, -1, time.monotonic()
    while True:
        logs = list(Path(folder).glob("run-*.wandb"))
        records = list(read_records(logs[0])) if len(logs) == 1 else []
        if (now := logs[0].stat().st_size if len(logs) == 1 else -1) != size:
            size, changed = now, time.monotonic()
        if (has_exit_record(records) or time.monotonic() > deadline
                or (killed and time.monotonic() - changed > 5)):
            return records
        time.sleep(0.2)


def read_run(folder: Path, killed: bool = False) -> OfflineRun:
    """The records of the offline run in `folder` (`.../wandb/offline-run-<time>-<id>`)."""
    run = OfflineRun(Path(folder))
    records = finished_records(folder, killed=killed)
    run.finished = has_exit_record(records)
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run = record.run
            run.config.update({item_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "stats":
            run.stats.append({i.key: json.loads(i.value_json) for i in record.stats.item})
        elif kind == "artifact":
            run.artifacts[record.artifact.name] = record.artifact
    return run


def offline_runs(run_dir: Path, job_type: str) -> list[OfflineRun]:
    """The offline runs of one job type under `<run_dir>/wandb`, oldest first."""
    folders = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    ids = [folder.name.split("-")[-1] for folder in folders]
    runs = [read_run(folder, killed=ids[i] in ids[i + 1:]) for i, folder in enumerate(folders)]
    return [run for run in runs if run.run is not None and run.run.job_type == job_type]


def history_by_step(runs: list[OfflineRun], key: str) -> dict[int, object]:
    """`key`'s value at each step over a run's attempts (oldest first: a later attempt's value wins)."""
    return {row["_step"]: row[key] for run in runs for row in run.history if key in row}


def metadata(artifact) -> dict:
    return json.loads(artifact.metadata or "{}")


def manifest_paths(artifact) -> dict[str, str]:
    """An artifact's files: path inside the artifact -> digest."""
    return {entry.path: entry.digest for entry in artifact.manifest.contents}
