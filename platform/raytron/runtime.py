"""The process runtime every layer shares: Megatron-Core's parallel groups on top of torch.distributed,
and the Ray connection (train/, inference/, serving/, evaluate/ and topics/ all start here)."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist

from raytron.config import JobConfig
from raytron.errors import RaytronError

WORKER_START_TIMEOUT_S = "300"
"""Ray Train's default (60 s) is too short for 2 workers importing torch + Megatron-Core on a busy 2-core laptop."""

REPORT_POLL_S = "0.2"
"""How often Ray Train's controller polls its workers (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, Ray's default 2 s). It takes
a worker's report (an epoch's end, a checkpoint) only when it polls, and `raytron.train.loop.save_checkpoint` waits
for the checkpoint to be registered, so each checkpoint held training for about the interval (up to twice it: a poll
itself waits up to the interval for the workers). Measured 2026-12-02 on the 2-core CPU, one run each: the tests'
tiny recipe (tests/conftest.tiny_overrides, 1 worker, 3 epochs of 3 steps) with `train.checkpoint_every=1`, each
step logged to its checkpoint saved 2.9 s at 2 s and 1.7 s at 0.2 s (medians of the 9), the fine-tune 74 -> 61 s.
Each poll is one small call per worker. The driver sets it (a value already in the environment wins); Ray Train
passes it on to its controller and workers."""


def use_deterministic_kernels() -> None:
    """Make this process's GPU steps bit-reproducible (PyTorch's reproducibility notes,
    https://pytorch.org/docs/stable/notes/randomness.html): deterministic algorithms only, cuBLAS's fixed
    workspace (read when cuBLAS starts: call this before the first matmul), no cuDNN autotuning, and SDPA on its
    math backend (the flash, memory-efficient and cuDNN backwards add up gradients in a varying order)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    for backend in ("flash", "mem_efficient", "cudnn"):
        getattr(torch.backends.cuda, f"enable_{backend}_sdp")(False)


def init_megatron(tensor_parallel: int = 1, pipeline_parallel: int = 1, seed: int = 1234) -> torch.device:
    """Initialize Megatron-Core's TP/PP/DP groups and RNG; return this rank's device.

    The one entry point to Megatron-Core in a process: without a GPU it first installs the CPU shim
    (`raytron.megatron_cpu`). Inside Ray Train the default process group already exists (nccl on
    GPU, gloo on CPU); outside it (a Serve replica, a Ray Data actor, a script) a one-process gloo
    group is created.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from raytron import megatron_cpu

    on_cpu = megatron_cpu.enable()
    if not dist.is_initialized():
        # An in-process store, no TCP port: a port picked free can be taken before it is bound (two Ray Data
        # actors starting together both failed with EADDRINUSE), and a reused Ray worker may carry a stale MASTER_PORT.
        dist.init_process_group("gloo" if on_cpu else "nccl", store=dist.HashStore(), rank=0, world_size=1)
    world = dist.get_world_size()
    if world % (tensor_parallel * pipeline_parallel):
        raise ValueError(f"{world} ranks cannot be split into TP={tensor_parallel} x PP={pipeline_parallel}")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_parallel, pipeline_parallel)
    model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    if on_cpu:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def shutdown_megatron() -> None:
    """Tear down Megatron-Core's groups (the default group belongs to whoever created it)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()


RAY_REACH_TIMEOUT_S = 10
"""How long connect_ray keeps asking RAY_ADDRESS for a TCP answer before it calls the cluster unreachable."""


def check_ray_address(address: str) -> None:
    """Fail within RAY_REACH_TIMEOUT_S, naming RAY_ADDRESS, when nothing answers there: `ray.init` would retry the
    GCS for minutes, logging warnings, before its own error. HOST:PORT and ray://HOST:PORT are checked; "auto", "local" and other
    forms are left to Ray."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        return
    host, _, port = (rest if sep else address).rpartition(":")
    if not host or not port.isdigit():
        return
    deadline = time.monotonic() + RAY_REACH_TIMEOUT_S
    while True:  # a head still starting refuses for a moment: ask again until the deadline
        try:
            left = max(deadline - time.monotonic(), 0.5)  # a connect that hangs ends at the deadline too
            socket.create_connection((host.strip("[]"), int(port)), timeout=left).close()
            return
        except OSError as exc:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise RaytronError(
                f"RAY_ADDRESS={address}: no Ray cluster answers at {host}:{port} ({exc.strerror or exc}). Start "
                "one there (`ray start --head --port PORT`, or check the KubeRay head service and its port-forward), "
                "or unset RAY_ADDRESS to run the job on a local Ray instance it starts itself") from None


def set_ray_train_defaults() -> None:
    """WORKER_START_TIMEOUT_S and REPORT_POLL_S into this process's environment, where it sets neither (before Ray
    starts: a local cluster's processes, Ray Train's controller and workers, inherit them)."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_START_TIMEOUT_S)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_S)


def connect_ray() -> None:
    """Join the cluster `ray job submit` or RAY_ADDRESS points at, else start a local one."""
    import ray

    set_ray_train_defaults()
    if not ray.is_initialized():
        check_ray_address(os.environ.get("RAY_ADDRESS", ""))
        ray.init(logging_level=logging.WARNING, log_to_driver=True)


def use_gpu(cfg: JobConfig) -> bool:
    """resources.use_gpu, or when unset: whether the connected Ray cluster has a GPU."""
    import ray

    if cfg.resources.use_gpu is not None:
        return cfg.resources.use_gpu
    return ray.cluster_resources().get("GPU", 0) >= 1


def absolute_paths(cfg: JobConfig) -> JobConfig:
    """Workers run in other directories (and `ray job submit` in a copy): pin every path now, and
    resolve the pretrained model once, here on the driver (workers then read a plain folder)."""
    from raytron.data.sources import data_root
    from raytron.models.pretrained import pin_pretrained
    from raytron.storage import is_uri

    cfg = cfg.model_copy(deep=True)
    if not is_uri(cfg.run.output_dir):
        cfg.run.output_dir = str(Path(cfg.run.output_dir).expanduser().resolve())
    root = data_root(cfg.data.data_dir)
    cfg.data.data_dir = str(root) if root else cfg.data.data_dir
    return pin_pretrained(cfg)
