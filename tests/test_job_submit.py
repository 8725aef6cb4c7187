"""`ray job submit` against a head node the test starts: the README's cluster path, end to end."""

import json
import re
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


def readme_runtime_env() -> dict:
    """The `--runtime-env-json` of the README's `ray job submit` command."""
    found = re.search(r"ray job submit .*?--runtime-env-json '([^']+)'", (REPO / "README.md").read_text(), re.S)
    assert found, "README.md has no `ray job submit ... --runtime-env-json '...'` command"
    return json.loads(found.group(1))


def test_readme_submit_excludes_what_raytron_submit_excludes():
    """What a checkout may hold besides the code (runs, W&B folders, a model store of published models: hundreds
    of MB, over the job server's 100 MiB upload limit) stays out of the README's upload as out of `raytron submit`'s."""
    from raytron.submit import EXCLUDES

    assert readme_runtime_env()["excludes"] == EXCLUDES


def test_job_submit_runs_finetune(head_node, tmp_path):
    env, ray_bin, address = head_node
    runtime_env = readme_runtime_env()  # the README's: its excludes, the submitted copy of the code on PYTHONPATH
    runtime_env["env_vars"] |= {"RAYTRON_DATA_DIR": env["RAYTRON_DATA_DIR"], "WANDB_MODE": "offline"}
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
