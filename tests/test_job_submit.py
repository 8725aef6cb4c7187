"""`ray job submit` against a head node the test starts: the README's cluster path, end to end."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, tiny_overrides

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head_node():
    """`ray start --head` in its own temp dir (short: Ray's socket paths are length-limited); token auth on."""
    temp_dir = tempfile.mkdtemp(prefix="rt")
    # the job's `python` is this interpreter (CI runs .venv/bin/python without activating the venv)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Free ports for everything that has a fixed default: the session's own cluster holds those.
    ports = [f"--{flag}={free_port()}" for flag in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    dashboard = free_port()  # not a fixed one: tests/test_cli.py starts its own head in the other `make test` lane
    try:
        started = subprocess.run([ray_bin, "start", "--head", *ports, "--num-cpus=2", f"--dashboard-port={dashboard}",
                                  "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                                 env=env, capture_output=True, text=True)
        assert started.returncode == 0, started.stdout + started.stderr
        yield env, ray_bin, f"http://127.0.0.1:{dashboard}"
    finally:  # also after a failed start, which can leave the dashboard running
        # Not `ray stop`: it would also stop the session's own local cluster (and its driver, pytest).
        ours = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
        for proc in ours:
            proc.kill()
        psutil.wait_procs(ours, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_runs_finetune(head_node, tmp_path):
    env, ray_bin, address = head_node
    runtime_env = {
        "excludes": [".venv", ".git", ".dev", "runs"],
        # the submitted copy of the code, not an installed one
        "env_vars": {"PYTHONPATH": "platform", "RAYTRON_DATA_DIR": env["RAYTRON_DATA_DIR"], "WANDB_MODE": "offline"},
    }
    command = [ray_bin, "job", "submit", "--address", address, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(runtime_env), "--",
               "python", "jobs/finetune.py", "--config", "configs/sentiment.yaml",
               *tiny_overrides(tmp_path, **{"train.epochs": 1, "run.name": "submitted"})]
    for _ in range(12):  # the head's job agent comes up a few seconds after `ray start` returns
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert (tmp_path / "submitted" / "model" / "raytron.json").is_file()
    shutil.rmtree(tmp_path / "submitted", ignore_errors=True)
