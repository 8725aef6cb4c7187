"""CNN/DailyMail for a decoder: fixed splits, prompt + summary tokens, loss only on the summary.

The data root holds 800 rows of the 3.0.0 validation split. They are split once by a hash of each
row's id (stable across runs and machines): 595 train, 107 val, 98 test; test is never used for
training or selection.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import ray.data
from ray.data.expressions import col

from raytron.config import SummaryDataConfig
from raytron.data import splits
from raytron.data.cache import cached_splits
from raytron.data.sources import read_corpus, read_hub, source_identity

SPLIT_SHARES = (("train", 0.75), ("val", 0.125), ("test", 0.125))
PROMPT = "Summarize this news article in three sentences.\n\n{article}"
IGNORE_INDEX = -100
"""Label of positions that carry no loss (the prompt and padding), as torch's cross_entropy ignores."""


def split_of(row_id: str) -> str:
    """train/val/test from a stable hash of the id (`raytron.data.splits`): fixed, whatever order rows come in."""
    return splits.split_of(row_id, SPLIT_SHARES)


def clean_article(text: str) -> str:
    """Collapse the double spaces and stray whitespace the crawl left between sentences."""
    return re.sub(r"\s+", " ", text).strip()


def summary_text(highlights: str) -> str:
    """Highlights are one sentence a line, each ending in ' .': make them plain sentences."""
    return "\n".join(re.sub(r"\s+\.$", ".", line.strip()) for line in highlights.splitlines() if line.strip())


def _clean_batch(batch: pd.DataFrame) -> pd.DataFrame:
    ids = batch["id"].astype(str)
    return pd.DataFrame({"id": ids, "article": batch["article"].map(clean_article),
                         "summary": batch["highlights"].map(summary_text), "split": ids.map(split_of)})


def read_splits(data_dir: str | None, limits: dict[str, int | None] | None = None) -> dict[str, ray.data.Dataset]:
    """Cleaned rows (id, article, summary) per fixed split, read by Ray Data from the data root (else the Hub);
    `limits` keeps the first n rows of a split (in file order)."""
    limits = limits or {}
    rows = read_corpus("cnn_dailymail", data_dir)
    if rows is None:
        rows = read_hub("cnn_dailymail", data_dir)["validation"]
        rows.context.execution_options.preserve_order = True
    cleaned = rows.map_batches(_clean_batch, batch_format="pandas")
    splits = {}
    for split, _ in SPLIT_SHARES:
        ds = cleaned.filter(expr=col("split") == split).drop_columns(["split"])
        splits[split] = ds.limit(limits[split]) if limits.get(split) else ds
    return splits


def prompt_ids(tokenizer, article_ids: list[int], budget: int) -> list[int]:
    """The chat-formatted summarization prompt, its article cut so the whole prompt fits `budget` tokens."""

    def render(ids: list[int]) -> list[int]:
        messages = [{"role": "user", "content": PROMPT.format(article=tokenizer.decode(ids))}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    overhead = len(render([]))
    return render(article_ids[: max(budget - overhead, 0)])[:budget]


class SummaryEncoder:
    """Ray Data callable class: chat-formatted prompt + summary + EOS, article truncated to fit,
    labels IGNORE_INDEX on the prompt and padding so the loss sees only summary tokens."""

    def __init__(self, tokenizer_dir: str, max_length: int, max_summary_tokens: int = 128):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.max_length = max_length
        self.max_summary_tokens = max_summary_tokens

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        rows = len(batch)
        input_ids = np.full((rows, self.max_length), pad, dtype=np.int32)
        labels = np.full((rows, self.max_length), IGNORE_INDEX, dtype=np.int32)
        for row, (article, summary) in enumerate(zip(batch["article"], batch["summary"], strict=True)):
            target = self.tokenizer(summary, add_special_tokens=False)["input_ids"][: self.max_summary_tokens] + [eos]
            article_ids = self.tokenizer(article, add_special_tokens=False)["input_ids"]
            prompt = prompt_ids(self.tokenizer, article_ids, self.max_length - len(target))
            ids = prompt + target
            input_ids[row, : len(ids)] = ids
            labels[row, len(prompt): len(ids)] = target
        return {"id": batch["id"].to_numpy(), "input_ids": input_ids, "labels": labels,
                "summary": batch["summary"].to_numpy(dtype=object)}


def load_splits(cfg: SummaryDataConfig, tokenizer_dir: str | Path, wanted: tuple[str, ...] = ("train", "val"),
                ) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """The `wanted` encoded splits and their row counts, from the tokenized-split cache (encoded on a miss)."""

    def encode(missing: tuple[str, ...]) -> dict[str, ray.data.Dataset]:
        raw = read_splits(cfg.data_dir, {"train": cfg.train_rows, "val": cfg.val_rows, "test": cfg.test_rows})
        return {split: raw[split].map_batches(
            SummaryEncoder,
            fn_constructor_kwargs=dict(tokenizer_dir=str(tokenizer_dir), max_length=cfg.max_length,
                                       max_summary_tokens=cfg.max_summary_tokens),
            batch_format="pandas",
            batch_size=64,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.preprocess_actors),
            num_cpus=0.5,
        ) for split in missing}

    return cached_splits(cfg, wanted, tokenizer_dir, source_identity(cfg.dataset, cfg.data_dir), __file__, encode)
