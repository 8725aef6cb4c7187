"""TP=2 computes what TP=1 computes: the real Ray Train loop's per-step losses (sentiment), and the
Llama converter's logits under TP=3."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raytron.config import load_config
from raytron.train.launcher import finetune
from tests.conftest import REPO, tiny_overrides

TOLERANCE = 1e-5  # fp32; TP changes only the order of the reductions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_losses(root, name: str, workers: int, tensor: int) -> dict[int, float]:
    """Per-step training losses of a real fine-tune (Ray Train, Megatron-Core) on 16 reviews.

    One optimizer step per epoch covers all 16 rows, so both layouts average the same rows whatever
    order Ray shards them in; no dropout, so the only difference left is TP's reduction order."""
    cfg = load_config(REPO / "configs" / "sentiment.yaml", tiny_overrides(root, **{
        "run.name": name, "resources.num_workers": workers, "parallel.tensor": tensor, "data.train_rows": 16,
        "data.val_rows": 8, "train.epochs": 2, "model.dropout": 0.0, "model.head_dropout": 0.0}))
    finetune(cfg)
    rows = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}


@pytest.mark.slow
def test_tp2_fine_tune_matches_tp1(ray_cluster, tmp_path):
    """Through `finetune`: both ranks of the TP group take the same rows of each step (raytron.train.sampler
    slices by data-parallel rank); had each taken its own rows, the losses would differ."""
    tp1 = step_losses(tmp_path, "tp1", workers=1, tensor=1)
    tp2 = step_losses(tmp_path, "tp2", workers=2, tensor=2)
    assert sorted(tp1) == sorted(tp2) == [1, 2]
    assert tp1[2] < tp1[1]  # the first step trained the model
    for step in tp1:
        assert abs(tp1[step] - tp2[step]) <= TOLERANCE, (tp1, tp2)


def _llama_logits(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state

    from raytron.models.llama import model as llama_model
    from raytron.models.llama import state_dict_adapter as adapter
    from raytron.models.llama.gguf import smollm2_folder
    from raytron.models.tensor_parallel_io import gather_full_state_dict, load_full_state_dict
    from raytron.models.vocab import padded_vocab_size
    from raytron.runtime import init_megatron

    init_megatron(world, 1, seed=7)
    config, weights = adapter.read_hf_folder(smollm2_folder())
    model = llama_model.build_gpt(config, llama_model.transformer_config(config)).eval()
    load_full_state_dict(model, adapter.hf_to_mcore(config, weights, padded_vocab_size(config["vocab_size"], world), world))
    ids = torch.arange(100, 120)[None]
    with torch.no_grad():
        local = model(ids, torch.arange(20)[None], None)  # vocab-parallel logits
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    logits = torch.cat(parts, dim=-1)[..., : config["vocab_size"]]
    back = adapter.mcore_to_hf(config, gather_full_state_dict(model), world)
    if rank == 0:
        results.append(logits)
        results.append(all(torch.equal(back[name], weights[name]) for name in weights))
    dist.destroy_process_group()


@pytest.mark.slow
def test_llama_tp3_matches_tp1():
    """The per-rank [gate; up] fc1 layout and vocab-parallel logits under TP=3 (SmolLM2: 9 heads, 3 KV groups)."""
    outputs = {}
    for world in (1, 3):
        with mp.Manager() as manager:
            results = manager.list()
            mp.spawn(_llama_logits, args=(world, _free_port(), results), nprocs=world, join=True)
            outputs[world] = list(results)
    (tp1, tp1_round_trip), (tp3, tp3_round_trip) = outputs[1], outputs[3]
    assert tp1_round_trip and tp3_round_trip  # HF -> TP-sharded Megatron -> HF is bit-identical
    assert (tp1 - tp3).abs().max().item() <= 1e-4
