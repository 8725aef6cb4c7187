"""News corpora for topic modeling: 20 Newsgroups (bydate), Reuters-21578 (dated), NewsAPI (dated).

20NG posts lose their headers, quoted replies and signature blocks with scikit-learn's own
`remove=("headers", "footers", "quotes")` functions, so figures compare with papers that use
`fetch_20newsgroups(remove=...)`. Cleaning runs as a Ray Data map; empty and duplicate documents
are then dropped and every count is logged. Labels (newsgroup, Reuters topics) stay for
evaluation only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import ray.data
from sklearn.datasets._twenty_newsgroups import (
    strip_newsgroup_footer,
    strip_newsgroup_header,
    strip_newsgroup_quoting,
)

from raytron.config import TopicDataConfig
from raytron.data.cache import cached_splits
from raytron.data.newsapi import articles_path, read_articles
from raytron.data.sources import read_corpus, read_hub, source_identity
from raytron.errors import RaytronError

log = logging.getLogger("raytron.data")
MIN_CHARS = 20
"""Shorter documents after cleaning carry no topic (signatures, "me too" replies): dropped."""


def clean_newsgroup_post(text: str) -> str:
    """scikit-learn's remove=("headers", "footers", "quotes"), then whitespace collapsed."""
    text = strip_newsgroup_quoting(strip_newsgroup_footer(strip_newsgroup_header(text)))
    return re.sub(r"\s+", " ", text).strip()


def _clean_batch(batch: pd.DataFrame, dataset: str) -> pd.DataFrame:
    if dataset == "20newsgroups":
        text = batch["text"].map(clean_newsgroup_post)
        # article numbers repeat across groups: the id is group/number
        return pd.DataFrame({"id": batch["group"] + "/" + batch["id"].astype(str), "text": text, "label": batch["group"],
                             "date": pd.Series(pd.NaT, index=batch.index, dtype="datetime64[ns]")})
    if dataset == "reuters21578":
        body = batch["title"].fillna("") + ". " + batch["body"].fillna("")
        return pd.DataFrame({"id": batch["id"].astype(str), "text": body.map(lambda t: re.sub(r"\s+", " ", t).strip(" .")),
                             "label": batch["topics"].map(lambda t: t[0] if len(t) else ""),
                             "date": pd.to_datetime(batch["date"].str.extract(r"(\d{1,2}-[A-Za-z]{3}-\d{4})")[0],
                                                   format="%d-%b-%Y", errors="coerce")})
    text = batch["title"].fillna("") + ". " + batch["description"].fillna("") + " " + batch["content"].fillna("")
    return pd.DataFrame({"id": batch["url"], "text": text.map(lambda t: re.sub(r"\s+", " ", t).strip(" .")),
                         "label": batch["source"].map(lambda s: (s or {}).get("name", "")),
                         "date": pd.to_datetime(batch["publishedAt"], utc=True).dt.tz_localize(None).dt.normalize()})


def read_raw(dataset: str, data_dir: str | None) -> pd.DataFrame:
    """The corpus's raw rows in memory (collected NewsAPI articles are read without Ray: torn lines are skipped)."""
    if dataset != "newsapi":
        return read_rows(dataset, data_dir).to_pandas()
    path = articles_path(data_dir)  # where jobs/collect_news.py writes them (articles_path decides for both)
    if not path.is_file():
        raise RaytronError(f"no NewsAPI articles at {path}: collect some with jobs/collect_news.py (it writes "
                           "there), or set data.data_dir (or $RAYTRON_DATA_DIR) to the data root that holds "
                           "newsapi/articles.jsonl")
    articles = read_articles(path)
    if not articles:
        raise RaytronError(f"{path} holds no articles: collect some with jobs/collect_news.py")
    return pd.DataFrame(articles)


def read_rows(dataset: str, data_dir: str | None) -> ray.data.Dataset:
    """The corpus's raw rows as a Ray Dataset: the data root's file through Ray Data's JSON reader, else the
    Hub's splits (NewsAPI articles through `read_raw`)."""
    if dataset == "newsapi":
        return ray.data.from_pandas(read_raw(dataset, data_dir))
    rows = read_corpus(dataset, data_dir)
    if rows is not None:
        return rows
    first, *rest = read_hub(dataset, data_dir).values()
    return first.union(*rest) if rest else first


