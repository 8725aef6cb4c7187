"""Read an offline W&B run's transaction log, `run-<id>.wandb`.

The format is LevelDB's log format (leveldb/doc/log_format.md: 32 KiB blocks of checksummed chunks) holding protobuf
`Record`s behind W&B's 7-byte file header, as wandb-core writes it and `wandb sync` reads it. Written here because
the SDK has no public reader (wandb 0.31 has no `wandb.sdk.internal.datastore`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
"""Records are cut into chunks that never cross a 32 KiB block."""
FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
CHUNK_HEADER = struct.Struct("<IHB")  # CRC-32 of kind + data, length, kind
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator:
    """Every whole protobuf Record in a .wandb file, in order, each chunk's checksum verified. A file cut short (its
    writer still at work, or killed) ends at its last whole record; a damaged chunk raises ValueError."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size:
        return
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log")
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
        if position + CHUNK_HEADER.size + length > len(data):  # cut short
            return
        chunk = data[position + CHUNK_HEADER.size: position + CHUNK_HEADER.size + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: damaged chunk at byte {position}")
        position += CHUNK_HEADER.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk  # a record starts afresh, as LevelDB's reader
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError as error:
                raise ValueError(f"{path}: a record ending at byte {position} does not decode: {error}") from error
            yield record
            pending = b""


def has_exit_record(records) -> bool:
    """Whether the records hold the exit record wandb-core writes last, once `run.finish()` has flushed the run."""
    return any(record.WhichOneof("record_type") == "exit" for record in records)


def history_steps(path: Path) -> set[int]:
    """The `_step`s of the history rows a .wandb file holds (of a damaged file: those before the damage)."""
    steps = set()
    try:
        for record in read_records(path):
            if record.WhichOneof("record_type") == "history":
                steps.add(record.history.step.num)
    except ValueError:
        pass
    return steps
