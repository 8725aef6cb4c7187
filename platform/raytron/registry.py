"""Model store: `<root>/<name>/<version>/` folders, published atomically, resolved by name and version.

The root is a local path or any filesystem URI pyarrow knows (file://, s3://, gs://, hdfs://).
A version is written as a hidden `.vNNNN.partial` folder and moved into place once complete
(a rename on local and HDFS stores; object stores have no rename, so there readers only see a
version once its `raytron.json`, copied last, exists). `latest` is the highest complete version.
Remote versions are downloaded once into ~/.cache/raytron/store.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow.fs as pafs

from raytron.errors import RaytronError
from raytron.models.llama.gguf import cache_dir
from raytron.store import META

VERSION = re.compile(r"^v(\d{4,})$")


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def versions(root: str, name: str) -> list[str]:
    """Complete versions of `name`, oldest first."""
    fs, base = _filesystem(root)
    found = []
    for info in fs.get_file_info(pafs.FileSelector(f"{base}/{name}", allow_not_found=True)):
        if info.type == pafs.FileType.Directory and VERSION.match(info.base_name):
            if fs.get_file_info(f"{info.path}/{META}").type == pafs.FileType.File:
                found.append(info.base_name)
    return sorted(found, key=lambda v: int(VERSION.match(v).group(1)))


def names(root: str) -> list[str]:
    fs, base = _filesystem(root)
    entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and versions(root, e.base_name))


def publish(folder: str | Path, root: str, name: str) -> str:
    """Copy a trained model folder into the store as the next version of `name`; returns the version."""
    folder = Path(folder)
    if not (folder / META).is_file():
        raise RaytronError(f"{folder} is not a finished raytron model ({META} missing): nothing to publish")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise RaytronError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
    fs, base = _filesystem(root)
    existing = versions(root, name)
    version = f"v{int(VERSION.match(existing[-1]).group(1)) + 1 if existing else 1:04d}"
    partial, final = f"{base}/{name}/.{version}.partial", f"{base}/{name}/{version}"
    fs.create_dir(partial, recursive=True)
    local = pafs.LocalFileSystem()
    for info in local.get_file_info(pafs.FileSelector(str(folder), recursive=True)):
        if info.type == pafs.FileType.File and info.base_name != META:
            relative = Path(info.path).relative_to(folder)
            fs.create_dir(f"{partial}/{relative.parent}", recursive=True)
            pafs.copy_files(info.path, f"{partial}/{relative}", source_filesystem=local, destination_filesystem=fs)
    pafs.copy_files(str(folder / META), f"{partial}/{META}", source_filesystem=local, destination_filesystem=fs)
    fs.move(partial, final)
    return version


def resolve(root: str, name: str, version: str = "latest") -> tuple[Path, str]:
    """A local folder holding `name` at `version` (latest by default), and the version it is."""
    available = versions(root, name)
    if not available:
        raise RaytronError(f"model store {root} has no model {name!r} (has: {', '.join(names(root)) or 'none'}); "
                           "train one with run.store set, or publish a folder")
    version = available[-1] if version == "latest" else version
    if version not in available:
        raise RaytronError(f"model {name!r} has no version {version!r} in {root} (has: {', '.join(available)})")
    fs, base = _filesystem(root)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(base) / name / version, version
    local = cache_dir() / "store" / re.sub(r"[^A-Za-z0-9_.-]", "_", root) / name / version
    if not (local / META).is_file():
        pafs.copy_files(f"{base}/{name}/{version}", str(local), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
    return local, version


def publish_run_model(cfg, folder: Path, default_name: str) -> None:
    """Publish a job's finished model folder as the next version in `run.store` (when set)."""
    if cfg.run.store:
        name = cfg.run.model_name or default_name
        version = publish(folder, cfg.run.store, name)
        logging.getLogger("raytron.registry").info(
            "published %s to the model store %s as %s %s", folder, cfg.run.store, name, version)
