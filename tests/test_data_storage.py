"""A data root at a URI: a corpus slice on a real S3-compatible server (moto on 127.0.0.1) read through pyarrow.fs by
Ray Data's reader, by the preprocess job as a user runs it; a data root that does not exist is an error naming it."""

import gzip
import io
import json
import subprocess
import sys

import pytest

from raytron.data.cnn_dailymail import read_splits
from raytron.data.sources import data_root
from raytron.errors import RaytronError
from tests.conftest import DATA_ROOT, REPO


def upload(s3, root: str, relative: str, lines: list[str]) -> None:
    fs, base = s3.filesystem(), root.split("://", 1)[1].split("?", 1)[0]
    buffer = io.BytesIO()
    with gzip.open(buffer, "wt") as out:
        out.write("".join(lines))
    with fs.open_output_stream(f"{base}/{relative}", compression=None) as sink:  # pyarrow would gzip a .gz again
        sink.write(buffer.getvalue())


@pytest.fixture(scope="module")
def s3_root(s3_server):
    """A data root on the S3 server holding IMDb's first 30 train, 10 val and 10 test reviews and all of CNN/DM."""
    root = s3_server.store_uri()
    counts, kept = {"train": 30, "val": 10, "test": 10}, []
    with gzip.open(DATA_ROOT / "imdb" / "imdb_50k.jsonl.gz", "rt") as lines:
        for line in lines:
            split = json.loads(line)["split"]
            if counts[split]:
                counts[split] -= 1
                kept.append(line)
    upload(s3_server, root, "imdb/imdb_50k.jsonl.gz", kept)
    with gzip.open(DATA_ROOT / "cnn_dailymail" / "cnn_dailymail_3.0.0_validation_800.jsonl.gz", "rt") as lines:
        upload(s3_server, root, "cnn_dailymail/cnn_dailymail_3.0.0_validation_800.jsonl.gz", list(lines))
    return root


def test_ray_data_reads_a_corpus_from_s3(ray_cluster, s3_root):
    assert data_root(s3_root) == s3_root
    remote = {split: ds.to_pandas() for split, ds in read_splits(s3_root).items()}
    local = {split: ds.to_pandas() for split, ds in read_splits(str(DATA_ROOT)).items()}
    assert {s: len(f) for s, f in remote.items()} == {"train": 595, "val": 107, "test": 98}
    assert all(remote[s].equals(local[s]) for s in remote)


def job(*args: str, cache) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "RAYTRON_CACHE": str(cache)}
    return subprocess.run([sys.executable, "jobs/preprocess.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def test_preprocess_reads_the_data_root_from_s3_and_caches(s3_root, tmp_path):
    """`python jobs/preprocess.py --config configs/sentiment.yaml data.data_dir=s3://...` tokenizes the uploaded slice
    (not the 20,000 training reviews of $RAYTRON_DATA_DIR); the rerun hits the cache."""
    args = ["--config", "configs/sentiment.yaml", f"data.data_dir={s3_root}", "data.max_length=64", "data.head_tokens=16",
            "data.preprocess_actors=1"]
    first = job(*args, cache=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "imdb: train 30 rows, val 10 rows in the tokenized-split cache" in first.stdout
    assert "tokenized-split cache miss" in first.stderr and "s3://" in first.stderr
    again = job(*args, cache=tmp_path)
    assert again.returncode == 0 and again.stderr.count("tokenized-split cache hit") == 2, again.stderr[-3000:]


@pytest.mark.parametrize("where", ["/nonexistent/data", "s3-missing"])
def test_a_data_root_that_does_not_exist_is_named_never_replaced(s3_server, tmp_path, where):
    """Issue 17: data.data_dir=/nonexistent once trained on $RAYTRON_DATA_DIR instead; it must fail, naming it."""
    where = s3_server.store_uri() if where == "s3-missing" else where
    with pytest.raises(RaytronError, match="is not a folder"):
        data_root(where)
    done = job("--config", "configs/sentiment.yaml", f"data.data_dir={where}", cache=tmp_path)
    shown = where.split("?")[0]
    assert done.returncode != 0 and f"data.data_dir={shown}" in done.stderr and "Traceback" not in done.stderr
