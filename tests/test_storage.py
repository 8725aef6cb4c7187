"""Run storage on a real S3-compatible server (moto on 127.0.0.1): URIs, mirrors, push and pull, synced runs; the
listing that survives Arrow's local race."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from raytron.config import load_config
from raytron.storage import filesystem, join, listing, mirror_dir, pull, push, synced_run


def remote_files(location: str) -> dict[str, bytes]:
    fs, base = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path, compression=None) as source:  # the stored bytes as they are
                out[info.path[len(base) + 1:]] = source.read()
    return out


def test_join_keeps_the_endpoint_query_last():
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(uri, "sentiment", "ray") == "s3://bucket/runs/sentiment/ray?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join("/data/runs", "sentiment") == "/data/runs/sentiment"
    # two URIs differing only in their endpoint get different local mirrors; credentials never name a folder
    assert mirror_dir(uri) != mirror_dir("s3://bucket/runs?endpoint_override=127.0.0.1:9001&scheme=http")
    assert "SECRET" not in str(mirror_dir("s3://KEY:SECRET@bucket/runs"))


def test_push_then_pull_round_trip_and_selection(s3_server, tmp_path):
    uri = s3_server.store_uri()
    local = tmp_path / "run"
    (local / "model" / "encoder").mkdir(parents=True)
    (local / "model" / "encoder" / "weights.bin").write_bytes(b"\0" * 1000)
    (local / "model" / "raytron.json").write_text('{"task": "sentiment"}')
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    (local / "model" / "vocab.txt.gz").write_bytes(b"\x1f\x8b not really gzip")
    push(local, uri, only=("model/",))
    # stored byte for byte: pyarrow's streams would otherwise gzip a .gz name again on the way up
    assert remote_files(uri)["model/vocab.txt.gz"] == b"\x1f\x8b not really gzip"
    assert set(remote_files(uri)) == {"model/encoder/weights.bin", "model/raytron.json", "model/vocab.txt.gz"}
    push(local, uri)
    back = tmp_path / "back"
    pull(uri, back, only=("metrics.jsonl",))
    assert [p.name for p in back.rglob("*") if p.is_file()] == ["metrics.jsonl"]
    pull(uri, back)
    assert (back / "model" / "encoder" / "weights.bin").read_bytes() == b"\0" * 1000
    assert (back / "model" / "vocab.txt.gz").read_bytes() == b"\x1f\x8b not really gzip"
    # a pulled file is replaced whole even when its size did not change (same-shape weights, new values)
    (local / "model" / "encoder" / "weights.bin").write_bytes(b"\1" * 1000)
    push(local, uri, only=("model/",), last="raytron.json")
    pull(uri, back, only=("model/",))
    assert (back / "model" / "encoder" / "weights.bin").read_bytes() == b"\1" * 1000


def test_synced_run_pushes_changes_only_when_the_job_succeeds(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYTRON_CACHE", str(tmp_path / "cache"))
    output = s3_server.store_uri()
    cfg = load_config(None, [f"run.output_dir={output}", "run.name=demo"])
    push_seed = tmp_path / "seed"
    (push_seed / "model").mkdir(parents=True)
    (push_seed / "model" / "raytron.json").write_text("{}")
    push(push_seed, cfg.run_uri)
    with pytest.raises(RuntimeError), synced_run(cfg) as local:
        assert (local / "model" / "raytron.json").read_text() == "{}"  # pulled into this node's mirror
        (local / "eval").mkdir()
        (local / "eval" / "metrics.json").write_text("half")
        raise RuntimeError("the job failed")
    assert set(remote_files(cfg.run_uri)) == {"model/raytron.json"}  # nothing of the failed job reached storage
    with synced_run(cfg) as local:
        (local / "eval" / "metrics.json").write_text('{"accuracy": 0.9}')
    assert remote_files(cfg.run_uri)["eval/metrics.json"] == b'{"accuracy": 0.9}'


class RacingLocalFileSystem:
    """Arrow's local filesystem whose next `failures` listings raise what Arrow raises when the folder appears
    mid-call (tests/test_registry.py races the real one; this makes the race certain)."""

    def __init__(self, failures: int):
        self.local, self.failures, self.calls = pafs.LocalFileSystem(), failures, 0

    def get_file_info(self, selector):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise FileNotFoundError(f"[Errno 2] Cannot list directory '{selector.base_dir}'")
        return self.local.get_file_info(selector)


def test_a_listing_that_met_a_folder_being_made_is_taken_again(tmp_path):
    (tmp_path / "model" / "v0001").mkdir(parents=True)
    once = RacingLocalFileSystem(failures=1)
    assert [i.base_name for i in listing(once, str(tmp_path / "model"))] == ["v0001"] and once.calls == 2
    assert listing(pafs.LocalFileSystem(), str(tmp_path / "missing")) == []  # a missing folder is no error
    with pytest.raises(FileNotFoundError, match="Cannot list directory"):  # twice is not that race: it stands
        listing(RacingLocalFileSystem(failures=2), str(tmp_path / "model"))
