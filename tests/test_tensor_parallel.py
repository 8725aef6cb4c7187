"""TP=2 computes what TP=1 computes: same loss on the same batch, before and after one Adam step."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

TOLERANCE = 1e-5  # fp32; TP changes only the order of the reductions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_losses(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from raytron.config import SentimentConfig
    from raytron.runtime import init_megatron
    from raytron.train.optim import wrap_for_training
    from raytron.train.sentiment import SentimentTask

    cfg = SentimentConfig.model_validate(
        {"parallel": {"tensor": world}, "resources": {"num_workers": world}, "model": {"head_dropout": 0.0},
         "train": {"micro_batch_size": 4, "global_batch_size": 4, "lr": 1e-3, "warmup_fraction": 0.0}}
    )
    device = init_megatron(world, 1, seed=7)
    model, tconfig = SentimentTask(cfg).build(device, torch.float32)
    model.bert.config.hidden_dropout = model.bert.config.attention_dropout = 0.0
    torch.manual_seed(0)  # the same head init and batch on every rank and both layouts
    for layer in model.head:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, total_steps=10)
    model.eval()  # no dropout: the comparison is exact up to summation order
    ids = torch.randint(1000, 20000, (4, 24))
    mask = torch.ones_like(ids)
    mask[2:, 18:] = 0
    features, labels = torch.rand(4, 2), torch.tensor([0, 1, 1, 0])
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        ddp.zero_grad_buffer()
        loss = F.cross_entropy(ddp(ids, mask, features).float(), labels)
        loss.backward()
        ddp.finish_grad_sync()
        optimizer.step()
        scheduler.step(increment=1)
        losses.append(loss.item())
    if rank == 0:
        results.extend(losses)
    dist.destroy_process_group()


def _run(world: int) -> list[float]:
    with mp.Manager() as manager:
        results = manager.list()
        mp.spawn(_two_losses, args=(world, _free_port(), results), nprocs=world, join=True)
        return list(results)


@pytest.mark.slow
def test_tp2_matches_tp1():
    tp1, tp2 = _run(1), _run(2)
    assert len(tp1) == len(tp2) == 2
    assert tp1[1] < tp1[0]  # the Adam step moved the model
    for a, b in zip(tp1, tp2, strict=True):
        assert abs(a - b) <= TOLERANCE, (tp1, tp2)


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
