"""IMDb reviews on Ray Data: read, strip HTML, lexicon and length features, tokenize, split, store.

Splits are the data root's: train (20k) and val (5k) carved from the original train split, test
the original 25k test split, never used for training or model selection. From the Hub, val is the
20% of the Hub's train split picked by a stable hash of the text (`raytron.data.splits`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import ray.data
from ray.data.expressions import col

from raytron.atomic import replace_dir
from raytron.config import DataConfig
from raytron.data.cache import cached_splits, open_split, read_manifest, write_split
from raytron.data.sources import read_corpus, read_hub, source_identity
from raytron.data.splits import split_of
from raytron.errors import RaytronError

SPLITS = ("train", "val", "test")
HUB_CARVE = (("train", 0.8), ("val", 0.2))
"""From the Hub, val is carved from its train split by a stable hash of the text (duplicate reviews stay together)."""
LABELS = ("negative", "positive")
FEATURES = ("log_length", "vader_compound")
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t]+")


def clean_text(text: str) -> str:
    """Reviews carry `<br />` line breaks and HTML entities: make them plain text."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = html.unescape(_TAG.sub(" ", text))
    return "\n".join(_SPACE.sub(" ", line).strip() for line in text.splitlines()).strip()


def _label_to_int(batch: pd.DataFrame) -> pd.DataFrame:
    batch["label"] = batch["label"].map(lambda v: int(v in (1, "pos", "positive")))
    return batch[["id", "text", "label"]]


def _hub_carve(batch: pd.DataFrame) -> pd.DataFrame:
    batch["split"] = batch["text"].map(lambda text: split_of(text, HUB_CARVE))
    return batch


def read_raw_splits(cfg: DataConfig, wanted: tuple[str, ...] = SPLITS) -> dict[str, ray.data.Dataset]:
    """Raw rows (id, text, label 0/1) of the `wanted` splits, sampled to the configured sizes."""
    rows = read_corpus(cfg.dataset, cfg.data_dir)
    if rows is not None:
        rows = rows.materialize()  # read the file once for all three splits
        splits = {s: rows.filter(expr=col("split") == s) for s in wanted}
    else:
        hub = read_hub(cfg.dataset, cfg.data_dir)
        carved = hub["train"].map_batches(_hub_carve, batch_format="pandas")
        splits = {split: carved.filter(expr=col("split") == split).drop_columns(["split"]) for split, _ in HUB_CARVE}
        splits = {split: ds for split, ds in {**splits, "test": hub["test"]}.items() if split in wanted}
    limits = {"train": cfg.train_rows, "val": cfg.val_rows, "test": cfg.test_rows}
    out = {}
    for split, ds in splits.items():
        ds = ds.map_batches(_label_to_int, batch_format="pandas")
        if limits[split]:  # a small seeded slice: sampling in pandas beats a distributed shuffle
            # Ray Data hands blocks over in completion order: sort first, or the seeded sample differs per run
            frame = ds.to_pandas().sort_values(["id", "label", "text"], kind="stable", ignore_index=True)
            ds = ray.data.from_pandas(frame.sample(min(limits[split], len(frame)), random_state=cfg.seed))
        elif split == "train":  # the corpus is sorted by label: streamed in order, SGD sees one class at a time
            ds = ds.random_shuffle(seed=cfg.seed)
        out[split] = ds
    return out


def head_tail(ids: list[int], body: int, head: int) -> list[int]:
    """Keep `head` leading and `body - head` trailing tokens of a long review (Sun et al. 2019)."""
    if len(ids) <= body:
        return ids
    return ids[:head] + ids[len(ids) - (body - head):]


