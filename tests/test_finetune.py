"""A real fine-tune on IMDb rows with 2 Ray Train workers (DP=2), its evaluation, and its resume."""

import gzip
import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from raytron.config import load_config
from raytron.errors import RaytronError
from raytron.evaluate.sentiment import evaluate
from raytron.store import read_meta
from raytron.train.launcher import finetune
from raytron.train.tasks import make_task
from tests.conftest import DATA_ROOT, REPO, SENTIMENT_RUN, tiny_overrides
from tests.wandb_records import history_by_step, read_run

RECIPE = REPO / "configs" / "sentiment.yaml"
pytestmark = pytest.mark.slow


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(sentiment_run):
    return sentiment_run


def test_training_loss_falls(trained):
    _, run_dir = trained
    losses = [m["train/loss"] for m in read_metrics(run_dir) if "train/loss" in m]
    assert len(losses) == 9  # 48 rows / (8 rows x 2 replicas) = 3 steps x 3 epochs
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    # the last step's checkpoint is in the run's storage, both ranks' parts in it
    last = run_dir / "ray" / "dp2" / "checkpoint_step-0000009"
    assert {p.name for p in last.glob("manifest-*")} == {"manifest-rank00000.json", "manifest-rank00001.json"}


def test_model_folder_written(trained):
    _, run_dir = trained
    meta = read_meta(run_dir / "model")
    assert meta["task"] == "sentiment" and meta["labels"] == ["negative", "positive"]
    # the exported model is the epoch with the best validation accuracy (the first of equals)
    val = [m for m in read_metrics(run_dir) if "val/accuracy" in m]
    best = max(val, key=lambda m: (m["val/accuracy"], -m["step"]))
    assert meta["metrics"]["val_accuracy"] == best["val/accuracy"] and meta["metrics"]["step"] == best["step"]
    assert (run_dir / "model" / "encoder" / "model.safetensors").is_file()
    assert not (run_dir / "model.partial").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B recorded the run offline


def test_rerunning_a_finished_run_ends_with_its_model(trained, capsys):
    """The job command rerun on a finished run (as after `make demo`): nothing to train, exit 0, one line."""
    from raytron.jobs.finetune import main

    cfg, run_dir = trained
    overrides = tiny_overrides(run_dir.parent, **SENTIMENT_RUN)
    assert main(["--config", str(RECIPE), *overrides]) == 0
    assert capsys.readouterr().out.strip().endswith(f"already finished (run.resume=false trains again); best model in "
                                                    f"{run_dir / 'model'}")


def test_evaluation_writes_every_output(trained):
    from raytron.data.imdb import ReviewEncoder, clean_text
    from raytron.inference.classifier import SentimentPredictor

    cfg, run_dir = trained
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


