"""`raytron submit`: a job on a running Ray cluster through Ray's Job Submission SDK, its log followed to the end."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

from raytron.config import load_config
from raytron.errors import RaytronError

EXCLUDES = [".venv", ".git", ".dev", "runs", "wandb", "model-store"]
"""Never uploaded with the working directory: environments, history, outputs."""
PASSED_ENV = ("RAYTRON_DATA_DIR", "WANDB_MODE")
"""Settings (never secrets) passed from this shell to the job when set; the cluster's own env gives the rest."""


def runtime_env(root: Path) -> dict:
    """The project tree as the job's working directory, its code first on the path."""
    env = {"PYTHONPATH": "platform", **{key: os.environ[key] for key in PASSED_ENV if key in os.environ}}
    return {"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env}


async def follow(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def submit(job: str, config: str, job_args: list[str], address: str, root: Path = Path(".")) -> int:
    """Submit `python jobs/<job>.py --config <config> <job_args>`, print its id and log; 0 when it succeeded."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    if not (root / "jobs" / f"{job}.py").is_file():
        raise RaytronError(f"{root.resolve()} has no jobs/{job}.py: run raytron submit from the project's root")
    load_config(config, [arg for arg in job_args if "=" in arg and not arg.startswith("-")])  # bad recipes stop here
    entrypoint = shlex.join(["python", f"jobs/{job}.py", "--config", config, *job_args])
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RaytronError(f"cannot reach a Ray cluster at {address}: {error} (start one with `ray start --head`; "
                           "Ray 2.60 clusters need RAY_AUTH_MODE=token here)") from None
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(root))
    print(f"submitted {job_id}: {entrypoint}", flush=True)
    asyncio.run(follow(client, job_id))
    final = client.get_job_status(job_id)
    print(f"job {job_id} {final.value.lower()}")
    return 0 if final == JobStatus.SUCCEEDED else 1
