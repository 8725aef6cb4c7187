"""W&B as users see it, read back from the offline runs' own files: metrics, system metrics, the interactive
confusion matrix, ROUGE chart, artifacts with lineage (dataset -> model -> evaluation), resume by id, groups."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from raytron.config import load_config
from tests.conftest import REPO, SENTIMENT_RUN
from tests.wandb_records import history_by_step, manifest_paths, metadata, offline_runs
from tests.wandb_server import WandbServer

NAME = SENTIMENT_RUN["run.name"]


@pytest.fixture(scope="module")
def evaluated(sentiment_run):
    """The shared 2-worker IMDb fine-tune (conftest.sentiment_run: 3 epochs of 48 reviews, this module's copy), then
    its evaluation on 40 test reviews."""
    from raytron.evaluate.sentiment import evaluate

    cfg, run_dir = sentiment_run
    return cfg, run_dir, evaluate(cfg)


def test_finetune_run_holds_metrics_system_metrics_and_the_model_artifact(evaluated):
    cfg, run_dir, _ = evaluated
    attempts = offline_runs(run_dir, "finetune")  # one, or more if Ray Train restarted the workers
    run = attempts[-1]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("train/loss", "val/accuracy"):
        assert history_by_step(attempts, key) == {m["step"]: m[key] for m in logged if key in m}, (key, attempts)
    assert {a.run.run_id for a in attempts} == {run.run.run_id}
    assert run.run.run_group == NAME and run.config["train"]["lr"] == cfg.train.lr
    assert run.stats and "proc.cpu.threads" in run.stats[0]  # system metrics are on
    model = run.artifacts[f"{NAME}-model"]
    assert model.type == "model"
    files = {p.relative_to(run_dir / "model").as_posix() for p in (run_dir / "model").rglob("*") if p.is_file()}
    assert set(manifest_paths(model)) == files and "encoder/model.safetensors" in files
    (dataset,) = metadata(model)["inputs"]
    assert dataset["name"] == "imdb" and dataset["type"] == "dataset" and len(dataset["digest"]) == 32


def test_evaluate_run_holds_the_confusion_matrix_and_the_evaluation_with_its_lineage(evaluated):
    _, run_dir, result = evaluated
    finetuned = offline_runs(run_dir, "finetune")[-1]
    (run,) = offline_runs(run_dir, "evaluate")
    assert run.values("test/accuracy") == [result["accuracy"]]
    chart = run.config["_wandb/visualize/test/confusion_matrix"]["panel_config"]
    assert chart["panelDefId"] == "wandb/confusion_matrix/v1"
    (table_path,) = run.values("test/confusion_matrix_table/path")
    table = pd.DataFrame(**json.loads((run.folder / "files" / table_path).read_text()))
    counts = table.pivot(index="Actual", columns="Predicted", values="nPredictions").loc[
        ["negative", "positive"], ["negative", "positive"]]
    assert counts.to_numpy().tolist() == result["confusion_matrix"]  # the evaluation's own matrix, same cells
    evaluation = run.artifacts[f"{NAME}-eval"]
    assert evaluation.type == "evaluation" and "metrics.json" in manifest_paths(evaluation)
    dataset, model = metadata(evaluation)["inputs"]
    model_artifact = finetuned.artifacts[f"{NAME}-model"]
    assert (model["name"], model["type"], model["digest"]) == (f"{NAME}-model", "model", model_artifact.digest)
    assert dataset == metadata(model_artifact)["inputs"][0]  # the same corpus file, the same digest


def test_rouge_chart_and_an_evaluation_without_a_model(tmp_path):
    """Baselines alone (no fine-tuned decoder): the chart's error bars are the CIs, the corpus the one input."""
    from raytron.evaluate.summarization import log_to_wandb

    cfg = load_config(REPO / "configs" / "summarization.yaml", [f"run.output_dir={tmp_path}", "run.name=rouge"])
    table = {"lead-3": {m: {"mean": 30.0 + i, "low": 28.0 + i, "high": 33.0 + i}
                        for i, m in enumerate(("rouge1", "rouge2", "rougeLsum"))}}
    out = cfg.run_dir / "eval"
    out.mkdir(parents=True)
    (out / "rouge.json").write_text(json.dumps({"table": table}))
    samples = pd.DataFrame({"id": ["a"], "article": ["text"], "reference": ["ref"], "lead-3": ["text"]})
    log_to_wandb(cfg, cfg.run_dir / "model", out, table, samples)
    (run,) = offline_runs(cfg.run_dir, "evaluate")
    (chart_path,) = run.values("test/rouge_chart/path")
    (bars,) = json.loads((run.folder / "files" / chart_path).read_text())["data"]
    assert bars["y"] == [30.0, 31.0, 32.0]
    assert bars["error_y"]["array"] == [3.0] * 3 and bars["error_y"]["arrayminus"] == [2.0] * 3
    assert [i["type"] for i in metadata(run.artifacts["rouge-eval"])["inputs"]] == ["dataset"]


def test_start_run_resumes_a_run_id_and_takes_a_group(tmp_path):
    from raytron.tracking import start_run

    cfg = load_config(REPO / "configs" / "sentiment.yaml", [f"run.output_dir={tmp_path}", "run.name=trial"])
    first = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", {}, group="search-7")
    first.log({"train/loss": 1.0})
    first.finish()
    time.sleep(1.1)  # offline run folders are named by the second: a resume comes later than this
    again = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", {}, run_id=first.id, group="search-7")
    again.log({"train/loss": 0.5})
    again.finish()
    runs = offline_runs(cfg.run_dir, "finetune")
    assert [r.run.run_id for r in runs] == [first.id, first.id] and {r.run.run_group for r in runs} == {"search-7"}
    assert [r.run.resume for r in runs] == [False, True] and runs[1].values("train/loss") == [0.5]


def test_with_an_api_key_the_evaluation_logs_online_with_its_lineage(evaluated, tmp_path, monkeypatch):
    """$WANDB_API_KEY set and no $WANDB_MODE: the run is online. Against a W&B stand-in on 127.0.0.1 speaking W&B's
    GraphQL, file-stream and upload protocol (tests/wandb_server.py: W&B's cloud is unreachable from CI), the
    evaluation's metrics, its confusion-matrix table, the evaluation artifact (committed, its files uploaded) and its
    two inputs, used by the run (W&B's lineage graph: corpus -> model -> evaluation), all reach the server."""

    import wandb

    from raytron.evaluate.sentiment import log_to_wandb
    from raytron.store import read_meta
    from raytron.tracking import wandb_mode

    cfg, run_dir, result = evaluated
    online = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(tmp_path)})})
    for folder in ("model", "eval"):  # a copy: the offline tests above read run_dir's own W&B runs
        shutil.copytree(run_dir / folder, online.run_dir / folder)
    with WandbServer() as server:
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.setenv("WANDB_API_KEY", secrets.token_hex(20))  # the SDK checks a key's form: 40 characters
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        assert wandb_mode(online.wandb) == "online"
        wandb.teardown()  # this process's W&B setup read the environment of the offline runs before: read it again
        try:
            log_to_wandb(online, online.run_dir / "model", online.run_dir / "eval", result,
                         read_meta(online.run_dir / "model")["labels"])
        finally:
            wandb.teardown()
    (run,) = server.runs
    assert server.exit_codes == {run: 0}
    assert server.runs[run]["displayName"] == f"{NAME}-evaluate" and server.runs[run]["jobType"] == "evaluate"
    assert [row["test/accuracy"] for row in server.history[run] if "test/accuracy" in row] == [result["accuracy"]]
    assert server.summary[run]["test/confusion_matrix_table"]["_type"] == "table-file"
    committed = {a["name"]: a for a in server.artifacts.values() if a["state"] == "COMMITTED"}
    assert {name: a["type"] for name, a in committed.items() if a["type"] != "run_table"} == {
        "imdb": "dataset", f"{NAME}-model": "model", f"{NAME}-eval": "evaluation"}  # (the tables are run_table ones)
    assert committed[f"{NAME}-eval"]["run"] == run  # logged (an output of this run) ...
    assert sorted(name for user, name in server.used if user == run) == sorted(["imdb", f"{NAME}-model"])  # ... from inputs
    evaluation = next(i for i, a in server.artifacts.items() if a["name"] == f"{NAME}-eval")
    assert "metrics.json" in json.loads(server.uploads[f"manifests/{evaluation}"])["contents"]
    uploaded = {path.rsplit("/", 1)[-1] for path in server.uploads if path.startswith("artifacts/")}
    assert "metrics.json" in uploaded and "model.safetensors" in uploaded


