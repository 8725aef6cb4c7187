"""The CPU shim: active without a GPU (redirects CUDA calls), inert where a GPU exists."""

import subprocess
import sys

import torch

from raytron import megatron_cpu


def test_cuda_calls_run_on_cpu():
    assert megatron_cpu.enable()
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.ones(3).cuda().device.type == "cpu"
    assert torch.ones(1).type() == "torch.cuda.FloatTensor"  # what Megatron's grad clipping asserts
    torch.cuda.manual_seed(3)
    state = torch.cuda.get_rng_state()
    first = torch.rand(2)
    torch.cuda.set_rng_state(state)
    assert torch.equal(first, torch.rand(2))


def test_inert_when_a_gpu_is_present():
    probe = (
        "import torch; torch.cuda.is_available = lambda: True\n"
        "original = torch.cuda.current_device\n"
        "from raytron import megatron_cpu\n"
        "assert megatron_cpu.enable() is False\n"
        "assert torch.cuda.current_device is original\n"
        "assert torch.zeros(1).type() == 'torch.FloatTensor'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
