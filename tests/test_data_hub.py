"""The Hugging Face `datasets` path, offline: IMDb in the Hub's own layout under a data root, read with
`datasets.load_dataset`; val carved by a stable hash of the text, the same in every process."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from raytron.config import DataConfig
from raytron.data.imdb import read_raw_splits
from tests.conftest import DATA_ROOT, REPO

README = """---
configs:
- config_name: plain_text
  data_files:
  - split: train
    path: plain_text/train-*
  - split: test
    path: plain_text/test-*
---
"""

SPLIT_IDS = """
import json, sys
import ray
from raytron.config import DataConfig
from raytron.data.imdb import read_raw_splits
ray.init(address=sys.argv[2], logging_level="ERROR", log_to_driver=False)
raw = read_raw_splits(DataConfig(data_dir=sys.argv[1]))
print(json.dumps({split: sorted(int(i) for i in ds.to_pandas()["id"]) for split, ds in raw.items()}))
"""


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    """A data root without the jsonl file, holding stanfordnlp/imdb as the Hub lays it out (parquet shards +
    README configs): 300 real training reviews (one of them twice, as IMDb has duplicates) and 60 test reviews."""
    corpus = pd.read_json(DATA_ROOT / "imdb" / "imdb_50k.jsonl.gz", lines=True)
    corpus["label"] = (corpus["label"] == "pos").astype(int)
    corpus["split"] = corpus["orig_split"].where(corpus["orig_split"] == "test", "train")
    rows = {split: corpus[corpus["split"] == split].groupby("label").head(count)[["text", "label"]].to_dict("records")
            for split, count in (("train", 150), ("test", 30))}
    rows["train"].append(rows["train"][7])
    root = tmp_path_factory.mktemp("hub-root")
    folder = root / "stanfordnlp" / "imdb"
    (folder / "plain_text").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    for split, items in rows.items():
        pd.DataFrame(items).to_parquet(folder / "plain_text" / f"{split}-00000-of-00001.parquet", index=False)
    return root


def test_hub_layout_split_is_stable_disjoint_and_numbered(ray_cluster, hub_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the network
    raw = read_raw_splits(DataConfig(data_dir=str(hub_root)))
    frames = {split: ds.to_pandas() for split, ds in raw.items()}
    assert {split: len(f) for split, f in frames.items()}["test"] == 60
    assert len(frames["train"]) + len(frames["val"]) == 301 and 30 <= len(frames["val"]) <= 90
    ids = {split: set(f["id"]) for split, f in frames.items()}
    assert sum(len(f) for f in frames.values()) == len(set().union(*ids.values()))  # unique across the corpus
    assert not set(frames["train"]["text"]) & set(frames["val"]["text"])  # the duplicate review stays on one side
    assert set(frames["train"]["label"]) == {0, 1}
    # another process, with another string-hash salt, draws exactly the same split
    env = {**os.environ, "PYTHONHASHSEED": "12345", "HF_HUB_OFFLINE": "1"}
    address = ray_cluster.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-c", SPLIT_IDS, str(hub_root), address], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {split: sorted(int(i) for i in f["id"]) for split, f in frames.items()}
