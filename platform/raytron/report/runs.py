"""What the report shows of a run, read from the run's own files (eval outputs, raytron.json, metrics.jsonl)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from raytron.config import TASK_CONFIGS

EVALUATION = {"sentiment": "eval/metrics.json", "summarization": "eval/rouge.json", "topics": "topics/topics.csv"}
"""The file only that task's evaluation writes: it marks a run folder as a run of the task."""
MODEL = {"sentiment": "model", "summarization": "model", "topics": "topic_model"}
"""The task's exported model folder (with raytron.json)."""
COMMANDS = {
    "sentiment": ["python jobs/finetune.py --config configs/sentiment.yaml",
                  "python jobs/evaluate.py --config configs/sentiment.yaml"],
    "summarization": ["python jobs/finetune.py --config configs/summarization.yaml",
                      "python jobs/evaluate.py --config configs/summarization.yaml"],
    "topics": ["python jobs/topics.py --config configs/topics.yaml"],
}
"""What produces a task's run (with its recipe's run.name and run.output_dir)."""


@dataclass
class Run:
    """The latest run of one task, or None fields where a part is missing."""

    task: str
    folder: Path | None = None
    updated: str | None = None
    """UTC time of the evaluation's (or, unevaluated, the model's) file."""
    meta: dict | None = None
    """The exported model's raytron.json."""
    results: dict | None = None
    """The evaluation's own numbers (eval/metrics.json, eval/rouge.json, topics/comparison.csv)."""
    cost: dict | None = None
    """Training time and throughput from metrics.jsonl (None: the run trained nothing)."""
    missing: list[str] = field(default_factory=list)
    """What is missing, each with the command that makes it."""


def mtime(path: Path) -> float:
    return path.stat().st_mtime


def utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def read_meta(folder: Path) -> dict | None:
    path = folder / "raytron.json"
    return json.loads(path.read_text()) if path.is_file() else None


def latest_run(root: Path, task: str) -> Path | None:
    """The task's run folder under `root` with the newest evaluation, else with the newest exported model."""
    evaluated = [p.parents[len(Path(EVALUATION[task]).parts) - 1] for p in root.glob(f"*/{EVALUATION[task]}")]
    if evaluated:
        return max(evaluated, key=lambda folder: mtime(folder / EVALUATION[task]))
    trained = [p.parents[1] for p in root.glob(f"*/{MODEL[task]}/raytron.json")
               if (read_meta(p.parent) or {}).get("task") == task]
    return max(trained, key=lambda folder: mtime(folder / MODEL[task] / "raytron.json")) if trained else None


def training_cost(path: Path, workers: int) -> dict | None:
    """Optimizer-step time of the last training in metrics.jsonl (a step count that falls starts a new one), times
    the workers, and its tokens/s; validation and checkpoints not counted."""
    if not path.is_file():
        return None
    windows = [row for row in map(json.loads, path.read_text().splitlines()) if "train/step_time_ms" in row]
    seconds = tokens = 0.0
    previous, mfu = 0, []
    for row in windows:
        if row["step"] < previous:  # trained again from the start: count the newest training only
            seconds = tokens = 0.0
            mfu = []
        steps = max(row["step"] - previous, 0)
        previous = row["step"]
        window = row["train/step_time_ms"] * steps / 1000
        seconds += window
        tokens += row["train/tokens_per_s"] * window
        mfu += [row["train/mfu"]] if "train/mfu" in row else []
    if not seconds:
        return None
    return {"steps": previous, "seconds": seconds, "workers": workers, "device_hours": seconds * workers / 3600,
            "device": "GPU" if mfu else "CPU", "tokens_per_s": tokens / seconds,
            "mfu": sum(mfu) / len(mfu) if mfu else None}


def records(csv: Path) -> list[dict]:
    """A CSV's rows as dicts, blanks (an NPMI with no topic to score) as None."""
    return json.loads(pd.read_csv(csv).to_json(orient="records"))


def read_results(folder: Path, task: str) -> dict | None:
    path = folder / EVALUATION[task]
    if not path.is_file():
        return None
    if task == "topics":
        comparison = folder / "topics" / "comparison.csv"
        over_time = folder / "topics" / "topics_over_time.csv"
        return {"comparison": records(comparison) if comparison.is_file() else [], "topics": records(path),
                "over_time": over_time if over_time.is_file() else None}
    return json.loads(path.read_text())


def read_run(root: Path, task: str) -> Run:
    """The task's latest run under `root`, with what is missing and the commands that make it."""
    folder = latest_run(root, task)
    if folder is None:
        return Run(task, missing=[f"no {task} run under {root}: " + " && ".join(COMMANDS[task])])
    meta = read_meta(folder / MODEL[task])
    results = read_results(folder, task)
    marker = folder / (EVALUATION[task] if results is not None else f"{MODEL[task]}/raytron.json")
    run = Run(task, folder, utc(mtime(marker)), meta, results)
    config = (meta or {}).get("config", {})
    run.cost = training_cost(folder / "metrics.jsonl", config.get("resources", {}).get("num_workers", 1))
    where = f"run.name={folder.name} run.output_dir={folder.parent}"
    if meta is None:
        run.missing.append(f"no exported model in {folder / MODEL[task]}: {COMMANDS[task][0]} {where}")
    if results is None:
        run.missing.append(f"not evaluated: {COMMANDS[task][-1]} {where}")
    return run


def tuning(configs: Path, tuned_dir: Path, task: str) -> dict | None:
    """`<tuned_dir>/<task>.yaml` (jobs/tune.py's best trial) beside the hand-set values of the same keys in
    `<configs>/<task>.yaml` (its defaults where the recipe leaves a key out); None when the task was not tuned."""
    path = tuned_dir / f"{task}.yaml"
    if not path.is_file():
        return None
    tuned = yaml.safe_load(path.read_text()) or {}
    recipe = yaml.safe_load((configs / f"{task}.yaml").read_text()) or {}
    recipe.pop("tune", None)  # only the hand-set values: no tuned file applied
    hand_set = TASK_CONFIGS[task].model_validate(recipe).model_dump()
    rows = []
    for key, value in (tuned.get("values") or {}).items():
        node = hand_set
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        rows.append({"key": key, "tuned": value, "hand_set": node})
    about = {k: v for k, v in tuned.items() if k != "values"}
    return {"file": str(path), "about": about, "values": rows}
