"""Megatron-Core process groups on top of the torch.distributed group Ray Train created."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

from raytron import megatron_cpu


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_megatron(tensor_parallel: int = 1, pipeline_parallel: int = 1, seed: int = 1234) -> torch.device:
    """Initialize Megatron-Core's TP/PP/DP groups and RNG; return this rank's device.

    Inside Ray Train the default process group already exists (nccl on GPU, gloo on CPU).
    Outside it (a notebook, a converter script) a one-process gloo group is created.
    """
    on_cpu = megatron_cpu.enable()
    if not dist.is_initialized():
        # A fresh port, not MASTER_PORT: a reused Ray worker process may carry a stale one.
        dist.init_process_group(
            "gloo" if on_cpu else "nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    world = dist.get_world_size()
    if world % (tensor_parallel * pipeline_parallel):
        raise ValueError(f"{world} ranks cannot be split into TP={tensor_parallel} x PP={pipeline_parallel}")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_parallel, pipeline_parallel)
    model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    if on_cpu:
        return torch.device("cpu")
    device = torch.device("cuda", torch.cuda.current_device())
    return device


def shutdown_megatron() -> None:
    """Tear down Megatron-Core's groups (the default group belongs to whoever created it)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