def test_wandb_sync_uploads_the_offline_runs_as_the_readme_says(evaluated, tmp_path):
    """README.md's `wandb sync` loop, as written, from the folder holding `runs/`, against the W&B stand-in: every
    finished run arrives (the fine-tune's and the evaluation's) with its logged values and artifacts, also when Ray
    Train killed a first attempt (CI: its log had no whole record, and one `wandb sync` of all runs uploaded none)."""

    _, run_dir, result = evaluated
    shutil.copytree(run_dir / "wandb", tmp_path / "runs" / run_dir.name / "wandb")  # sync marks what it uploaded
    finetuned = offline_runs(run_dir, "finetune")
    finished = {run.run.run_id: run.run.job_type for run in finetuned + offline_runs(run_dir, "evaluate")
                if run.finished}
    command = next(line for line in (REPO / "README.md").read_text().splitlines() if "wandb sync" in line)
    command = command[command.index("`for run in") + 1: command.index("done`") + 4]
    with WandbServer() as server:
        env = {**os.environ, "WANDB_API_KEY": secrets.token_hex(20), "WANDB_BASE_URL": server.url,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the venv, as if activated
        env.pop("WANDB_MODE", None)
        done = subprocess.run(command, shell=True, executable="/bin/bash", cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # every finished run arrived, finished; one fine-tune and one evaluation
    assert sorted(finished.values()) == ["evaluate", "finetune"]
    assert {name: server.runs[name]["jobType"] for name in finished if name in server.runs} == finished, done.stdout
    assert {name: server.exit_codes.get(name) for name in finished} == {name: 0 for name in finished}
    by_job = {job: name for name, job in finished.items()}
    history = {job: server.history[name] for job, name in by_job.items()}
    attempts = [run for run in finetuned if run.run.run_id == by_job["finetune"]]  # a resumed run: its attempts
    assert ({row["_step"]: row["train/loss"] for row in history["finetune"] if "train/loss" in row}
            == history_by_step(attempts, "train/loss"))
    assert [row["test/accuracy"] for row in history["evaluate"] if "test/accuracy" in row] == [result["accuracy"]]
    # offline runs cannot record uses: the inputs are in each artifact's metadata (the tests above), not the graph
    committed = {a["name"]: a["type"] for a in server.artifacts.values() if a["state"] == "COMMITTED"}
    assert {name: kind for name, kind in committed.items() if kind != "run_table"} == {
        f"{NAME}-model": "model", f"{NAME}-eval": "evaluation"}


def test_finish_run_returns_with_the_log_written_and_a_cut_or_damaged_log_yields_the_steps_before(tmp_path):
    """finish_run returns once the offline log holds its exit record (`run.finish()` returns with it still empty, and
    a Ray worker is killed right after its loop). raytron.wandb_log on that real log of 1,000 steps (about 4 blocks
    of 32 KiB, so records cross blocks): whole, every step; cut in half (a killed writer), or with one byte flipped,
    the steps before that point only."""
    from raytron.tracking import finish_run, start_run
    from raytron.wandb_log import history_steps, read_records

    cfg = load_config(REPO / "configs" / "sentiment.yaml", [f"run.output_dir={tmp_path}", "run.name=cut"])
    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "finetune", {})
    for step in range(1, 1001):
        run.log({"train/loss": 1.0 / step, "train/lr": 3.0e-4}, step=step)
    log = Path(run.settings.sync_file)
    finish_run(run)
    assert [r.WhichOneof("record_type") for r in read_records(log)][-1] == "exit"  # at once, no waiting here
    data = log.read_bytes()
    assert len(data) > 3 * 32 * 1024
    whole, cut, damaged = tmp_path / "whole.wandb", tmp_path / "cut.wandb", tmp_path / "damaged.wandb"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) // 2])
    damaged.write_bytes(data[: len(data) * 3 // 4] + bytes([data[len(data) * 3 // 4] ^ 0xFF]) + data[len(data) * 3 // 4 + 1:])
    assert history_steps(whole) == set(range(1, 1001))
    for broken in (cut, damaged):
        steps = history_steps(broken)
        assert 100 < len(steps) < 1000 and steps == set(range(1, len(steps) + 1)), broken.name