def test_killed_worker_resumes_exactly_mid_epoch(ray_cluster, tmp_path):
    """One worker, dropout on, a checkpoint every 2 steps: SIGKILLed once step 9 is logged (mid-epoch 2), Ray
    Train restarts it from its last checkpoint (step 8, or 10 when the kill lands after that one was saved), and every step has the uninterrupted run's loss and LR *bit for bit*
    (CPU fp32): wrong if the weights, the optimizer, the schedule, the RNG streams (dropout) or the data position
    were not restored. Each step is in metrics.jsonl once: the metrics were restored with the checkpoint."""
    overrides = {"resources.num_workers": 1, "train.epochs": 3, "train.global_batch_size": 8,
                 "train.checkpoint_every": 2}
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides})))
    killed: list[int] = []
    watcher = threading.Thread(target=kill_training_worker_at, args=(tmp_path / "killed", 9, killed))
    watcher.start()
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "killed", **overrides})))
    watcher.join()
    assert len(killed) == 1, f"expected to kill the one training worker, killed {killed}"
    steps = [m["step"] for m in read_metrics(tmp_path / "killed") if "train/loss" in m]
    assert steps == list(range(1, 19))
    whole = {m["step"]: m for m in read_metrics(tmp_path / "whole") if "train/loss" in m}
    redone = {m["step"]: m for m in read_metrics(tmp_path / "killed") if "train/loss" in m}
    for step in range(1, 19):
        assert (redone[step]["train/loss"], redone[step]["train/lr"]) == (whole[step]["train/loss"], whole[step]["train/lr"]), step
    # the restarted rank 0 continued the W&B run it had started (its id is kept in the checkpoint)
    attempts = list((tmp_path / "killed" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and len({run.name.rsplit("-", 1)[-1] for run in attempts}) == 1, attempts
    # and W&B lost no step: the killed attempt's log missed its last rows (wandb-core writes a few seconds behind;
    # killed seconds after it started, it may hold no record at all), the restarted rank 0 logged the restored rows it
    # lacks, and none it holds (a step in both attempts can only be one trained again after the checkpoint at step 8,
    # or 10)
    first, again = read_run(sorted(attempts)[0], killed=True), read_run(sorted(attempts)[1])
    assert again.run.job_type == "finetune" and again.finished and (first.run is None or first.run.job_type == "finetune")
    logged_again = [row["_step"] for row in again.history]
    assert len(logged_again) == len(set(logged_again)), logged_again  # each step once in the restarted attempt
    for key in ("train/loss", "val/accuracy"):
        assert history_by_step([first, again], key) == {
            m["step"]: m[key] for m in read_metrics(tmp_path / "killed") if key in m}, key
    assert min({row["_step"] for row in first.history} & {row["_step"] for row in again.history}, default=19) > 8

    # one more epoch: the new steps follow the schedule of 4 epochs (linear decay to 0 over 24 steps), not the
    # checkpoint's (which ended at lr 0 at step 18)
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides, "train.epochs": 4})))
    more = {m["step"]: m["train/lr"] for m in read_metrics(tmp_path / "whole") if "train/loss" in m}
    assert sorted(more) == list(range(1, 25))
    for step in range(19, 25):
        assert more[step] == pytest.approx(3.0e-4 * (1 - step / 24), rel=1e-9), step

    # a change that would make the data position mean other batches is refused, before any worker starts
    with pytest.raises(RaytronError, match=r"trained with global_batch_size=8, but this run has global_batch_size=16"):
        finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides, "train.epochs": 5,
                                                                 "train.global_batch_size": 16})))
    # and so is one that would make the rows other tokens (found resuming a 256-token demo run at 384)
    with pytest.raises(RaytronError, match=r"trained with data.max_length=64, but this run has data.max_length=96"):
        finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides, "train.epochs": 5,
                                                                 "data.max_length": 96})))
    # and one whose optimizer state would not fit (a plain optimizer's checkpoint into the distributed one)
    with pytest.raises(RaytronError, match=r"trained with train.distributed_optimizer=False, but this run has "
                                           r"train.distributed_optimizer=True"):
        finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides, "train.epochs": 5,
                                                                 "train.distributed_optimizer": True})))


def test_a_run_stopped_mid_epoch_by_max_steps_goes_on_from_its_data_position(ray_cluster, tmp_path):
    """One worker, 3 steps an epoch, constant LR, dropout on. Stopped by train.max_steps=2 (mid-epoch 1), then rerun
    without it: the steps and their losses are the uninterrupted run's *bit for bit*, so the rerun trained epoch 1's
    third batch next (it had gone to epoch 2's batches, one of them empty, when the stop counted as an epoch). With
    log_every=2 each epoch's last step, which ends no window of 2, is logged too."""
    overrides = {"resources.num_workers": 1, "train.epochs": 2, "train.log_every": 2, "train.decay_style": "constant"}
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "whole", **overrides})))
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "split", **overrides, "train.max_steps": 2})))
    finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "split", **overrides})))
    whole, split = ([(m["step"], m["train/loss"]) for m in read_metrics(tmp_path / run) if "train/loss" in m]
                    for run in ("whole", "split"))
    assert [step for step, _ in whole] == [2, 3, 4, 6]  # windows 1-2, 3 (epoch 1's last), 4, 5-6
    assert split == whole
    validated = [m["step"] for m in read_metrics(tmp_path / "split") if "val/loss" in m]
    assert validated == [2, 3, 6]  # the stop at step 2 validated and checkpointed too


