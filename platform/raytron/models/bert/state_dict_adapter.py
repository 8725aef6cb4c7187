"""HF BERT <-> Megatron-Core BertModel state dicts (full tensors), and reading HF BERT folders.

Names follow `transformers.BertModel` / `BertForMaskedLM`; the post-LN norms move one layer
down as explained in `raytron.models.bert.layer`. The MLM head (`cls.predictions`) and pooler
are carried when the checkpoint has them, so HF -> Megatron -> HF is bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
from megatron.core import parallel_state

from raytron.models import hf_folder
from raytron.models.qkv import fuse_qkv, split_qkv
from raytron.models.tensor_parallel_io import load_full_state_dict
from raytron.models.vocab import pad_rows, padded_vocab_size

OPTIONAL_MCORE_PREFIXES = ("pooler.", "binary_head.", "lm_head.", "output_layer.")
"""Megatron parameters that a plain `BertModel` checkpoint does not carry (heads we train anew)."""


def read_hf_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the weights of an HF BERT folder."""
    return hf_folder.read_hf_folder(folder, "bert")


def load_hf_weights(bert: torch.nn.Module, config: dict, hf: dict[str, torch.Tensor]) -> None:
    """Copy an HF BERT's weights into a Megatron-Core BertModel built from its `config`: this rank's
    tensor-parallel shard, the vocabulary padded for the TP size; heads it lacks keep their init."""
    padded = padded_vocab_size(config["vocab_size"], parallel_state.get_tensor_model_parallel_world_size())
    load_full_state_dict(bert, hf_to_mcore(config, hf, padded), optional_prefixes=OPTIONAL_MCORE_PREFIXES)


def hf_to_mcore(config: dict, hf: dict[str, torch.Tensor], padded_vocab: int) -> dict[str, torch.Tensor]:
    """Full Megatron-Core BertModel state dict from an HF BERT state dict."""
    prefix = "bert." if any(k.startswith("bert.") for k in hf) else ""
    heads = config["num_attention_heads"]
    n_layers = config["num_hidden_layers"]
    get = lambda name: hf[prefix + name]  # noqa: E731
    out = {
        "embedding.word_embeddings.weight": pad_rows(get("embeddings.word_embeddings.weight"), padded_vocab),
        "embedding.position_embeddings.weight": get("embeddings.position_embeddings.weight"),
        "embedding.tokentype_embeddings.weight": get("embeddings.token_type_embeddings.weight"),
    }
    for suffix in ("weight", "bias"):
        out[f"encoder.layers.0.input_layernorm.{suffix}"] = get(f"embeddings.LayerNorm.{suffix}")
        for i in range(n_layers):
            src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
            out[dst + f"self_attention.linear_qkv.{suffix}"] = fuse_qkv(
                *(get(src + f"attention.self.{p}.{suffix}") for p in ("query", "key", "value")), heads, heads
            )
            out[dst + f"self_attention.linear_proj.{suffix}"] = get(src + f"attention.output.dense.{suffix}")
            out[dst + f"pre_mlp_layernorm.{suffix}"] = get(src + f"attention.output.LayerNorm.{suffix}")
            out[dst + f"mlp.linear_fc1.{suffix}"] = get(src + f"intermediate.dense.{suffix}")
            out[dst + f"mlp.linear_fc2.{suffix}"] = get(src + f"output.dense.{suffix}")
            next_norm = f"encoder.layers.{i + 1}.input_layernorm" if i + 1 < n_layers else "encoder.final_layernorm"
            out[f"{next_norm}.{suffix}"] = get(src + f"output.LayerNorm.{suffix}")
        if prefix + "pooler.dense.weight" in hf:
            out[f"pooler.dense.{suffix}"] = get(f"pooler.dense.{suffix}")
        if "cls.predictions.transform.dense.weight" in hf:
            out[f"lm_head.dense.{suffix}"] = hf[f"cls.predictions.transform.dense.{suffix}"]
            out[f"lm_head.layer_norm.{suffix}"] = hf[f"cls.predictions.transform.LayerNorm.{suffix}"]
    if "cls.predictions.bias" in hf:
        out["output_layer.bias"] = pad_rows(hf["cls.predictions.bias"], padded_vocab)
    return out


def mcore_to_hf(config: dict, mcore: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF state dict from a full Megatron-Core BertModel state dict; the architecture named in
    `config["architectures"]` decides the heads: BertModel keeps the pooler, BertForMaskedLM the MLM head."""
    masked_lm = config.get("architectures", ["BertModel"])[0] in ("BertForMaskedLM", "BertForPreTraining")
    prefix = "bert." if masked_lm else ""
    heads = config["num_attention_heads"]
    n_layers = config["num_hidden_layers"]
    vocab = config["vocab_size"]
    out = {
        prefix + "embeddings.word_embeddings.weight": mcore["embedding.word_embeddings.weight"][:vocab],
        prefix + "embeddings.position_embeddings.weight": mcore["embedding.position_embeddings.weight"],
        prefix + "embeddings.token_type_embeddings.weight": mcore["embedding.tokentype_embeddings.weight"],
        prefix + "embeddings.position_ids": torch.arange(config["max_position_embeddings"]).unsqueeze(0),
    }
    for suffix in ("weight", "bias"):
        out[prefix + f"embeddings.LayerNorm.{suffix}"] = mcore[f"encoder.layers.0.input_layernorm.{suffix}"]
        for i in range(n_layers):
            src, dst = f"encoder.layers.{i}.", prefix + f"encoder.layer.{i}."
            q, k, v = split_qkv(mcore[src + f"self_attention.linear_qkv.{suffix}"], heads, heads)
            out[dst + f"attention.self.query.{suffix}"] = q
            out[dst + f"attention.self.key.{suffix}"] = k
            out[dst + f"attention.self.value.{suffix}"] = v
            out[dst + f"attention.output.dense.{suffix}"] = mcore[src + f"self_attention.linear_proj.{suffix}"]
            out[dst + f"attention.output.LayerNorm.{suffix}"] = mcore[src + f"pre_mlp_layernorm.{suffix}"]
            out[dst + f"intermediate.dense.{suffix}"] = mcore[src + f"mlp.linear_fc1.{suffix}"]
            out[dst + f"output.dense.{suffix}"] = mcore[src + f"mlp.linear_fc2.{suffix}"]
            next_norm = f"encoder.layers.{i + 1}.input_layernorm" if i + 1 < n_layers else "encoder.final_layernorm"
            out[dst + f"output.LayerNorm.{suffix}"] = mcore[f"{next_norm}.{suffix}"]
        if masked_lm:
            out[f"cls.predictions.transform.dense.{suffix}"] = mcore[f"lm_head.dense.{suffix}"]
            out[f"cls.predictions.transform.LayerNorm.{suffix}"] = mcore[f"lm_head.layer_norm.{suffix}"]
        else:
            out[f"pooler.dense.{suffix}"] = mcore[f"pooler.dense.{suffix}"]
    if masked_lm:
        out["cls.predictions.bias"] = mcore["output_layer.bias"][:vocab]
    return {name: tensor.contiguous() for name, tensor in out.items()}

