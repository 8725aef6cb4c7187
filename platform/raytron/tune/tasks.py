"""What each task's search runs: its trial function, the resources of one trial, and what all trials share."""

from __future__ import annotations

from raytron.config import JobConfig
from raytron.tune.search import Outcome, run_search


def tune_task(cfg: JobConfig, recipe: str) -> Outcome:
    """Sentiment and summarization: a Ray Train fine-tune per trial on splits encoded once. Topics: a BERTopic fit
    per trial and seed on embeddings computed once (`raytron.tune.topics`)."""
    if cfg.task == "topics":
        from raytron.tune.topics import prepare_topics, topics_trial

        return run_search(cfg, recipe, topics_trial, workers=1, cpus=1.0, prepare=prepare_topics)
    from raytron.train.launcher import prepare_datasets
    from raytron.tune.trainable import train_trial

    return run_search(cfg, recipe, train_trial, workers=cfg.resources.num_workers, cpus=cfg.resources.cpus_per_worker,
                      prepare=lambda job: {"prepared": prepare_datasets(job)})
