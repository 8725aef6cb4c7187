"""The CPU shim: each redirection is needed by a real Megatron-Core path, the shim can be undone,
it names what is missing on another Megatron-Core version, and it is inert where a GPU exists.

Run as a script, this file is the scenario runner the tests start once:
`python tests/test_megatron_cpu.py WORKDIR CASE...` imports torch and Megatron-Core once, then runs
each case (ALL, or the name of one patch to leave out) in a forked child of that fresh process, two
at a time, and prints one JSON line per case. A case builds a tiny Llama-shaped Megatron-Core
GPTModel with the project's builders, takes one training step through Megatron DDP +
get_megatron_optimizer with grad clipping, saves a dist_checkpointing checkpoint and loads it into a
fresh model and optimizer, checking the results on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest
import torch

from raytron import megatron_cpu
from raytron.errors import RaytronError

ALL = "all patches"
DISTRIBUTED_OPTIMIZER = "all patches, distributed optimizer"
PATCHES = megatron_cpu.patch_names()
SEED = 7
HF_LLAMA = dict(  # attention dropout in every attention layer (the tracker fork itself: its own stage below)
    vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
    num_hidden_layers=2, max_position_embeddings=16, attention_dropout=0.1, tie_word_embeddings=False,
)
CASE_TIMEOUT_S = 180


# ---- the scenario (runs in a forked child of the runner) -------------------------------------------------


def scenario(skip: frozenset[str], workdir: Path, stage: list[str], distributed_optimizer: bool = False) -> None:
    """Build, train and checkpoint on the CPU with the shim minus `skip`; raise on any failure."""
    import logging

    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    from raytron.config import TrainConfig
    from raytron.models.llama.model import build_gpt, transformer_config
    from raytron.runtime import init_megatron
    from raytron.train import checkpoint
    from raytron.train.optim import wrap_for_training
    from raytron.train.step import train_step

    warnings: list[str] = []
    catch = logging.Handler(logging.WARNING)
    catch.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("megatron").addHandler(catch)

    stage.append("enable")
    assert megatron_cpu.enable(skip=skip)
    stage.append("init_megatron")
    assert init_megatron(seed=SEED).type == "cpu"

    stage.append("RNG tracker fork")  # what dropout in TP regions runs under
    torch.manual_seed(SEED)
    with get_cuda_rng_tracker().fork():
        forked = torch.rand(4)
    after = torch.rand(4)
    torch.manual_seed(SEED + 2718)  # model_parallel_cuda_manual_seed's TP stream: seed + 2718 + tp rank
    assert torch.equal(forked, torch.rand(4)), "the fork did not draw from the model-parallel RNG stream"
    torch.manual_seed(SEED)
    assert torch.equal(after, torch.rand(4)), "the fork did not restore the default RNG stream"

    tconfig = transformer_config(HF_LLAMA)
    train = TrainConfig(lr=1e-2, warmup_fraction=0.0, clip_grad=1e-3,  # a clip that scales the grads
                        distributed_optimizer=distributed_optimizer)

    def build():
        model = build_gpt(HF_LLAMA, tconfig)
        return (model, *wrap_for_training(model, tconfig, train, total_steps=4))

    class NextToken:  # the smallest Task train_step takes
        @staticmethod
        def loss(ddp, batch):
            ids = batch["input_ids"]
            position_ids = torch.arange(ids.shape[1]).expand_as(ids)
            return ddp(input_ids=ids, position_ids=position_ids, attention_mask=None, labels=batch["labels"]).sum()

        @staticmethod
        def measure(batch):
            count = torch.tensor(batch["labels"].numel())
            return {"items": count, "tokens": count, "positions": count, "flops": torch.tensor(0.0)}

    stage.append("build (model, DDP, optimizer)")
    model, ddp, optimizer, scheduler = build()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}

    stage.append("train step")
    tokens = torch.randint(0, HF_LLAMA["vocab_size"], (2, 9))
    result = train_step(ddp, optimizer, scheduler, NextToken, [dict(input_ids=tokens[:, :-1], labels=tokens[:, 1:])])
    assert torch.isfinite(result.loss), result
    assert result.grad_norm is not None and result.grad_norm > train.clip_grad, result
    unchanged = [name for name, param in model.named_parameters() if torch.equal(param, before[name])]
    assert not unchanged, f"the optimizer step left {unchanged} unchanged"
    tokens = torch.randint(0, HF_LLAMA["vocab_size"], (2, 9))  # a second step: Adam's step count is 2, not a default
    assert torch.isfinite(train_step(ddp, optimizer, scheduler, NextToken,
                                     [dict(input_ids=tokens[:, :-1], labels=tokens[:, 1:])]).loss)

    stage.append("checkpoint save")
    path = workdir / "checkpoint"
    checkpoint.save(path, model, optimizer, scheduler, {"step": 2}, workdir / "metrics.jsonl")
    assert checkpoint.verify(pafs.LocalFileSystem(), str(path), str(path))["step"] == 2
    stage.append("checkpoint load")
    fresh, _, fresh_optimizer, fresh_scheduler = build()
    assert checkpoint.load(path, fresh, fresh_optimizer, fresh_scheduler)["step"] == 2
    for (name, saved), loaded in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(saved, loaded), f"{name} differs after loading"
    saved_states, loaded_states = (
        [(s["step"], s["exp_avg"], s["exp_avg_sq"]) for s in opt.chained_optimizers[0].optimizer.state.values()]
        for opt in (optimizer, fresh_optimizer)
    )
    assert len(saved_states) == len(loaded_states) > 0 and int(saved_states[0][0]) == 2
    for saved, loaded in zip(saved_states, loaded_states, strict=True):
        assert all(map(torch.equal, map(torch.as_tensor, saved), map(torch.as_tensor, loaded))), \
            "Adam's step count or moments differ after loading"

    stage.append("Megatron's own optimizer.step()")  # what tests/test_optimizer_step.py compares ours with
    model, ddp, optimizer, _ = build()
    NextToken.loss(ddp, dict(input_ids=tokens[:, :-1], labels=tokens[:, 1:])).backward()
    ddp.finish_grad_sync()
    success, grad_norm, _ = optimizer.step()
    assert success and grad_norm > train.clip_grad, grad_norm

    stage.append("log")
    assert not [w for w in warnings if "RNG" in w], warnings


def _child(case: str, workdir: Path) -> None:
    """One case, in a forked child: its output goes to workdir/log, its outcome to workdir/outcome.json."""
    fd = os.open(workdir / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    stage: list[str] = []
    outcome = {"case": case, "ok": True, "stage": None, "error": None}
    try:
        skip = frozenset() if case in (ALL, DISTRIBUTED_OPTIMIZER) else frozenset([case])
        scenario(skip, workdir, stage, distributed_optimizer=case == DISTRIBUTED_OPTIMIZER)
    except BaseException as error:  # noqa: BLE001 - every failure is an outcome
        traceback.print_exc()
        message = (str(error).strip().splitlines() or [""])[0][:300]
        frames = [f for f in traceback.extract_tb(error.__traceback__) if "megatron/core" in f.filename]
        where = f" (at {frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno})" if frames else ""
        outcome.update(ok=False, stage=stage[-1] if stage else None, error=f"{type(error).__name__}: {message}{where}")
    (workdir / "outcome.json").write_text(json.dumps(outcome))
    sys.stdout.flush()
    sys.stderr.flush()
    for process in psutil.Process().children(recursive=True):  # what the checkpointing spawned: os._exit leaves
        process.kill()  # them running, orphaned (five of ~490 MB each after a CI run)
    os._exit(0)


def _runner(root: Path, cases: list[str], parallel: int = 2) -> None:
    import multiprocessing

    # Import once here: each forked child starts from this fresh, unpatched process.
    import megatron.core.dist_checkpointing  # noqa: F401

    import raytron.models.llama.model  # noqa: F401
    import raytron.runtime  # noqa: F401
    import raytron.train.checkpoint  # noqa: F401
    import raytron.train.optim  # noqa: F401
    import raytron.train.step  # noqa: F401

    fork = multiprocessing.get_context("fork")
    pending, running = list(enumerate(cases)), []
    while pending or running:
        while pending and len(running) < parallel:
            index, case = pending.pop(0)
            workdir = root / str(index)
            workdir.mkdir(parents=True)
            child = fork.Process(target=_child, args=(case, workdir))
            child.start()
            running.append((child, case, workdir, time.monotonic()))
        time.sleep(0.1)
        for entry in list(running):
            child, case, workdir, started = entry
            seconds = time.monotonic() - started
            if child.is_alive() and seconds < CASE_TIMEOUT_S:
                continue
            if child.is_alive():
                child.kill()
            child.join()
            running.remove(entry)
            result = workdir / "outcome.json"
            outcome = (
                json.loads(result.read_text())
                if result.exists()
                else {"case": case, "ok": False, "stage": None, "error": f"no outcome (exit code {child.exitcode})"}
            )
            print(json.dumps({**outcome, "seconds": round(seconds, 1)}), flush=True)


# ---- the tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    """Every case's outcome, from one runner process."""
    root = tmp_path_factory.mktemp("megatron_cpu")
    run = subprocess.run(
        [sys.executable, __file__, str(root), ALL, DISTRIBUTED_OPTIMIZER, *PATCHES],
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT_S * (len(PATCHES) + 2) // 2,
    )
    found = {o["case"]: o for o in map(json.loads, (line for line in run.stdout.splitlines() if line.startswith("{")))}
    assert run.returncode == 0 and len(found) == len(PATCHES) + 2, run.stdout[-3000:] + run.stderr[-3000:]
    return found