class ReviewEncoder:
    """Ray Data callable class: cleans, scores with VADER, tokenizes with the model's fast tokenizer."""

    def __init__(self, tokenizer_dir: str, max_length: int, head_tokens: int):
        from transformers import AutoTokenizer
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True)
        self.tokenizer.model_max_length = 1 << 30  # we truncate ourselves (head + tail)
        self.vader = SentimentIntensityAnalyzer()
        self.max_length = max_length
        self.head_tokens = head_tokens

    def __call__(self, batch: pd.DataFrame | dict[str, Sequence]) -> dict[str, np.ndarray]:
        """A batch's columns `id`, `label` and `text` (Ray Data's pandas batch, or a dict of sequences) encoded."""
        texts = [clean_text(t) for t in batch["text"]]
        body = self.max_length - 2
        pieces = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        input_ids = np.full((len(texts), self.max_length), self.tokenizer.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(texts), self.max_length), dtype=np.int8)
        for row, ids in enumerate(pieces):
            ids = [self.tokenizer.cls_token_id, *head_tail(ids, body, self.head_tokens), self.tokenizer.sep_token_id]
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        words = np.array([len(t.split()) for t in texts], dtype=np.float32)
        return {
            "id": np.asarray(batch["id"]),
            "label": np.asarray(batch["label"], dtype=np.int64),
            "text": np.array(texts, dtype=object),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "num_words": words,
            # log length scaled to about [0, 1] (reviews have 10 to 2,500 words).
            "log_length": np.log1p(words) / 8.0,
            "vader_compound": np.array([self.vader.polarity_scores(t)["compound"] for t in texts], dtype=np.float32),
        }

    def texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Unlabelled texts (a served request's) encoded, with ids 0..n-1 and label 0: from a dict, as a pandas
        DataFrame cost the GPU classifier's replica about 0.4 ms per request (docs/gpu-fast-path.md, twenty-first
        session)."""
        return self({"id": np.arange(len(texts)), "label": np.zeros(len(texts), dtype=np.int64), "text": texts})


def encode_splits(raw: dict[str, ray.data.Dataset], cfg: DataConfig, tokenizer_dir: str | Path) -> dict[str, ray.data.Dataset]:
    """Tokenized, featurized splits (lazy Ray Datasets, written to parquet by the cache or jobs/preprocess.py)."""
    return {
        split: ds.map_batches(
            ReviewEncoder,
            fn_constructor_kwargs=dict(
                tokenizer_dir=str(tokenizer_dir), max_length=cfg.max_length, head_tokens=cfg.head_tokens
            ),
            batch_format="pandas",
            batch_size=256,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.preprocess_actors),
            num_cpus=0.5,  # leave room for Train workers on a 2-core laptop
        )
        for split, ds in raw.items()
    }


PREPARED_MANIFEST = "prepared.json"
_ENCODING_KEYS = ("max_length", "head_tokens")
TRAINING_SPLITS = ("train", "val")


def write_prepared(encoded: dict[str, ray.data.Dataset], cfg: DataConfig, out_dir: Path) -> Path:
    """Write each split as parquet shards (`raytron.data.cache.write_split`), then a manifest; a folder without
    it is incomplete."""
    with replace_dir(out_dir) as staging:
        counts = {split: write_split(ds, staging / split)["rows"] for split, ds in encoded.items()}
        manifest = {**{key: getattr(cfg, key) for key in _ENCODING_KEYS}, "dataset": cfg.dataset, "rows": counts}
        (staging / PREPARED_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Path(out_dir)


def read_prepared(cfg: DataConfig, wanted: tuple[str, ...] = SPLITS) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """The `wanted` parquet splits under `cfg.prepared_dir` that it holds, checked against this config's encoding,
    and their row counts."""
    root = Path(cfg.prepared_dir)
    manifest_path = root / PREPARED_MANIFEST
    if not manifest_path.is_file():
        raise RaytronError(f"data.prepared_dir={root} holds no finished preprocessing ({PREPARED_MANIFEST} "
                           "missing): run jobs/preprocess.py with the same config first")
    manifest = json.loads(manifest_path.read_text())
    for key in _ENCODING_KEYS:
        if manifest[key] != getattr(cfg, key):
            raise RaytronError(f"{root} was prepared with {key}={manifest[key]}, but data.{key}="
                               f"{getattr(cfg, key)}: rerun jobs/preprocess.py or match the config")
    splits = [split for split in wanted if split in manifest["rows"]]
    return ({split: open_split(root / split, read_manifest(root / split), cfg.materialize_max_mb, f"{root} {split}")
             for split in splits}, {split: manifest["rows"][split] for split in splits})


def load_splits(cfg: DataConfig, tokenizer_dir: str | Path,
                wanted: tuple[str, ...] = TRAINING_SPLITS) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """The `wanted` encoded splits and their row counts: from `data.prepared_dir` when set, else from the
    tokenized-split cache (`raytron.data.cache`), encoded from the corpus on a miss."""
    if cfg.prepared_dir:
        return read_prepared(cfg, wanted)
    return cached_splits(cfg, wanted, tokenizer_dir, source_identity(cfg.dataset, cfg.data_dir), __file__,
                         lambda missing: encode_splits(read_raw_splits(cfg, missing), cfg, tokenizer_dir))
