"""Run a recipe's search: trials sized to the cluster, Optuna TPE (or random) + ASHA, resumable; the best trial's
values become the tuned recipe."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from raytron.config import JobConfig
from raytron.errors import RaytronError
from raytron.runtime import absolute_paths, connect_ray, use_gpu
from raytron.store import git_commit
from raytron.tune.recipe import tuned_path, write_tuned
from raytron.tune.scheduler import ResumableASHA
from raytron.tune.space import TUNABLE, baseline, check_space, domain, kind, max_rungs, objective, stage_space

log = logging.getLogger("raytron.tune")
NOT_PART_OF_THE_SEARCH = {"resume", "use_tuned", "tuned_dir", "applied", "max_concurrent_trials"}
"""tune.* keys a resumed search may change."""
TRAIN_DRIVER_CPU = 0.01
"""A Train task's trial actor only drives its Ray Train run (whose workers hold the trial's CPUs/GPUs): Ray's
documented Tune + Train V2 setup gives it a token share (Tune refuses an empty request)."""


@dataclass
class Trials:
    """What one kind of search runs per trial (`raytron.tune.tasks`)."""

    function: Callable
    """The Tune function trainable: `function(values, job, metric, **prepare(cfg))`."""
    prepare: Callable
    """The search's config -> what every trial shares (computed once, passed through `tune.with_parameters`)."""
    workers: int
    cpus: float
    """A trial's workers and CPUs per worker."""
    gpu: bool
    """Whether a trial holds GPUs (a share of one, or whole ones per worker) when the cluster has them."""
    drives_train: bool
    """The trial actor only drives a Ray Train run whose workers hold the resources (a token CPU for the actor)."""
    unit: str
    """What one of its results is (epoch, seed, part): ASHA's rungs."""
    running_mean: bool = False
    """Its results are running means, so its score is the last one (else the best)."""
    details: tuple[str, ...] = ()
    """Other metrics of its last result kept in the trial table."""


@dataclass
class Outcome:
    """What a search ended with."""

    name: str
    folder: Path
    metric: str
    mode: str
    trials: list[dict]
    """One row per trial: id, values, score, reports (epochs; topics: seeds), done, stopped_early, baseline, error."""
    finished: bool
    """False when it was interrupted (rerun the same command to resume)."""
    tuned_file: Path | None = None
    best: dict | None = None
    baseline: dict | None = None


def size_trials(cfg: JobConfig, gpu: bool, workers: int, cpus: float, drives_train: bool = False) -> tuple[JobConfig, int]:
    """Each trial's config (its resources) and how many trials run at once: a trial's `workers` get whole GPUs, or
    1/tune.trials_per_gpu of one each when a trial is a single worker; on CPU `cpus` each."""
    job = cfg.model_copy(deep=True)
    job.resources.use_gpu = gpu
    available = ray.cluster_resources()
    if gpu:
        share = 1 / cfg.tune.trials_per_gpu
        if share < 1 and workers > 1:
            raise RaytronError(f"tune.trials_per_gpu={cfg.tune.trials_per_gpu} shares a GPU between trials of one "
                               f"worker; these trials have {workers} workers (TP x DP) and need whole GPUs: set "
                               "tune.trials_per_gpu=1")
        job.resources.gpus_per_worker = share
        fits = math.floor(available.get("GPU", 0) / (workers * share) + 1e-9)
        unit = f"{workers} x {share:g} GPU"
    else:  # Train trials: one CPU stays free for their Ray Data tasks (a 1-CPU read each; without it two 0.5-CPU
        # trials on a 2-CPU cluster waited on their reads forever: make demo's tune, 2026-11-29), and their drivers
        reserve, driver = (1, TRAIN_DRIVER_CPU) if drives_train else (0, 0)
        fits = math.floor((available.get("CPU", 0) - reserve) / (workers * cpus + driver) + 1e-9)
        unit = f"{workers} x {cpus:g} CPU"
    if fits < 1:
        raise RaytronError(f"a trial needs {unit}, more than the Ray cluster has ({available}): lower "
                           "resources.num_workers or resources.cpus_per_worker")
    concurrent = min(cfg.tune.max_concurrent_trials or fits, fits, cfg.tune.num_samples)
    log.info("trials: %s each, %d at once (the cluster holds %d)", unit, concurrent, fits)
    return job, concurrent


