"""What each config's `task` names: its `Task` for the loop and its data splits (looked up, never branched on)."""

from __future__ import annotations

from pathlib import Path

import ray.data

from raytron.config import JobConfig
from raytron.models.pretrained import resolve_pretrained


def make_task(cfg: JobConfig):
    from raytron.train.sentiment import SentimentTask
    from raytron.train.simcse import ContrastiveTask
    from raytron.train.summarization import SummarizationTask

    return {"sentiment": SentimentTask, "summarization": SummarizationTask, "topics": ContrastiveTask}[cfg.task](cfg)


def load_task_splits(cfg: JobConfig) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """Encoded train/val/test splits and their row counts, tokenized with the model's own tokenizer."""
    from raytron.data import cnn_dailymail, imdb, news

    loader = {"sentiment": imdb.load_splits, "summarization": cnn_dailymail.load_splits,
              "topics": news.load_splits}[cfg.task]
    return loader(cfg.data, Path(resolve_pretrained(cfg.model.pretrained)))
