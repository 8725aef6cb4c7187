"""Read an offline W&B run back from its files: the records of `run-<id>.wandb` (W&B's LevelDB-log format of
protobuf `Record`s, as wandb-core writes and `wandb sync` reads it), gathered per kind."""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
"""Records are cut into chunks that never cross a 32 KiB block (LevelDB's log format)."""
FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
CHUNK_HEADER = struct.Struct("<IHB")  # CRC-32 of kind + data, length, kind
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """Every protobuf Record in a .wandb file, in order (each chunk's checksum verified)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    position, pending = FILE_HEADER.size, b""
    while position + CHUNK_HEADER.size <= len(data):
        left = BLOCK - position % BLOCK
        if left < CHUNK_HEADER.size:  # the block's tail is padding
            position += left
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:  # zero padding to the block's end
            position += left
            continue
        if position + CHUNK_HEADER.size + length > len(data):  # being written: read again later
            return
        chunk = data[position + CHUNK_HEADER.size: position + CHUNK_HEADER.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum, f"{path}: damaged chunk"
        position += CHUNK_HEADER.size + length
        pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@dataclass
class OfflineRun:
    """What one offline run recorded."""

    folder: Path
    run: object = None
    """The RunRecord (run_id, run_group, job_type)."""
    history: list[dict] = field(default_factory=list)
    """Each logged step's values, JSON-decoded."""
    config: dict = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    """System-metric samples."""
    artifacts: dict[str, object] = field(default_factory=dict)
    """Logged artifacts (ArtifactRecord) by name."""

    def values(self, key: str) -> list:
        return [step[key] for step in self.history if key in step]


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(folder: Path, timeout_s: float = 60) -> list:
    """The run's records once its exit record is written: `run.finish()` returns before wandb-core's writer has
    flushed everything (an offline run's file is complete only when the exit record is in it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = list(Path(folder).glob("run-*.wandb"))
        records = list(read_records(logs[0])) if len(logs) == 1 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_run(folder: Path) -> OfflineRun:
    """The records of the offline run in `folder` (`.../wandb/offline-run-<time>-<id>`)."""
    run = OfflineRun(Path(folder))
    for record in finished_records(folder):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run = record.run
            run.config.update({item_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "stats":
            run.stats.append({i.key: json.loads(i.value_json) for i in record.stats.item})
        elif kind == "artifact":
            run.artifacts[record.artifact.name] = record.artifact
    return run


def offline_runs(run_dir: Path, job_type: str) -> list[OfflineRun]:
    """The offline runs of one job type under `<run_dir>/wandb`, oldest first."""
    runs = [read_run(folder) for folder in sorted((Path(run_dir) / "wandb").glob("offline-run-*"))]
    return [run for run in runs if run.run is not None and run.run.job_type == job_type]


def metadata(artifact) -> dict:
    return json.loads(artifact.metadata or "{}")


def manifest_paths(artifact) -> dict[str, str]:
    """An artifact's files: path inside the artifact -> digest."""
    return {entry.path: entry.digest for entry in artifact.manifest.contents}
