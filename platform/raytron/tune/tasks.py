"""What each kind of search runs: its trial function, the resources of one trial, and what all trials share."""

from __future__ import annotations

from raytron.config import JobConfig
from raytron.tune.search import Outcome, Trials, run_search
from raytron.tune.space import kind


def tune_task(cfg: JobConfig, recipe: str) -> Outcome:
    """Sentiment and summarization: a Ray Train fine-tune per trial on splits encoded once. Topics: a BERTopic fit
    per trial and seed on embeddings computed once (`raytron.tune.topics`). Summarization's generation stage: the
    trained decoder's validation ROUGE per trial (`raytron.tune.generation`)."""
    if kind(cfg) == "topics":
        from raytron.tune.topics import PARTS, prepare_topics, topics_trial

        return run_search(cfg, recipe, Trials(topics_trial, prepare_topics, workers=1, cpus=1.0, gpu=False,
                                              drives_train=False, unit="seed", running_mean=True, details=PARTS))
    if kind(cfg) == "generation":
        from raytron.evaluate.rouge import METRICS
        from raytron.tune.generation import generation_trial, prepare_generation

        return run_search(cfg, recipe, Trials(generation_trial, prepare_generation, workers=1,
                                              cpus=cfg.resources.cpus_per_worker, gpu=True, drives_train=False,
                                              unit="part", running_mean=True, details=tuple(f"val/{m}" for m in METRICS)))
    from raytron.train.launcher import prepare_datasets
    from raytron.tune.trainable import train_trial

    return run_search(cfg, recipe, Trials(train_trial, lambda job: {"prepared": prepare_datasets(job)},
                                          workers=cfg.resources.num_workers, cpus=cfg.resources.cpus_per_worker,
                                          gpu=True, drives_train=True, unit="epoch"))