def test_cpu_build_train_checkpoint_with_the_shim(outcomes):
    assert outcomes[ALL]["ok"], outcomes[ALL]


def test_distributed_optimizer_checkpoint_round_trip(outcomes):
    """Megatron-Core 0.16's default layout for the distributed optimizer fails to save; ours saves and loads the
    same parameters, Adam step count and moments (found on 2 GPUs: `train.distributed_optimizer=true` died at its
    first checkpoint)."""
    assert outcomes[DISTRIBUTED_OPTIMIZER]["ok"], outcomes[DISTRIBUTED_OPTIMIZER]


@pytest.mark.parametrize("name", PATCHES)
def test_each_patch_is_needed(name, outcomes):
    assert outcomes[ALL]["ok"], f"the scenario fails even with every patch: {outcomes[ALL]}"
    outcome = outcomes[name]
    assert not outcome["ok"], f"build/train/checkpoint on the CPU passes without {name}: the patch is not needed"
    assert outcome["stage"] != "enable", outcome  # it failed in Megatron-Core, not in the shim's own checks


@pytest.fixture
def shim_off():
    """Run a test with the shim off in this process, then put back what the rest of the session had."""
    was_enabled = megatron_cpu.is_enabled()
    megatron_cpu.disable()
    yield
    megatron_cpu.disable()
    if was_enabled:
        megatron_cpu.enable()


