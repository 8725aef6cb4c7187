"""A recipe's `tune:` section as a search: the objective, Ray Tune domains, the hand-set baseline, each trial's config."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from raytron.config import Distribution, JobConfig
from raytron.errors import RaytronError
from raytron.tune.recipe import set_values

log = logging.getLogger("raytron.tune")
METRICS = {
    "sentiment": ("val/accuracy", "val/loss"),
    "summarization": ("val/loss", "val/perplexity"),
    "topics": ("topic_quality", "npmi", "diversity"),
    "generation": ("val/rougeLsum", "val/rouge1", "val/rouge2"),
}
"""What each kind of search can optimize (the first is the default): the validation metrics its trials report."""
TUNABLE = {"sentiment": ("train", "model"), "summarization": ("train", "model"), "topics": ("topics",),
           "generation": ("generation",)}
"""Config sections whose keys each kind of search tunes."""
STAGES = {"summarization": ("summarization", "generation")}
"""Tasks searched in stages (tune.stage: training, generation): one recipe space, each stage its sections' keys."""


def kind(cfg: JobConfig) -> str:
    """What the search runs: the task's fine-tune (or topic fits), or the summarization generation stage."""
    if cfg.tune.stage == "training":
        return cfg.task
    if cfg.task != "summarization":
        raise RaytronError(f"tune.stage={cfg.tune.stage} searches the summarizer's decoding; a {cfg.task} search has "
                           "one stage: leave tune.stage out")
    return "generation"


def stage_space(cfg: JobConfig) -> dict[str, Distribution]:
    """The keys of `tune.space` this stage searches (the other stage's keys are left to it)."""
    return {key: dist for key, dist in cfg.tune.space.items() if key.split(".")[0] in TUNABLE[kind(cfg)]}


def objective(cfg: JobConfig) -> tuple[str, str]:
    """The metric the search optimizes and whether higher (max) or lower (min) is better."""
    allowed = METRICS[kind(cfg)]
    metric = cfg.tune.metric or allowed[0]
    if metric not in allowed:
        raise RaytronError(f"tune.metric={metric!r}: a {kind(cfg)} search reports {', '.join(allowed)}")
    return metric, cfg.tune.mode or ("min" if metric.endswith(("loss", "perplexity")) else "max")


def domain(dist: Distribution):
    """The Ray Tune domain of one distribution."""
    from ray import tune

    if dist.loguniform is not None:
        return tune.loguniform(*dist.loguniform)
    if dist.uniform is not None:
        return tune.uniform(*dist.uniform)
    if dist.randint is not None:
        return tune.randint(dist.randint[0], dist.randint[1] + 1)  # Tune's upper bound is exclusive
    return tune.choice(dist.choice)


def trial_config(cfg: JobConfig, values: dict) -> JobConfig:
    """`cfg` with a trial's values of the tuned keys, validated."""
    raw = set_values(cfg.model_dump(), values)
    try:
        return type(cfg).model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise RaytronError(f"tune.space: {values} makes an invalid {cfg.task} config ({problems}); narrow the "
                           "distribution or change the recipe") from None


def check_space(cfg: JobConfig) -> None:
    """Every tuned key is a tunable config key, and every edge of its distribution makes a valid config."""
    sections = [s for stage in STAGES.get(cfg.task, (cfg.task,)) for s in TUNABLE[stage]]
    for key in cfg.tune.space:
        if "." not in key or key.split(".")[0] not in sections:
            raise RaytronError(f"tune.space: {key!r} is not tunable in a {cfg.task} search; tune keys of "
                               f"{', '.join(s + '.*' for s in sections)}")
    if not stage_space(cfg):
        raise RaytronError(f"tune.space has no key for this search: declare the keys to tune in the recipe's tune: "
                           f"section, e.g. '{TUNABLE[kind(cfg)][0]}.<key>: {{uniform: [low, high]}}' (see "
                           f"configs/{cfg.task}.yaml)")
    for key, dist in stage_space(cfg).items():
        for value in dist.extremes():
            trial_config(cfg, {key: value})


def lookup(cfg: JobConfig, key: str):
    """The value of a dotted key in `cfg`."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def baseline(cfg: JobConfig) -> dict:
    """The recipe's own (hand-set) values of the tuned keys: the first trial's point when tune.baseline_first, so that
    the search compares its best with them. A value outside its range is still tried (the hand-set reference; logged);
    an unset one (None: the checkpoint's own) or one missing from a choice is sampled (Optuna cannot fix those)."""
    point, outside = {}, []
    for key, dist in stage_space(cfg).items():
        value = lookup(cfg, key)
        if value is None or (dist.choice is not None and value not in dist.choice):
            continue
        point[key] = value
        low_high = dist.loguniform or dist.uniform or dist.randint
        if low_high is not None and not low_high[0] <= value <= low_high[1]:
            outside.append(f"{key}={value}")
    if outside:
        log.info("baseline trial: the recipe's %s lie outside the search space; tried as the hand-set reference",
                 ", ".join(outside))
    return point


def max_rungs(cfg: JobConfig) -> int:
    """The most results a trial reports (ASHA's max_t): topics, one per seed; generation, one per part of the
    validation articles (`raytron.tune.generation`); else one per epoch, the largest train.epochs in the space or the
    recipe's."""
    if cfg.task == "topics":
        return len(cfg.topics.seeds)
    if kind(cfg) == "generation":
        from raytron.tune.generation import parts

        return parts(cfg)
    dist = stage_space(cfg).get("train.epochs")
    return int(max(dist.extremes())) if dist is not None else cfg.train.epochs
