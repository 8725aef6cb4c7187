"""Tuned recipes: the best trial's values of the tuned keys, written atomically to `<tuned_dir>/<recipe file name>`
by jobs/tune.py and applied by the other jobs between the recipe and the command line."""

from __future__ import annotations

import copy
import datetime
import logging
import os
import tempfile
from pathlib import Path

import yaml

from raytron.errors import RaytronError

log = logging.getLogger("raytron.tune")
HEADER = ("# Written by jobs/tune.py: the best trial of a Ray Tune search. Jobs run with this recipe apply these values\n"
          "# (command-line overrides win; tune.use_tuned=false skips the file).\n")


def tuned_path(recipe: str | os.PathLike, tune_section: dict) -> Path:
    """Where a recipe's tuned file lives: `tune.tuned_dir` (default: tuned/ beside the recipe) / the recipe's file name."""
    recipe = Path(recipe)
    folder = tune_section.get("tuned_dir") or recipe.parent / "tuned"
    return Path(folder) / recipe.name


def write_tuned(path: Path, values: dict, about: dict, sections: tuple[str, ...]) -> Path:
    """Write the tuned file atomically (a temporary file renamed into place): `about` (task, stage, recipe, search,
    metric, date, commit...) and `values` (dotted key -> value). This search's stage owns the keys of `sections`; a
    file already there from another stage of the same recipe (summarization: training, then generation) keeps that
    stage's values, and `stages` then holds each stage's `about`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    about = {**about, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    earlier = read_tuned(path, about["task"]) if path.is_file() else {}
    kept = {key: value for key, value in earlier.get("values", {}).items() if key.split(".")[0] not in sections}
    summaries = earlier.get("stages") or ({earlier.get("stage"): {k: v for k, v in earlier.items() if k != "values"}}
                                          if earlier else {})
    stages = {stage: summary for stage, summary in summaries.items() if stage != about["stage"]} if kept else {}
    if kept:
        log.info("%s: keeping the %s stage's values %s beside this search's", path, ", ".join(stages), kept)
    body = {**about, **({"stages": {**stages, about["stage"]: about}} if stages else {}), "values": {**kept, **values}}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        out.write(HEADER + yaml.safe_dump(body, sort_keys=False))
    os.replace(out.name, path)
    return path


def read_tuned(path: Path, task: str) -> dict:
    """A tuned file, checked: a mapping with `values` (dotted key -> value) for this task."""
    try:
        tuned = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RaytronError(f"{path}: not valid YAML ({error}); rerun jobs/tune.py or delete the file") from error
    if not isinstance(tuned, dict) or not isinstance(tuned.get("values"), dict):
        raise RaytronError(f"{path}: expected a mapping with 'values' (written by jobs/tune.py); rerun the search or "
                           "delete the file")
    if tuned.get("task") != task:
        raise RaytronError(f"{path} was tuned for task {tuned.get('task')!r}, this recipe is {task!r}: delete it or set "
                           "tune.tuned_dir elsewhere")
    return tuned


def apply_tuned(recipe: str | os.PathLike, raw_recipe: dict, raw: dict, overrides: list[str]) -> dict:
    """`raw` (recipe + overrides) with the recipe's tuned values in between, when the file exists and
    tune.use_tuned is not false; says so in the log, and records the file in `tune.applied`."""
    from raytron.config import apply_overrides

    section = raw.get("tune") or {}
    path = tuned_path(recipe, section)
    if section.get("use_tuned") is False:
        if path.is_file():
            log.info("tuned recipe %s not applied (tune.use_tuned=false)", path)
        return raw
    if not path.is_file():
        return raw
    tuned = read_tuned(path, raw.get("task", "sentiment"))
    values = tuned["values"]
    merged = set_values(copy.deepcopy(raw_recipe), values)
    merged = apply_overrides(merged, overrides)
    overridden = sorted(key for key in values if any(item.partition("=")[0] == key for item in overrides))
    kept = {key: value for key, value in values.items() if key not in overridden}
    log.info("applying tuned recipe %s (search %s, %s %s, %s): %s%s; tune.use_tuned=false skips it", path,
             tuned.get("search"), tuned.get("metric"), tuned.get("best"), tuned.get("date"),
             ", ".join(f"{k}={v}" for k, v in kept.items()) or "no values",
             f" (the command line wins for {', '.join(overridden)})" if overridden else "")
    merged.setdefault("tune", {})["applied"] = {"file": str(path.resolve()), "search": tuned.get("search"),
                                                "date": tuned.get("date"), "values": kept, "overridden": overridden}
    return merged


def set_values(raw: dict, values: dict) -> dict:
    """Set dotted keys (`train.lr`) of a nested config dict to the given values; returns `raw`."""
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw
