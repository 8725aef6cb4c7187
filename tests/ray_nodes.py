"""Ray nodes started with `ray start` beside the tests' own cluster: free ports, short temp dirs, token auth."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from tests.s3_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
FIXED_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")
"""Ports `ray start` otherwise takes at fixed defaults, which another cluster on this machine may hold."""


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a node's processes (and so of its workers): token auth on, this interpreter's `python`."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}


def start_node(env: dict[str, str], *flags: str, join: int | None = None) -> tuple[Path, int]:
    """`ray start` of a head (or, with `join`, of a node joining the head at 127.0.0.1:`join`) in a fresh short temp
    dir (Ray's socket paths are length-limited); returns that dir, which `stop_node` takes, and the head's port."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rn"))
    port = join or free_port()
    role = ([f"--address=127.0.0.1:{join}"] if join else ["--head", f"--port={port}", f"--ray-client-server-port={free_port()}"])
    ports = [f"--{flag}={free_port()}" for flag in FIXED_PORTS]
    started = subprocess.run([RAY, "start", *role, *ports, *flags, "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                             env=env, capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        stop_node(temp_dir)
        raise RuntimeError(f"ray start failed:\n{started.stdout}{started.stderr}")
    return temp_dir, port


def stop_node(temp_dir: Path) -> None:
    """Kill one node's processes and their workers. Never `ray stop`: it stops every Ray cluster on the machine,
    the one the test session itself runs on included."""
    ours = [p for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]
    ours += [child for p in ours for child in p.children(recursive=True)]
    for process in ours:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(ours, timeout=30)
