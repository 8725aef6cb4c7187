"""Model store: versions of named models, each made visible by a manifest written last.

The root is a local path or a filesystem URI (file://, s3://, gs://; `raytron.storage` says how an
S3-compatible endpoint and its credentials are given).

One model, `<root>/<name>/`:
    v0003/...                  the published folder's files
    v0003.manifest.json        every file's size and sha256 and a digest of them all, written last
    v0003.claim.<publisher>    the claim that made one publisher the only writer of v0003

A version exists exactly when its manifest does: the manifest is staged under a hidden name and
moved into place (a rename on disk, one object copy on S3), after every file is written. Readers
list the manifests only, so a publish in progress, or one that crashed, is never seen.

Claiming a number (Arrow's S3 filesystem can neither move a folder nor write only-if-absent):
a publisher with a unique id writes a claim for the next number not seen in the listing (in any
folder, manifest or claim), then lists again. It owns the number only if its claim is the only one
for it; otherwise it deletes its claim and tries again after a random pause. Two publishers never
both own a number: whichever listed second listed after the other's claim was written, so it saw
two claims. (Both may lose and retry; an owner never deletes its claim; a number given up stays
unused.) This needs listings that show every write finished before them: local disks, S3 and GCS
give that. It closes the race that let two publishers both take the next number and write their
files into one folder.

Publishing files identical to the newest version's (same digest) publishes nothing and returns that
version. Remote versions are copied into $RAYTRON_CACHE/store (~/.cache/raytron/store) and checked
against their manifest on every resolve; missing or damaged files are fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.fs as pafs

from raytron.errors import RaytronError
from raytron.storage import cache_dir, download, filesystem, listing, reaching, read_remote, shown, upload, write_remote
from raytron.store import META

log = logging.getLogger("raytron.registry")

MANIFEST = re.compile(r"^(v\d{4,})\.manifest\.json$")
TAKEN = re.compile(r"^v(\d{4,})(?:\.|$)")  # a version's folder, manifest or claim
CLAIM_ATTEMPTS = 20


def versions(root: str, name: str) -> list[str]:
    """Published versions of `name`, oldest first."""
    fs, base = filesystem(root, "model store")
    with reaching(root, "model store"):
        return _versions(fs, f"{base}/{name}")


def names(root: str) -> list[str]:
    """Models with at least one published version."""
    fs, base = filesystem(root, "model store")
    with reaching(root, "model store"):
        entries = listing(fs, base)
        return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and _versions(fs, e.path))


def publish(folder: str | Path, root: str, name: str) -> str:
    """Copy a trained model folder into the store as the next version of `name` (or return the newest
    version if it holds the same files); returns the version."""
    folder = Path(folder)
    if not (folder / META).is_file():
        raise RaytronError(f"{folder} is not a finished raytron model ({META} missing): nothing to publish")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise RaytronError(f"model name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit")
    manifest = _manifest(folder)
    fs, base = filesystem(root, "model store")
    model = f"{base}/{name}"
    with reaching(root, "model store"):
        fs.create_dir(model, recursive=True)
        published = _versions(fs, model)
        if published and _read_manifest(fs, model, published[-1])["digest"] == manifest["digest"]:
            log.info("%s holds the same files as %s %s in %s: nothing new to publish", folder, name, published[-1],
                     shown(root))
            return published[-1]
        version = _claim(fs, model)
        _upload(folder, manifest, fs, f"{model}/{version}")
        staged = f"{model}/.{version}.manifest.json.{uuid.uuid4().hex}"
        with write_remote(fs, staged) as sink:
            sink.write(json.dumps({**manifest, "name": name, "version": version,
                                   "published": datetime.now(timezone.utc).isoformat()}, indent=1).encode())
        fs.move(staged, f"{model}/{version}.manifest.json")  # the commit: now readers see the version
    return version


def resolve(root: str, name: str, version: str = "latest") -> tuple[Path, str]:
    """A local folder holding `name` at `version` (latest by default), and the version it is."""
    fs, base = filesystem(root, "model store")
    model = f"{base}/{name}"
    with reaching(root, "model store"):
        available = _versions(fs, model)
        if not available:
            where = base if isinstance(fs, pafs.LocalFileSystem) else base.split("/")[0]  # the folder, or the bucket
            if fs.get_file_info(where).type == pafs.FileType.NotFound:
                raise RaytronError(f"model store {shown(root)} does not exist: check the store path or URI, or "
                                   "publish a model there first (run.store on a fine-tune)")
            raise RaytronError(f"model store {shown(root)} has no model {name!r} (has: "
                               f"{', '.join(names(root)) or 'none'}); train one with run.store set, or publish a folder")
        version = available[-1] if version == "latest" else version
        if version not in available:
            raise RaytronError(f"model {name!r} has no version {version!r} in {shown(root)} (has: {', '.join(available)})")
        if isinstance(fs, pafs.LocalFileSystem):
            return Path(f"{model}/{version}"), version
        cached = cache_dir() / "store" / re.sub(r"[^A-Za-z0-9_.-]", "_", shown(root)) / name / version
        return _download(fs, model, version, cached), version


def publish_run_model(cfg, folder: Path, default_name: str) -> None:
    """Publish a job's finished model folder as the next version in `run.store` (when set)."""
    if cfg.run.store:
        name = cfg.run.model_name or default_name
        version = publish(folder, cfg.run.store, name)
        log.info("model store %s: %s %s is %s", shown(cfg.run.store), name, version, folder)