def search_key(cfg: JobConfig, recipe: str) -> dict:
    """What must not change between an interrupted search and its resume."""
    dump = cfg.model_dump(exclude={"tune": NOT_PART_OF_THE_SEARCH})
    return json.loads(json.dumps({"recipe": str(Path(recipe).resolve()), "config": dump}, default=str))  # as stored


def check_same_search(key_file: Path, key: dict) -> None:
    """A search resumes only with the settings it started with (else its trials would not compare)."""
    if key_file.is_file():
        before = json.loads(key_file.read_text())
        if before != key:
            changed = sorted(k for k in set(before["config"]) | set(key["config"])
                             if before["config"].get(k) != key["config"].get(k))
            raise RaytronError(f"the search at {key_file.parent} was started with other settings (they differ in: "
                               f"{', '.join(changed) or 'recipe'}): rerun with tune.resume=false to start it over, or "
                               "give a new tune.name")
    else:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(key, indent=1, default=str))


class TrialLog(tune.Callback):
    """One log line when a trial starts (its values) and when it ends (its metric)."""

    def __init__(self, metric: str, unit: str):
        self.metric, self.unit = metric, unit

    def on_trial_start(self, iteration, trials, trial, **info):
        log.info("trial %s started: %s", trial.trial_id, trial.config)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        log.info("trial %s ended after %s %s(s): %s %s", trial.trial_id, result.get("training_iteration"), self.unit,
                 self.metric, result.get(self.metric))


def searcher(cfg: JobConfig, metric: str, mode: str, points: list[dict]):
    """Optuna's TPE (seeded) or random sampling, trying `points` (the hand-set baseline) first."""
    if cfg.tune.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode, points_to_evaluate=points or None,
                            sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed))
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=points or None, random_state=cfg.tune.seed)


def trial_rows(results, metric: str, mode: str, planned, point: dict, running_mean: bool,
               details: tuple[str, ...] = ()) -> list[dict]:
    """Each trial's values, its score (the best `metric` over its epochs; the last when results are running means,
    as the topics trials' seeds are), its last result's `details` (the objective's parts), how many results it
    reported, and whether it was stopped early: ended without error before its `planned(values)` epochs (seeds),
    which only ASHA does."""
    pick = (lambda values: values[-1]) if running_mean else max if mode == "max" else min
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = [] if history is None or metric not in history else [v for v in history[metric] if v == v]
        trial_id = (result.metrics or {}).get("trial_id")
        values = {k: result.config[k] for k in sorted(result.config)}
        rows.append({"trial": trial_id, "values": values, metric: pick(scores) if scores else None,
                     **{key: (result.metrics or {}).get(key) for key in details},
                     "reports": len(scores), "done": bool((result.metrics or {}).get("done")),
                     "stopped_early": bool(scores) and not result.error and len(scores) < planned(values),
                     "baseline": bool(point) and all(values.get(k) == v for k, v in point.items()),
                     "error": str(result.error).splitlines()[0] if result.error else None})
    return rows


