"""`ray job submit` against a head node the test starts: the README's cluster path, end to end."""

import json
import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO, tiny_overrides
from tests.ray_nodes import RAY, node_env, start_node, stop_node
from tests.s3_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def head_node():
    """`ray start --head` in its own temp dir, token auth on, the dashboard on a free port (tests/test_cli.py starts
    its own head in the other `make test` lane)."""
    env = node_env()
    dashboard = free_port()
    temp_dir, _ = start_node(env, "--num-cpus=2", f"--dashboard-port={dashboard}", "--include-dashboard=true")
    try:
        yield env, RAY, f"http://127.0.0.1:{dashboard}"
    finally:
        stop_node(temp_dir)
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