def _versions(fs: pafs.FileSystem, model: str) -> list[str]:
    entries = listing(fs, model)
    return sorted((m.group(1) for e in entries if (m := MANIFEST.match(e.base_name))), key=lambda v: int(v[1:]))


def _read_manifest(fs: pafs.FileSystem, model: str, version: str) -> dict:
    with read_remote(fs, f"{model}/{version}.manifest.json") as source:
        return json.loads(source.read())


def _manifest(folder: Path) -> dict:
    """Every file's sha256 and size, and the digest of that list (equal digests: equal folders)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as source:
            files[path.relative_to(folder).as_posix()] = {"sha256": hashlib.file_digest(source, "sha256").hexdigest(),
                                                          "size": path.stat().st_size}
    return {"files": files, "digest": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()}


def _claim(fs: pafs.FileSystem, model: str) -> str:
    """Claim the next version number of a model for this publisher alone (the module's protocol)."""
    publisher = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for attempt in range(CLAIM_ATTEMPTS):
        entries = fs.get_file_info(pafs.FileSelector(model))
        version = f"v{max((int(m.group(1)) for e in entries if (m := TAKEN.match(e.base_name))), default=0) + 1:04d}"
        claim = f"{version}.claim.{publisher}"
        write_remote(fs, f"{model}/{claim}").close()
        claims = [e.base_name for e in fs.get_file_info(pafs.FileSelector(model))
                  if e.base_name.startswith(f"{version}.claim.")]
        if claims == [claim]:
            return version
        fs.delete_file(f"{model}/{claim}")
        time.sleep(random.uniform(0, 0.1 * (attempt + 1)))
    raise RaytronError(f"{model}: {CLAIM_ATTEMPTS} attempts to claim a version number all met another publisher's "
                       "claim; publish again")


def _upload(folder: Path, manifest: dict, fs: pafs.FileSystem, target: str) -> None:
    """Copy the folder's files under `target`, checking that they are still the ones the manifest lists."""
    for parent in sorted({f"{target}/{path}".rsplit("/", 1)[0] for path in manifest["files"]}):
        fs.create_dir(parent, recursive=True)
    for path, entry in manifest["files"].items():
        if upload(fs, folder / path, f"{target}/{path}") != (entry["sha256"], entry["size"]):
            raise RaytronError(f"{folder / path} changed while it was being published: publish again once "
                               "the folder is final")


def _download(fs: pafs.FileSystem, model: str, version: str, local: Path) -> Path:
    """`local` made to hold the remote version's files as its manifest lists them (damaged ones fetched again)."""
    for path, entry in _read_manifest(fs, model, version)["files"].items():
        target, expected = local / path, (entry["sha256"], entry["size"])
        if target.is_file() and target.stat().st_size == entry["size"]:
            with open(target, "rb") as source:
                if hashlib.file_digest(source, "sha256").hexdigest() == entry["sha256"]:
                    continue
        if download(fs, f"{model}/{version}/{path}", target, expected) != expected:
            raise RaytronError(f"{model}/{version}/{path} does not match the version's manifest (sha256, size): the "
                               "stored copy is damaged; publish the model again")
    return local