def run_search(cfg: JobConfig, recipe: str, trials: Trials) -> Outcome:
    """Search the stage's keys of `cfg.tune.space` with `trials` as Ray Tune trials under `<run>/tune/<name>/`,
    resuming an interrupted search of the same name; write the tuned recipe when complete."""
    cfg = absolute_paths(cfg)
    connect_ray()
    metric, mode = objective(cfg)
    check_space(cfg)
    space = stage_space(cfg)
    name = cfg.tune.name or f"{cfg.run.name}-{'' if cfg.tune.stage == 'training' else cfg.tune.stage + '-'}tune"
    root = cfg.run_dir / "tune"
    folder = root / name
    if not cfg.tune.resume and folder.exists():
        log.info("tune.resume=false: deleting the earlier search %s", folder)
        shutil.rmtree(folder)
        (root / f"{name}.json").unlink(missing_ok=True)
        (root / f"{name}-asha.pkl").unlink(missing_ok=True)
    check_same_search(root / f"{name}.json", search_key(cfg, recipe))
    gpu = use_gpu(cfg)
    job, concurrent = size_trials(cfg, gpu and trials.gpu, trials.workers, trials.cpus, trials.drives_train)
    job.resources.use_gpu = gpu  # topics: the embeddings all trials share are still computed on the GPU
    job.run.output_dir, job.run.store, job.wandb.group = str(folder / "trials"), None, name  # W&B: a run per trial
    point = baseline(cfg) if cfg.tune.baseline_first else {}
    log.info("search %s: %d trials of %s, %s %s (%s) with ASHA (grace %d, reduction %g, max %d %ss) over %s",
             name, cfg.tune.num_samples, kind(cfg), cfg.tune.search, metric, mode, cfg.tune.grace_period,
             cfg.tune.reduction_factor, max_rungs(cfg), trials.unit, ", ".join(space))
    own = {"cpu": trials.cpus * trials.workers}
    if gpu and trials.gpu:
        own["gpu"] = job.resources.gpus_per_worker * trials.workers
    function = tune.with_resources(
        tune.with_parameters(trials.function, job=job.model_dump(), metric=metric, **trials.prepare(cfg)),
        {"cpu": TRAIN_DRIVER_CPU} if trials.drives_train else own)
    asha_state = root / f"{name}-asha.pkl"  # not in the search folder: Tune's sync of that folder would put back the
    # copy it downloaded when the search resumed, over the rungs the resumed search writes
    scheduler = ResumableASHA(asha_state, time_attr="training_iteration", max_t=max_rungs(cfg),
                              grace_period=cfg.tune.grace_period, reduction_factor=cfg.tune.reduction_factor)
    if tune.Tuner.can_restore(str(folder)):
        log.info("resuming search %s (Tuner.restore): finished trials are kept, unfinished ones continue", folder)
        tuner = tune.Tuner.restore(str(folder), function, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            function,
            param_space={key: domain(dist) for key, dist in space.items()},
            tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=searcher(cfg, metric, mode, [point] if point else []),
                                        scheduler=scheduler, num_samples=cfg.tune.num_samples,
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name=name, storage_path=str(root), callbacks=[TrialLog(metric, trials.unit)]),
        )
    results = tuner.fit()
    return conclude(cfg, recipe, name, folder, metric, mode, results, point, trials)


def conclude(cfg: JobConfig, recipe: str, name: str, folder: Path, metric: str, mode: str, results,
             point: dict, trials: Trials) -> Outcome:
    """The trial table (logged, and in `<search>/trials.json`), and the tuned recipe when every trial ended."""
    def planned(values: dict) -> int:
        return int(values.get("train.epochs", cfg.train.epochs)) if trials.unit == "epoch" else max_rungs(cfg)

    parts = tuple(p for p in trials.details if p != metric)
    rows = trial_rows(results, metric, mode, planned, point, trials.running_mean, parts)
    (folder / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
    for row in rows:
        log.info("  %s %s %s=%s%s reports=%d%s%s%s", row["trial"], row["values"], metric, row[metric],
                 "".join(f" {key}={row[key]:.4g}" for key in parts if row.get(key) is not None),
                 row["reports"],
                 " stopped early (ASHA)" if row["stopped_early"] else "", " (hand-set baseline)" if row["baseline"]
                 else "", f" error: {row['error']}" if row["error"] else "")
    ended = [r for r in rows if r["done"] or r["error"]]
    outcome = Outcome(name, folder, metric, mode, rows, len(ended) >= cfg.tune.num_samples)
    scored = [r for r in rows if r[metric] is not None]
    if not outcome.finished or not scored:
        return outcome
    outcome.best = (max if mode == "max" else min)(scored, key=lambda r: r[metric])
    outcome.baseline = next((r for r in rows if r["baseline"]), None)
    about = {"task": cfg.task, "stage": cfg.tune.stage, "recipe": str(recipe), "search": f"{name} ({folder})",
             "metric": metric, "mode": mode,
             "best": outcome.best[metric], "best_trial": outcome.best["trial"],
             "hand_set": outcome.baseline[metric] if outcome.baseline else None,
             "trials": len(rows), "stopped_early": sum(r["stopped_early"] for r in rows), "commit": git_commit()}
    outcome.tuned_file = write_tuned(tuned_path(recipe, cfg.tune.model_dump()), outcome.best["values"], about,
                                     TUNABLE[kind(cfg)])
    return outcome
