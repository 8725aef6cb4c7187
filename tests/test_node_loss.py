"""Run state that survives nodes: two Ray nodes on 127.0.0.1 (own temp dirs, own RAYTRON_CACHE, no shared
folder), run storage and model store on a real S3-compatible server (moto), a training worker SIGKILLed
mid-epoch the moment a checkpoint's save returned. Ray Train restarts the group from that checkpoint, not an earlier
one (training waits until Ray Train has registered each checkpoint; without the wait the kill lands before the
controller's next poll registers it), and every step's loss equals the uninterrupted run's, bit for bit (CPU
fp32)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest

from raytron.config import load_config
from raytron.registry import resolve, versions
from raytron.storage import filesystem, join
from raytron.train.launcher import finetune
from tests.conftest import REPO, stop_ray, tiny_overrides
from tests.ray_nodes import node_env, start_node, stop_node

RECIPE = REPO / "configs" / "sentiment.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(s3_server, tmp_path_factory):
    """Two raylets on 127.0.0.1, each its own temp dir and RAYTRON_CACHE (the driver has a third cache): node b's
    cache (which tells its worker processes apart) and their temp dirs (the workers' logs)."""
    import ray

    root = tmp_path_factory.mktemp("caches")
    started = []
    try:
        # token auth off: this driver process imported Ray (and read RAY_AUTH_MODE) long before
        node = {"RAY_AUTH_MODE": "disabled"}
        head, port = start_node(node_env(**node, RAYTRON_CACHE=str(root / "a")), "--num-cpus=2",
                                "--include-dashboard=false")
        started.append(head)
        started.append(start_node(node_env(**node, RAYTRON_CACHE=str(root / "b")), "--num-cpus=2", join=port)[0])
        os.environ["RAYTRON_CACHE"] = str(root / "driver")
        ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING", log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield {"node_b_cache": root / "b", "temp_dirs": started}
    finally:
        stop_ray(ray)
        for temp_dir in started:
            stop_node(temp_dir)


def stored_metrics(fs: pafs.FileSystem, base: str) -> list[dict]:
    """The records of a run's metrics.jsonl in its storage (what rank 0 pushed last)."""
    with fs.open_input_stream(f"{base}/metrics.jsonl") as source:
        return [json.loads(line) for line in source.read().decode().splitlines()]


def kill_worker_on_node_b_at(node_b_cache: Path, run_uri: str, step: int, killed: list) -> None:
    """SIGKILL node b's training worker as soon as the run's metrics.jsonl in its storage holds `step`: rank 0 pushes
    it there once the checkpoint of that step is saved (`raytron.train.loop.save_checkpoint`)."""
    fs, base = filesystem(run_uri)
    deadline = time.time() + 900
    while time.time() < deadline:
        try:
            rows = stored_metrics(fs, base)
        except OSError:  # not pushed yet
            rows = []
        if any(row.get("step") == step and "train/loss" in row for row in rows):
            for process in psutil.process_iter(["cmdline"]):
                try:
                    if (any("RayTrainWorker" in part for part in process.info["cmdline"] or [])
                            and process.environ().get("RAYTRON_CACHE") == str(node_b_cache)):
                        os.kill(process.pid, signal.SIGKILL)
                        killed.append(process.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            return
        time.sleep(0.05)


def fine_tune(output: str, name: str, store: str, **extra) -> dict:
    """A 2-worker fine-tune with one worker per node, its run on S3; the per-step losses from the S3 copy."""
    overrides = {"run.output_dir": output, "run.name": name, "run.store": store, "resources.num_workers": 2,
                 "resources.placement_strategy": "STRICT_SPREAD", "train.checkpoint_every": 2, **extra}
    cfg = load_config(RECIPE, tiny_overrides(Path("unused"), **overrides))
    finetune(cfg)
    rows = stored_metrics(*filesystem(cfg.run_uri))
    steps = [row["step"] for row in rows if "train/loss" in row]
    assert steps == sorted(set(steps)), f"a step logged twice: {steps}"
    return {"cfg": cfg, "losses": {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}}


@pytest.mark.parametrize("layout", [
    {"train.global_batch_size": 16, "train.epochs": 2},  # DP=2: 3 steps an epoch, killed in epoch 2
    {"parallel.tensor": 2, "train.global_batch_size": 8, "train.epochs": 1},  # TP=2: 6 steps
], ids=["dp2", "tp2"])
def test_worker_lost_mid_epoch_resumes_exactly(nodes, s3_server, layout):
    output, store = s3_server.store_uri(), s3_server.store_uri()
    whole = fine_tune(output, "whole", store, **layout)
    killed: list[int] = []
    watcher = threading.Thread(target=kill_worker_on_node_b_at,
                               args=(nodes["node_b_cache"], join(output, "killed"), 4, killed))
    watcher.start()
    resumed = fine_tune(output, "killed", store, **layout)
    watcher.join()
    assert len(killed) == 1, f"expected to kill node b's training worker, killed {killed}"
    _, base = filesystem(resumed["cfg"].run_uri)  # this run's resumes only (the module's runs share the nodes)
    logs = [log.read_text(errors="replace") for temp_dir in nodes["temp_dirs"]
            for log in Path(temp_dir).glob("session_*/logs/worker-*")]
    resumed_at = [int(step) for text in logs for step, source in re.findall(r"resumed at step (\d+) .* from (\S+)", text)
                  if base in source]
    assert resumed_at and min(resumed_at) >= 4, f"killed after step 4's checkpoint, resumed at {resumed_at}, not from it"
    assert not any("has not registered" in text for text in logs), "a checkpoint's registration wait timed out"
    assert sorted(whole["losses"]) == sorted(resumed["losses"]) == list(range(1, 7))
    assert resumed["losses"] == whole["losses"]  # bit for bit: weights, optimizer, RNG and data position restored

    # both ranks' parts are in the newest checkpoint on S3, and the model and store live there too
    cfg = resumed["cfg"]
    fs, base = filesystem(cfg.run_uri)
    runs = fs.get_file_info(pafs.FileSelector(f"{base}/ray/killed"))
    newest = sorted(i.path for i in runs if i.base_name.startswith("checkpoint_step-"))[-1]
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(newest))}
    assert {"manifest-rank00000.json", "manifest-rank00001.json", "rng-rank00000.pt", "rng-rank00001.pt",
            "trainer_state.json", "metrics.jsonl"} <= names
    assert fs.get_file_info(f"{base}/model/raytron.json").type == pafs.FileType.File
    folder, version = resolve(store, "sentiment")
    assert json.loads((folder / "raytron.json").read_text())["task"] == "sentiment"
    assert versions(store, "sentiment")[-1] == version
