"""A real fine-tune on IMDb rows with 2 Ray Train workers (DP=2), its evaluation, and its resume."""

import gzip
import json
import os
import signal
import threading
import time

import pandas as pd
import pytest

from raytron.config import load_config
from raytron.evaluate.sentiment import evaluate
from raytron.store import read_meta
from raytron.train.launcher import finetune
from tests.conftest import DATA_ROOT, REPO, tiny_overrides

RECIPE = REPO / "configs" / "sentiment.yaml"
pytestmark = pytest.mark.slow


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(sentiment_run):
    return sentiment_run


def test_training_loss_falls(trained):
    _, run_dir, result = trained
    losses = [m["train/loss"] for m in read_metrics(run_dir) if "train/loss" in m]
    assert len(losses) == 9  # 48 rows / (8 rows x 2 replicas) = 3 steps x 3 epochs
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert result.checkpoint is not None


def test_model_folder_written(trained):
    _, run_dir, _ = trained
    meta = read_meta(run_dir / "model")
    assert meta["task"] == "sentiment" and meta["labels"] == ["negative", "positive"]
    # the exported model is the epoch with the best validation accuracy (the first of equals)
    val = [m for m in read_metrics(run_dir) if "val/accuracy" in m]
    best = max(val, key=lambda m: (m["val/accuracy"], -m["step"]))
    assert meta["metrics"]["val_accuracy"] == best["val/accuracy"] and meta["metrics"]["step"] == best["step"]
    assert (run_dir / "model" / "encoder" / "model.safetensors").is_file()
    assert not (run_dir / "model.partial").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B recorded the run offline


def test_evaluation_writes_every_output(trained):
    from raytron.data.imdb import ReviewEncoder, clean_text
    from raytron.inference.classifier import SentimentPredictor

    cfg, run_dir, _ = trained
    result = evaluate(cfg)
    out = run_dir / "eval"
    for name in ("metrics.json", "confusion_matrix.png", "errors.md", "errors.jsonl", "predictions.parquet"):
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    predictions = pd.read_parquet(out / "predictions.parquet")
    # the scored rows are real IMDb *test* reviews with their true labels
    with gzip.open(DATA_ROOT / "imdb" / "imdb_50k.jsonl.gz", "rt") as corpus:
        test = {(row["id"], clean_text(row["text"])): row for row in map(json.loads, corpus) if row["split"] == "test"}
    assert len(predictions) == result["rows"] == 40
    for row in predictions.itertuples():
        assert int(test[row.id, row.text]["label"] == "pos") == row.label
    # the report's figures come from those predictions; each prediction is the model's own output
    matrix = result["confusion_matrix"]
    for true in (0, 1):
        for predicted in (0, 1):
            assert matrix[true][predicted] == ((predictions.label == true) & (predictions.prediction == predicted)).sum()
    sample = predictions.head(4)
    raw = pd.DataFrame({"id": sample.id, "label": sample.label,
                        "text": [test[key]["text"] for key in zip(sample.id, sample.text, strict=True)]})
    meta = read_meta(run_dir / "model")
    direct = SentimentPredictor(run_dir / "model")(
        ReviewEncoder(str(run_dir / "model" / "encoder"), meta["max_length"], meta["head_tokens"])(raw))
    assert direct["prob_positive"] == pytest.approx(sample.prob_positive.to_numpy(), abs=1e-5)


def kill_training_worker_at(run_dir, step: int, killed: list) -> None:
    """SIGKILL the Ray Train worker once `step` is in the run's metrics (a pod lost mid-epoch)."""
    import psutil
    import ray

    raylet_pid = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.is_file() and any(json.loads(line).get("step") == step and "train/loss" in json.loads(line)
                                     for line in metrics.read_text().splitlines()):
            # only this test's cluster: other test modules run their own Ray clusters beside this one
            for process in psutil.Process(raylet_pid).children(recursive=True):
                if any("RayTrainWorker" in part for part in process.cmdline()):
                    os.kill(process.pid, signal.SIGKILL)  # Ray titles actor processes ray::<Class>...
                    killed.append(process.pid)
            return
        time.sleep(0.1)


def test_killed_worker_resumes_with_restored_weights_and_schedule(ray_cluster, tmp_path):
    """One worker (a deterministic data order), no dropout: after a SIGKILL in epoch 2, Ray Train restarts
    from the epoch-1 checkpoint, and every redone step has the uninterrupted run's loss and LR. Wrong if
    the weights, the optimizer or the LR schedule were not restored (or restored from the wrong step)."""
    overrides = {"resources.num_workers": 1, "train.epochs": 3, "train.global_batch_size": 8,
                 "model.dropout": 0.0, "model.head_dropout": 0.0}
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides})))
    killed: list[int] = []
    watcher = threading.Thread(target=kill_training_worker_at, args=(tmp_path / "killed", 8, killed))
    watcher.start()
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "killed", **overrides})))
    watcher.join()
    assert len(killed) == 1, f"expected to kill the one training worker, killed {killed}"
    whole = {m["step"]: m for m in read_metrics(tmp_path / "whole") if "train/loss" in m}
    redone = {m["step"]: m for m in read_metrics(tmp_path / "killed") if "train/loss" in m}  # last wins
    steps = [m["step"] for m in read_metrics(tmp_path / "killed") if "train/loss" in m]
    assert steps.count(7) == 2 and steps.count(6) == 1  # epoch 2 (steps 7-12) ran twice, epoch 1 once
    assert sorted(whole) == sorted(redone) == list(range(1, 19))
    for step in range(1, 19):
        assert redone[step]["train/lr"] == pytest.approx(whole[step]["train/lr"], rel=1e-12), step
        assert redone[step]["train/loss"] == pytest.approx(whole[step]["train/loss"], abs=1e-6), step


def test_corrupt_checkpoint_is_a_clear_error(trained):
    from raytron.errors import RaytronError

    _, run_dir, _ = trained
    latest = sorted(p for p in (run_dir / "ray" / "dp2").glob("checkpoint_*") if p.is_dir())[-1]
    for shard in latest.glob("*.distcp"):
        shard.write_bytes(b"not a checkpoint")
    cfg = load_config(RECIPE, tiny_overrides(run_dir.parent, **{"train.epochs": 5, "run.name": "dp2"}))
    with pytest.raises(RaytronError) as error:
        finetune(cfg)
    message = str(error.value)
    assert f"checkpoint {latest} is corrupt" in message and "run.resume=false" in message