def load_documents(cfg: TopicDataConfig) -> pd.DataFrame:
    """Cleaned, deduplicated documents: columns id, text, label (evaluation only), date (NaT if undated)."""
    cleaned = read_rows(cfg.dataset, cfg.data_dir).map_batches(
        _clean_batch, fn_kwargs={"dataset": cfg.dataset}, batch_format="pandas", batch_size=1024
    ).to_pandas()
    cleaned["date"] = pd.to_datetime(cleaned["date"])  # an all-NaT column comes back from Arrow as objects
    empty = cleaned["text"].str.len() < MIN_CHARS
    duplicate = cleaned["text"].duplicated() & ~empty
    docs = cleaned[~empty & ~duplicate].reset_index(drop=True)
    log.info("%s: %d documents read, %d empty or under %d characters after cleaning, %d duplicates; %d kept",
             cfg.dataset, len(cleaned), int(empty.sum()), MIN_CHARS, int(duplicate.sum()), len(docs))
    if cfg.rows is not None and cfg.rows < len(docs):
        log.info("%s: using a seeded sample of %d of %d documents (data.rows=%d; data.rows=null uses all)",
                 cfg.dataset, cfg.rows, len(docs), cfg.rows)
        docs = docs.sample(n=cfg.rows, random_state=cfg.seed).reset_index(drop=True)
    else:
        log.info("%s: using all %d documents", cfg.dataset, len(docs))
    if docs.empty:
        raise RaytronError(f"{cfg.dataset}: no documents left after cleaning")
    return docs


class SpanPairEncoder:
    """Ray Data callable class: two views of each document for contrastive training, tokenized with
    the encoder's fast tokenizer: the first and the second half of its words (both the whole
    document when it is shorter than MIN_SPLIT_WORDS), each cut to max_length tokens."""

    MIN_SPLIT_WORDS = 32

    def __init__(self, tokenizer_dir: str, max_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.max_length = max_length

    def _encode(self, texts: list[str], suffix: str) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="np")
        return {f"input_ids{suffix}": encoded["input_ids"].astype(np.int32),
                f"attention_mask{suffix}": encoded["attention_mask"].astype(np.int8)}

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        first, second = [], []
        for text in batch["text"]:
            words = text.split()
            half = len(words) // 2 if len(words) >= self.MIN_SPLIT_WORDS else len(words)
            first.append(" ".join(words[:half]))
            second.append(" ".join(words[half:] if half < len(words) else words))
        return {**self._encode(first, ""), **self._encode(second, "_b")}


def blocks(frame: pd.DataFrame, count: int) -> list[pd.DataFrame]:
    """`frame` cut into at most `count` non-empty row blocks, so that several Ray Data actors share it."""
    return [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), min(count, max(1, len(frame))))]


def load_splits(cfg: TopicDataConfig, tokenizer_dir: str | Path, wanted: tuple[str, ...] = ("train", "val"),
                ) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """Documents for the unsupervised encoder fine-tune: a seeded train/val hold-out, tokenized (no labels),
    from the tokenized-split cache (encoded on a miss)."""

    def encode(missing: tuple[str, ...]) -> dict[str, ray.data.Dataset]:
        docs = load_documents(cfg).sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
        val_rows = max(1, int(len(docs) * cfg.val_share))
        parts = {"train": docs.iloc[val_rows:], "val": docs.iloc[:val_rows]}
        return {split: ray.data.from_pandas(blocks(parts[split][["text"]], 4 * cfg.preprocess_actors)).map_batches(
            SpanPairEncoder, fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir), "max_length": cfg.max_length},
            batch_format="pandas", batch_size=256,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.preprocess_actors), num_cpus=0.5)
            for split in missing}

    if cfg.dataset == "newsapi":  # collected news grows: keyed on the articles file as it is now (if any: the
        path = articles_path(cfg.data_dir)  # encoding of a missing one fails with read_raw's message)
        source = f"{path} {path.stat().st_size} {path.stat().st_mtime_ns}" if path.is_file() else str(path)
    else:
        source = source_identity(cfg.dataset, cfg.data_dir)
    return cached_splits(cfg, wanted, tokenizer_dir, source, __file__, encode)
