"""Atomic folders: write under `<name>.partial`, then swap into place, so no reader sees half an output."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `final` (the old one is removed), on error it is deleted."""
    final = Path(final)
    staging = final.with_name(final.name + ".partial")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
