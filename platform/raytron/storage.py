"""Where state lives: a local path or a filesystem URI (file://, s3://, gs://), opened with pyarrow.fs as Ray Train does.

An S3-compatible store names its endpoint in the URI, `s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http`
(pyarrow also takes `region`, `allow_bucket_creation` and `tls_ca_file_path` there), and takes its credentials from
the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).

Jobs work on a local folder and keep it in step with the URI: a run stored at a URI has a node-local *mirror*
(`$RAYTRON_CACHE/runs/...`); `pull` fills it from the store and `push` copies back what changed, a folder's
completion marker last. Nothing assumes that two nodes see the same disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pyarrow.fs as pafs

from raytron.errors import RaytronError

log = logging.getLogger("raytron.storage")
CHUNK = 1 << 20
REMOTE_READ_BYTES = 64 << 20
"""Bytes per request when reading a store file: pyarrow reads an object store with one ranged GET per read call, so
1 MiB chunks cost a request per MiB (a 1.5 GB checkpoint: 1,541 requests)."""


def is_uri(location: str) -> bool:
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    """`location/parts...`, keeping a URI's query (the S3 endpoint options) at the end."""
    if not is_uri(location):
        return str(Path(location, *parts))
    scheme, netloc, path, query, fragment = urlsplit(location)
    return urlunsplit((scheme, netloc, "/".join([path.rstrip("/"), *parts]), query, fragment))


def shown(location: str) -> str:
    """The location without credentials written into the URI (s3://KEY:SECRET@bucket)."""
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", str(location))


def cache_dir() -> Path:
    """This node's cache: $RAYTRON_CACHE, else ~/.cache/raytron."""
    return Path(os.environ.get("RAYTRON_CACHE", Path.home() / ".cache" / "raytron"))


def mirror_dir(location: str) -> Path:
    """The node-local folder that stands for `location`: the path itself, or a cache folder for a URI."""
    if not is_uri(location):
        return Path(location)
    public = shown(location)
    scheme, netloc, path, _, _ = urlsplit(public)
    endpoint = hashlib.sha256(public.encode()).hexdigest()[:8]  # the same bucket on two endpoints: two mirrors
    return cache_dir() / "runs" / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{scheme}_{netloc}{path}-{endpoint}")


def filesystem(location: str, what: str = "storage") -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and base path of a location (`what` it is names it in errors)."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        fs, base = pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as error:
        raise RaytronError(
            f"{what} {shown(location)}: pyarrow cannot open it ({error}); use a local path, file:///path, "
            "s3://bucket/prefix (an S3-compatible store: s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http) "
            "or gs://bucket/prefix") from error
    return fs, base.rstrip("/")


@contextmanager
def reaching(location: str, what: str = "storage") -> Iterator[None]:
    """Turn the filesystem's errors into one that says which store failed and what to check."""
    try:
        yield
    except OSError as error:
        if "NETWORK_CONNECTION" in str(error):
            endpoint = parse_qs(urlsplit(location).query).get("endpoint_override", ["the default S3 endpoint"])[0]
            raise RaytronError(
                f"{what} {shown(location)}: cannot reach {endpoint} ({error}). Is the S3 server running, and are "
                "the URI's endpoint_override=HOST:PORT and scheme=http|https right?") from error
        hint = ("; check that the bucket exists and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables"
                if str(location).startswith("s3://") else "")
        raise RaytronError(f"{what} {shown(location)}: {error}{hint}") from error


def copy_stream(source, sink=None) -> tuple[str, int]:
    """Copy one open stream into another (or only read it, without a sink); the sha256 and size of what was read."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_remote(fs: pafs.FileSystem, path: str):
    """A store file opened for reading as it is stored (pyarrow would otherwise decompress a name ending in .gz),
    through a REMOTE_READ_BYTES buffer on an object store."""
    local = isinstance(fs, pafs.LocalFileSystem)
    return fs.open_input_stream(path, compression=None, buffer_size=None if local else REMOTE_READ_BYTES)


def write_remote(fs: pafs.FileSystem, path: str):
    """A store file opened for writing the bytes given (pyarrow would otherwise compress a name ending in .gz)."""
    return fs.open_output_stream(path, compression=None)


def upload(fs: pafs.FileSystem, local: Path, remote: str) -> tuple[str, int]:
    """Copy a local file to the store; the sha256 and size of what was copied."""
    with open(local, "rb") as source, write_remote(fs, remote) as sink:
        return copy_stream(source, sink)


def download(fs: pafs.FileSystem, remote: str, local: Path, expected: tuple[str, int] | None = None) -> tuple[str, int]:
    """Copy a store file over `local` whole (through a partial file), only if its sha256 and size are `expected`
    (when given); the sha256 and size of what was read, for the caller to compare."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".{local.name}.{uuid.uuid4().hex}.partial")
    with read_remote(fs, remote) as source, open(partial, "wb") as sink:
        copied = copy_stream(source, sink)
    if expected is None or copied == expected:
        os.replace(partial, local)
    else:
        partial.unlink()
    return copied


