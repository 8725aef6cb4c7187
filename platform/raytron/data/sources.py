"""Where corpora come from: a file under the data root (a path or a URI), else the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.fs as pafs
import ray.data

from raytron.errors import RaytronError
from raytron.storage import filesystem, is_uri, join, reaching, shown

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("raytron.data")
DEFAULT_DATA_DIRS = ("../shared/data",)
"""Tried after $RAYTRON_DATA_DIR: the development machines keep the corpora here."""


@dataclass(frozen=True)
class Source:
    """One corpus: its file under the data root and its Hugging Face Hub twin."""

    local: str
    """Path under the data root (JSON Lines, gzipped when it ends in .gz)."""
    hub: str
    """Hugging Face Hub dataset id, read when the file is absent."""


SOURCES = {
    "imdb": Source(local="imdb/imdb_50k.jsonl.gz", hub="stanfordnlp/imdb"),
    "cnn_dailymail": Source(local="cnn_dailymail/cnn_dailymail_3.0.0_validation_800.jsonl.gz", hub="abisee/cnn_dailymail"),
    "20newsgroups": Source(local="20newsgroups/20news_bydate.jsonl.gz", hub="SetFit/20_newsgroups"),
    "reuters21578": Source(local="reuters21578/reuters21578.jsonl.gz", hub="ucirvine/reuters21578"),
    "newsapi": Source(local="newsapi/articles.jsonl", hub="(none: collect with jobs/collect_news.py)"),
}


def _folder_exists(location: str, what: str) -> bool:
    fs, base = filesystem(location, what)
    with reaching(location, what):
        return fs.get_file_info(base).type == pafs.FileType.Directory


def _pinned(location: str) -> str:
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def data_root(configured: str | None) -> str | None:
    """The data root as an absolute path or a URI (file://, s3://...?endpoint_override=..., gs://, read through
    pyarrow.fs as `raytron.storage` does): the configured one, which must exist (never silently another), else
    $RAYTRON_DATA_DIR, else the first default that exists; None when there is none (the Hub is used)."""
    if configured:
        if not _folder_exists(configured, "data.data_dir"):
            raise RaytronError(f"data.data_dir={shown(configured)} is not a folder; give the folder (or URI) that "
                               "holds the corpora (e.g. ../shared/data or s3://bucket/data?endpoint_override=HOST:PORT"
                               "&scheme=http) or leave data.data_dir unset to use $RAYTRON_DATA_DIR")
        return _pinned(configured)
    for candidate in (os.environ.get("RAYTRON_DATA_DIR"), *DEFAULT_DATA_DIRS):
        if candidate and _folder_exists(candidate, "$RAYTRON_DATA_DIR"):
            return _pinned(candidate)
    return None


def corpus_location(name: str, configured_root: str | None) -> str | None:
    """The corpus file under the data root (a path or a URI), or None when it is not there."""
    if name not in SOURCES:
        raise RaytronError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    root = data_root(configured_root)
    if root is None:
        return None
    location = join(root, *SOURCES[name].local.split("/"))
    fs, path = filesystem(location, f"dataset {name}")
    with reaching(location, f"dataset {name}"):
        return location if fs.get_file_info(path).type == pafs.FileType.File else None


def local_file(name: str, configured_root: str | None) -> Path | None:
    """The corpus file when the data root is a local folder, else None."""
    location = corpus_location(name, configured_root)
    return Path(location) if location and not is_uri(location) else None


def source_identity(name: str, configured_root: str | None) -> str:
    """What a corpus's cached encodings are keyed on: its file's location, size and modification time, or the
    Hub dataset it is read from."""
    location = corpus_location(name, configured_root)
    if location is None:
        return f"hub:{hub_location(name, configured_root)}"
    fs, path = filesystem(location, f"dataset {name}")
    with reaching(location, f"dataset {name}"):
        info = fs.get_file_info(path)
    return f"{shown(location)} {info.size} {info.mtime_ns}"


def read_corpus(name: str, configured_root: str | None) -> ray.data.Dataset | None:
    """The corpus file under the data root read by Ray Data's JSON reader (parallel read tasks, rows in file
    order), or None when the data root does not hold it."""
    location = corpus_location(name, configured_root)
    if location is None:
        return None
    fs, path = filesystem(location, f"dataset {name}")
    log.info("dataset %r: reading %s with Ray Data", name, shown(location))
    ds = ray.data.read_json(path, filesystem=fs)
    ds.context.execution_options.preserve_order = True
    return ds


def hub_location(name: str, configured_root: str | None) -> str:
    """Where `datasets.load_dataset` reads the corpus: a copy in the Hub's layout under the data root
    (`<root>/<hub id>/`, e.g. from `hf download <hub id> --repo-type dataset --local-dir ...`), else the Hub id."""
    root = data_root(configured_root)
    snapshot = Path(root, SOURCES[name].hub) if root and not is_uri(root) else None
    return str(snapshot) if snapshot and snapshot.is_dir() else SOURCES[name].hub


def with_row_ids(split: datasets.Dataset, first: int) -> datasets.Dataset:
    """The split with an `id` column numbering its rows from `first` (kept when the corpus has its own)."""
    return split if "id" in split.column_names else split.add_column("id", range(first, first + len(split)))


def read_hub(name: str, configured_root: str | None) -> dict[str, ray.data.Dataset]:
    """The corpus's Hub splits as Ray Datasets, rows numbered across all splits (ids unique in the corpus);
    offline, a clear error that says what to set."""
    hub = hub_location(name, configured_root)
    root = data_root(configured_root)
    where = join(root, *SOURCES[name].local.split("/")) if root else f"(no data root found)/{SOURCES[name].local}"
    try:
        import datasets

        loaded = datasets.load_dataset(hub)
    except Exception as error:  # noqa: BLE001 - any failure here means "not reachable"
        raise RaytronError(
            f"dataset {name!r}: no file at {where}, and the Hugging Face Hub copy {hub!r} could not be "
            f"loaded ({type(error).__name__}: {error}). Set RAYTRON_DATA_DIR (or data.data_dir) to a folder "
            f"holding {SOURCES[name].local} (or the Hub's files under {SOURCES[name].hub}/), or run where the "
            "Hub is reachable."
        ) from None
    log.info("dataset %r: read with Hugging Face datasets from %s (splits %s)", name, hub, ", ".join(loaded))
    firsts = np.cumsum([0] + [len(loaded[split]) for split in loaded])[:-1]
    return {split: ray.data.from_huggingface(with_row_ids(loaded[split], int(first)))
            for split, first in zip(loaded, firsts, strict=True)}