def test_resume_check_compares_what_the_checkpoint_recorded(tmp_path):
    """(No Ray.) The same settings resume, on another machine too (the pretrained model is named by its files'
    content, not by the folder it was pinned to); a checkpoint that predates the recorded settings is not refused
    for them; a TP change under the distributed optimizer, whose shards reshard across DP only, is."""
    from raytron.runtime import absolute_paths
    from raytron.train.checkpoint import run_identity
    from raytron.train.launcher import check_resumable

    cfg = absolute_paths(load_config(RECIPE, tiny_overrides(tmp_path)))
    saved = {"step": 4, **run_identity(cfg, 48)}
    assert saved["model.pretrained"].startswith("sha256:") and saved["data.max_length"] == 64
    elsewhere = tmp_path / "another-machine"
    shutil.copytree(cfg.model.pretrained, elsewhere)
    check_resumable(saved, cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": str(elsewhere)})}),
                    48, "checkpoint")
    before_this_session = {k: v for k, v in saved.items()
                           if k in ("step", "global_batch_size", "train_rows", "seed", "bucket_by_length")}
    check_resumable(before_this_session, cfg, 48, "checkpoint")
    with pytest.raises(RaytronError, match=r"train_rows=48, but this run has train_rows=40"):
        check_resumable(before_this_session, cfg, 40, "checkpoint")

    sharded = absolute_paths(load_config(RECIPE, tiny_overrides(tmp_path, **{"train.distributed_optimizer": True})))
    with pytest.raises(RaytronError, match=r"trained with parallel.tensor=2, but this run has parallel.tensor=1"):
        check_resumable({"step": 4, **run_identity(sharded, 48), "parallel.tensor": 2}, sharded, 48, "checkpoint")


def test_corrupt_checkpoint_is_a_clear_error_and_its_advice_works(trained):
    """A damaged shard names the checkpoint; deleting it, as the message advises, resumes from the one before."""
    _, run_dir = trained
    latest = sorted(p for p in (run_dir / "ray" / "dp2").glob("checkpoint_*") if p.is_dir())[-1]
    for shard in latest.glob("*.distcp"):
        shard.write_bytes(b"not a checkpoint")
    cfg = load_config(RECIPE, tiny_overrides(run_dir.parent, **{**SENTIMENT_RUN, "train.epochs": 5}))
    with pytest.raises(RaytronError) as error:
        finetune(cfg)
    message = str(error.value)
    assert f"checkpoint {latest} is corrupt" in message and "run.resume=false" in message
    shutil.rmtree(latest)
    finetune(cfg)
    steps = [m["step"] for m in read_metrics(run_dir) if "train/loss" in m]
    assert steps == list(range(1, 16))  # 3 steps x 5 epochs, each once: epoch 3 redone from the epoch-2 checkpoint



def test_labels_outside_the_classes_are_refused_before_training():
    """A label the head has no class for is named with its row (on a GPU, cross entropy would stop the worker
    with a device-side assert instead)."""
    task = make_task(load_config(RECIPE))
    task.check_rows({"label": np.array([0, 1, 1, 0])}, "train")
    with pytest.raises(RaytronError, match=r"val row 2 has label 2, not one of 0\.\.1"):
        task.check_rows({"label": np.array([0, 1, 2, -1])}, "val")


def test_splits_too_small_for_the_run_are_refused_before_any_worker_starts(ray_cluster, tmp_path):
    """Fewer training rows than one global batch, or fewer validation rows than data-parallel ranks: the driver
    says which setting to change before Ray Train starts a worker (the workers found the second only at the first
    validation, after an epoch of training, and Ray Train then retried the run once), and before a rerun with
    run.resume=false deletes the earlier run's metrics."""
    with pytest.raises(RaytronError, match=r"^12 training rows make no full step of train.global_batch_size=16: "):
        finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "few-train", "data.train_rows": 12})))
    earlier = tmp_path / "few-val" / "metrics.jsonl"
    earlier.parent.mkdir()
    earlier.write_text('{"step": 1, "train/loss": 0.5}\n')
    with pytest.raises(RaytronError, match=r"^1 validation rows for 2 data-parallel ranks: .*\(data.val_rows\)"):
        finetune(load_config(RECIPE, tiny_overrides(tmp_path, **{"run.name": "few-val", "data.val_rows": 1,
                                                                 "resources.num_workers": 2, "run.resume": "false"})))
    assert earlier.read_text() == '{"step": 1, "train/loss": 0.5}\n'
