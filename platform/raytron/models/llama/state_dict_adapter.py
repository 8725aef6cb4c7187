"""HF Llama <-> Megatron-Core GPTModel state dicts (full tensors) and HF folder reading.

Megatron's SwiGLU `linear_fc1` stacks [gate; up] per tensor-parallel rank (each rank's shard must
hold its own gate and up rows), so the full fc1 tensor is laid out rank by rank for the TP size it
is loaded into. QKV uses the per-group layout of `raytron.models.qkv`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from raytron.models import hf_folder
from raytron.models.qkv import fuse_qkv, split_qkv
from raytron.models.vocab import pad_rows


def read_hf_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the weights of an HF Llama folder."""
    return hf_folder.read_hf_folder(folder, "llama")


def _fc1(gate: torch.Tensor, up: torch.Tensor, tp: int) -> torch.Tensor:
    return torch.cat([torch.cat([g, u]) for g, u in zip(gate.chunk(tp), up.chunk(tp), strict=True)])


def _unfc1(fc1: torch.Tensor, tp: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [shard.chunk(2) for shard in fc1.chunk(tp)]
    return torch.cat([g for g, _ in pairs]), torch.cat([u for _, u in pairs])


def _heads(config: dict) -> tuple[int, int]:
    heads = config["num_attention_heads"]
    return heads, config.get("num_key_value_heads", heads)


def hf_to_mcore(config: dict, hf: dict[str, torch.Tensor], padded_vocab: int, tp: int = 1) -> dict[str, torch.Tensor]:
    """Full GPTModel state dict from an HF LlamaForCausalLM state dict, fc1 laid out for `tp` ranks."""
    heads, groups = _heads(config)
    out = {
        "embedding.word_embeddings.weight": pad_rows(hf["model.embed_tokens.weight"], padded_vocab),
        "decoder.final_layernorm.weight": hf["model.norm.weight"],
    }
    if not config.get("tie_word_embeddings", False):
        out["output_layer.weight"] = pad_rows(hf["lm_head.weight"], padded_vocab)
    for i in range(config["num_hidden_layers"]):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        out[dst + "input_layernorm.weight"] = hf[src + "input_layernorm.weight"]
        out[dst + "self_attention.linear_qkv.weight"] = fuse_qkv(
            hf[src + "self_attn.q_proj.weight"], hf[src + "self_attn.k_proj.weight"], hf[src + "self_attn.v_proj.weight"],
            heads, groups,
        )
        out[dst + "self_attention.linear_proj.weight"] = hf[src + "self_attn.o_proj.weight"]
        out[dst + "pre_mlp_layernorm.weight"] = hf[src + "post_attention_layernorm.weight"]
        out[dst + "mlp.linear_fc1.weight"] = _fc1(hf[src + "mlp.gate_proj.weight"], hf[src + "mlp.up_proj.weight"], tp)
        out[dst + "mlp.linear_fc2.weight"] = hf[src + "mlp.down_proj.weight"]
    return out


def mcore_to_hf(config: dict, mcore: dict[str, torch.Tensor], tp: int = 1) -> dict[str, torch.Tensor]:
    """HF LlamaForCausalLM state dict from a full GPTModel state dict gathered from `tp` ranks."""
    heads, groups = _heads(config)
    vocab = config["vocab_size"]
    out = {
        "model.embed_tokens.weight": mcore["embedding.word_embeddings.weight"][:vocab],
        "model.norm.weight": mcore["decoder.final_layernorm.weight"],
    }
    if not config.get("tie_word_embeddings", False):  # tied checkpoints store the embedding once
        out["lm_head.weight"] = mcore["output_layer.weight"][:vocab]
    for i in range(config["num_hidden_layers"]):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = mcore[src + "input_layernorm.weight"]
        q, k, v = split_qkv(mcore[src + "self_attention.linear_qkv.weight"], heads, groups)
        out[dst + "self_attn.q_proj.weight"], out[dst + "self_attn.k_proj.weight"] = q, k
        out[dst + "self_attn.v_proj.weight"] = v
        out[dst + "self_attn.o_proj.weight"] = mcore[src + "self_attention.linear_proj.weight"]
        out[dst + "post_attention_layernorm.weight"] = mcore[src + "pre_mlp_layernorm.weight"]
        gate, up = _unfc1(mcore[src + "mlp.linear_fc1.weight"], tp)
        out[dst + "mlp.gate_proj.weight"], out[dst + "mlp.up_proj.weight"] = gate, up
        out[dst + "mlp.down_proj.weight"] = mcore[src + "mlp.linear_fc2.weight"]
    return {name: tensor.contiguous() for name, tensor in out.items()}
