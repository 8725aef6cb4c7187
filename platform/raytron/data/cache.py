"""Tokenized splits as parquet, keyed by (data, tokenizer, settings, encoding code), reused across runs and trials.

A split is encoded once per key into `$RAYTRON_CACHE/data/<dataset>/<split>-<key>/` (parquet shards, then
`_split.json` with its rows and in-memory size, written last: a folder without it is not a cache entry) and
read back from there by every later run, Ray Tune trial and evaluation with the same key. The first run
trains on what it read back too, so every run sees the rows in the same order (exact resume depends on it).

The cache is on the driver's node: its read and write tasks are pinned there, so workers on other nodes
get the rows through Ray's object store. A split no larger than `materialize_max_mb` (default a quarter of
the cluster's object store) is materialized once and read by every worker from there; a larger one stays a
lazy parquet read that each worker streams itself (`raytron.train.sampler.load_rows`), in file order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.data
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raytron.storage import cache_dir

log = logging.getLogger("raytron.data")
MANIFEST = "_split.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt", "vocab.json",
                   "special_tokens_map.json", "added_tokens.json", "tokenizer.model")
"""What decides how text becomes ids (weights are left out: a fine-tuned encoder keeps its tokenizer)."""
ROWS_PER_FILE = 4096
"""Parquet files of at most this many rows (IMDb at 512 tokens: about 10 MB each), read back in parallel."""
LOCATION_KEYS = ("data_dir", "prepared_dir", "preprocess_actors", "materialize_max_mb")
"""Data settings that do not change a split's rows: left out of the key."""


def tokenizer_digest(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files of a model folder."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir, name)
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


def split_key(cfg, split: str, source: str, tokenizer_dir: str | Path, code_file: str) -> str:
    """The cache key of one encoded split: the corpus (`source`: its file's identity or Hub address), the data
    settings, the tokenizer files and the encoding module's source."""
    parts = {"split": split, "source": source, "tokenizer": tokenizer_digest(tokenizer_dir),
             "settings": cfg.model_dump(exclude=set(LOCATION_KEYS)),
             "code": hashlib.sha256(Path(code_file).read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def on_this_node() -> dict:
    """ray_remote_args pinning a Ray Data read or write to the driver's node, where the cache folder is."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


def write_split(ds: ray.data.Dataset, folder: Path, extra: dict | None = None) -> dict:
    """Write `ds` as parquet shards into `folder`, manifest last, atomically: a concurrent writer of the same
    folder either wins (its copy is kept, ours dropped) or loses; no reader sees a partial folder."""
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir(parents=True)
    try:
        ds.write_parquet(str(staging), max_rows_per_file=ROWS_PER_FILE, ray_remote_args=on_this_node())
        files = sorted(staging.glob("*.parquet"))
        metas = [pq.ParquetFile(f).metadata for f in files]
        manifest = {"rows": sum(m.num_rows for m in metas), "files": [f.name for f in files],
                    "bytes": sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups)),
                    **(extra or {})}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, folder)
        except OSError:  # another run wrote the same key first: keep its copy
            if not (folder / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return json.loads((folder / MANIFEST).read_text())


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def open_split(folder: Path, manifest: dict, materialize_max_mb: float | None, what: str) -> ray.data.Dataset:
    """The split's parquet shards, in file order; materialized in the object store when small enough."""
    ds = ray.data.read_parquet([str(folder / name) for name in manifest["files"]], ray_remote_args=on_this_node())
    ds.context.execution_options.preserve_order = True
    limit = (materialize_max_mb * 2**20 if materialize_max_mb is not None
             else ray.cluster_resources().get("object_store_memory", 0) / 4)
    size = f"{manifest['rows']} rows, {manifest['bytes'] / 2**20:.1f} MB"
    if manifest["bytes"] <= limit:
        log.info("%s: materialized in the object store (%s <= %.0f MB)", what, size, limit / 2**20)
        return ds.materialize()
    log.info("%s: streamed from the parquet cache into each worker (%s > %.0f MB)", what, size, limit / 2**20)
    return ds


def cached_splits(cfg, splits: tuple[str, ...], tokenizer_dir: str | Path, source: str, code_file: str,
                  encode: Callable[[tuple[str, ...]], dict[str, ray.data.Dataset]],
                  ) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """`splits` of `cfg.dataset`, encoded: read from the cache when present (a hit), else encoded by
    `encode(missing splits)`, written to the cache and read back (a miss). Logged either way."""
    root = cache_dir() / "data" / cfg.dataset
    folders = {split: root / f"{split}-{split_key(cfg, split, source, tokenizer_dir, code_file)}" for split in splits}
    manifests = {split: read_manifest(folder) for split, folder in folders.items()}
    missing = tuple(split for split, manifest in manifests.items() if manifest is None)
    for split in splits:
        log.info("%s %s: tokenized-split cache %s (%s)", cfg.dataset, split,
                 "miss, encoding" if split in missing else "hit", folders[split])
    if missing:
        encoded = encode(missing)
        for split in missing:
            manifests[split] = write_split(encoded[split], folders[split], {"dataset": cfg.dataset, "split": split})
    opened = {split: open_split(folders[split], manifests[split], cfg.materialize_max_mb, f"{cfg.dataset} {split}")
              for split in splits}
    return opened, {split: manifests[split]["rows"] for split in splits}