def listing(fs: pafs.FileSystem, folder: str, recursive: bool = False) -> list[pafs.FileInfo]:
    """The entries under `folder`, none if it does not exist. Arrow's local filesystem raises "cannot list
    directory" for a folder made during the call (it fails to open it, then finds it there: the error stands), so
    that listing is taken again; the folder exists by then."""
    selector = pafs.FileSelector(folder, recursive=recursive, allow_not_found=True)
    try:
        return fs.get_file_info(selector)
    except FileNotFoundError:
        return fs.get_file_info(selector)


def _remote_files(fs: pafs.FileSystem, base: str, only: tuple[str, ...], skip: tuple[str, ...]) -> list[str]:
    """Paths (relative to `base`) of the files under it that start with one of `only` and none of `skip`."""
    infos = listing(fs, base, recursive=True)
    paths = (i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File)
    return [path for path in paths if path.startswith(only) and not path.startswith(skip)]


def pull(location: str, local: Path, only: tuple[str, ...] = ("",), skip: tuple[str, ...] = ()) -> Path:
    """Copy the files under `location` whose paths start with one of `only` (not `skip`) into `local`, each
    replacing its local copy whole. A local `location` is its own mirror: nothing to copy."""
    if not is_uri(location):
        return Path(location)
    fs, base = filesystem(location)
    with reaching(location):
        for path in _remote_files(fs, base, only, skip):
            download(fs, f"{base}/{path}", local / path)
    return local


def snapshot(local: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under `local` (what `push` may leave out as unchanged)."""
    return {p.relative_to(local).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in local.rglob("*") if p.is_file()}


def push(local: Path, location: str, last: str | None = None, only: tuple[str, ...] = ("",), skip: tuple[str, ...] = (),
         unchanged: dict[str, tuple[int, int]] | None = None) -> None:
    """Copy the files under `local` whose paths start with one of `only` (not `skip`, nor as they were in the
    `unchanged` snapshot) to `location`.
    `last`, a marker file the folder's readers check (raytron.json), is deleted first and written after every other
    file, so no reader sees a mixed folder."""
    if not is_uri(location):
        return
    fs, base = filesystem(location)
    unchanged = unchanged or {}
    files = sorted(p for p, relative in ((p, p.relative_to(local).as_posix()) for p in local.rglob("*"))
                   if p.is_file() and relative.startswith(only) and not relative.startswith(skip)
                   and unchanged.get(relative) != (p.stat().st_size, p.stat().st_mtime_ns))
    if last is not None:
        files.sort(key=lambda p: p.relative_to(local).as_posix() == last)
    with reaching(location):
        if last is not None and fs.get_file_info(f"{base}/{last}").type == pafs.FileType.File:
            fs.delete_file(f"{base}/{last}")
        for path in files:
            relative = path.relative_to(local).as_posix()
            fs.create_dir(f"{base}/{relative}".rsplit("/", 1)[0], recursive=True)
            upload(fs, path, f"{base}/{relative}")


def delete(location: str) -> None:
    """Remove a file, or a folder and everything under it, if it exists."""
    fs, base = filesystem(location)
    with reaching(location):
        kind = fs.get_file_info(base).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(base)
        elif kind == pafs.FileType.File:
            fs.delete_file(base)


@contextmanager
def synced_run(cfg, only: tuple[str, ...] = ("",)) -> Iterator[Path]:
    """A job's run folder as a local path: pulled from `run.output_dir` when it is a URI (training checkpoints
    under ray/ excepted), pushed back when the job succeeds (a failed job leaves the store as it was)."""
    local = cfg.run_dir
    if is_uri(cfg.run_uri):
        log.info("run %s: mirroring into %s", shown(cfg.run_uri), local)
        pull(cfg.run_uri, local, only=only, skip=("ray/",))
    before = snapshot(local) if is_uri(cfg.run_uri) else {}
    yield local
    if is_uri(cfg.run_uri):
        push(local, cfg.run_uri, skip=("ray/",), unchanged=before)
        log.info("run %s: outputs pushed from %s", shown(cfg.run_uri), local)
