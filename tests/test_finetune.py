"""A real fine-tune on IMDb rows with 2 Ray Train workers (DP=2), its evaluation, and its resume."""

import json

import pytest

from raytron.config import load_config
from raytron.evaluate.sentiment import evaluate
from raytron.store import read_meta
from raytron.train.launcher import finetune
from tests.conftest import REPO, tiny_overrides

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
    assert 0.0 <= meta["metrics"]["val_accuracy"] <= 1.0
    assert (run_dir / "model" / "encoder" / "model.safetensors").is_file()
    assert not (run_dir / "model.partial").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B recorded the run offline


def test_evaluation_writes_every_output(trained):
    cfg, run_dir, _ = trained
    result = evaluate(cfg)
    out = run_dir / "eval"
    for name in ("metrics.json", "confusion_matrix.png", "errors.md", "errors.jsonl", "predictions.parquet"):
        assert (out / name).is_file(), name
    matrix = result["confusion_matrix"]
    assert sum(map(sum, matrix)) == result["rows"] == 40
    assert result["accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / 40)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_from_last_checkpoint(trained):
    _, run_dir, _ = trained
    before = read_metrics(run_dir)
    cfg = load_config(RECIPE, tiny_overrides(run_dir.parent, **{"train.epochs": 4, "run.name": "dp2"}))
    finetune(cfg)
    new_steps = [m["step"] for m in read_metrics(run_dir)[len(before):] if "train/loss" in m]
    assert new_steps == [10, 11, 12]  # epoch 4 only: steps 1-9 came back from the checkpoint


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