def test_cuda_calls_run_on_cpu(shim_off):
    assert megatron_cpu.enable()
    assert megatron_cpu.enable()  # idempotent
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.ones(1).type() == "torch.cuda.FloatTensor"  # what Megatron's grad clipping asserts
    assert torch.cuda.current_device() == "cpu"
    torch.cuda.manual_seed(3)  # the "CUDA" RNG is the CPU one
    assert torch.equal(torch.cuda.get_rng_state(), torch.get_rng_state())
    first = torch.rand(2)
    torch.manual_seed(3)
    assert torch.equal(first, torch.rand(2))


def test_disable_restores_every_attribute(shim_off):
    patches = megatron_cpu._patches()
    originals = [getattr(patch.target, patch.attribute) for patch in patches]
    assert megatron_cpu.enable()
    assert [getattr(patch.target, patch.attribute) for patch in patches] != originals
    megatron_cpu.disable()
    assert not megatron_cpu.is_enabled()
    assert all(getattr(p.target, p.attribute) is original for p, original in zip(patches, originals, strict=True))
    assert torch.ones(1).type() == "torch.FloatTensor"  # the torch-function mode is gone
    with pytest.raises((AssertionError, RuntimeError)):  # "Torch not compiled with CUDA enabled"
        torch.zeros(1, device="cuda")


def test_skip_leaves_one_patch_out(shim_off):
    assert megatron_cpu.enable(skip=frozenset(["torch.cuda.synchronize"]))
    assert torch.cuda.current_device() == "cpu"
    with pytest.raises((AssertionError, RuntimeError)):
        torch.cuda.synchronize()
    megatron_cpu.disable()
    with pytest.raises(ValueError, match="no such patches"):
        megatron_cpu.enable(skip=frozenset(["torch.cuda.nope"]))


def test_a_missing_attribute_names_itself_and_the_versions(shim_off, monkeypatch):
    from megatron.core.tensor_parallel import random as mcore_random

    original = torch.cuda.get_rng_state
    with monkeypatch.context() as patch:
        patch.delattr(mcore_random, "_set_cuda_rng_state")
        with pytest.raises(RaytronError) as error:
            megatron_cpu.enable()
    message = str(error.value)
    assert "megatron.core.tensor_parallel.random._set_cuda_rng_state" in message
    assert f"megatron-core {version('megatron-core')}" in message and megatron_cpu.WRITTEN_FOR in message
    assert not megatron_cpu.is_enabled() and torch.cuda.get_rng_state is original  # nothing stays patched


def test_inert_when_a_gpu_is_present():
    probe = (
        "import torch; torch.cuda.is_available = lambda: True\n"
        "original = torch.cuda.current_device, torch.cuda.get_rng_state\n"
        "from raytron import megatron_cpu\n"
        "assert megatron_cpu.enable() is False and not megatron_cpu.is_enabled()\n"
        "assert (torch.cuda.current_device, torch.cuda.get_rng_state) == original\n"
        "assert torch.zeros(1).type() == 'torch.FloatTensor'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_deterministic_kernels_switch_every_source_of_gpu_nondeterminism():
    """train.deterministic's switch, in a fresh process: deterministic algorithms on, SDPA on its math backend only,
    cuDNN without autotuning, cuBLAS's fixed workspace (a value set by the user is kept)."""
    probe = ("import json, os, torch; from raytron.runtime import use_deterministic_kernels; use_deterministic_kernels(); "
             "b = torch.backends; print(json.dumps([torch.are_deterministic_algorithms_enabled(), b.cuda.flash_sdp_enabled(), "
             "b.cuda.mem_efficient_sdp_enabled(), b.cuda.cudnn_sdp_enabled(), b.cuda.math_sdp_enabled(), "
             "b.cudnn.deterministic, b.cudnn.benchmark, os.environ['CUBLAS_WORKSPACE_CONFIG']]))")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == [True, False, False, False, True, True, False, ":4096:8"]
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**env, "CUBLAS_WORKSPACE_CONFIG": ":16:8"})
    assert json.loads(done.stdout)[-1] == ":16:8"


if __name__ == "__main__":  # the runner (dist_checkpointing needs this guard in a script)
    _runner(Path(sys.argv[1]), sys.argv[2:])
