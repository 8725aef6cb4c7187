"""Core attention of the layer specs: PyTorch's `scaled_dot_product_attention` (flash, memory-efficient or
cuDNN kernels on GPU) in place of Megatron-Core's unfused `DotProductAttention`, or Transformer Engine's.

The module is swapped into a spec's `self_attention.submodules.core_attention`, as Megatron-Core swaps
its TE and local implementations. It keeps Megatron's interface: query [sq, b, heads, d], key and value
[sk, b, groups, d] (grouped-query attention passes `enable_gqa`), a boolean mask where True means
"masked out", and returns [sq, b, heads * d] for this rank's tensor-parallel heads.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from typing import Literal

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec

from raytron.errors import RaytronError

Attention = Literal["auto", "sdpa", "te", "local"]
"""auto: Transformer Engine when importable, else sdpa; local: Megatron-Core's unfused reference."""


class SDPAttention(DotProductAttention):
    """DotProductAttention computed by `torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if config.apply_query_key_layer_scaling or config.softmax_type != "vanilla" or config.window_size:
            raise RaytronError("model.attention=sdpa supports plain softmax attention only; use model.attention=local")

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention takes neither packed sequences nor an attention bias")
        sq, batch, sk = query.shape[0], query.shape[1], key.shape[0]
        query, key, value = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        causal = (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
        allowed, is_causal = None, False
        if attention_mask is not None:
            allowed = ~attention_mask
            # a query with no key left (a padding row) attends to all: finite, and never read
            allowed = allowed | ~allowed.any(-1, keepdim=True)
        elif causal and sq > 1:
            if sq == sk:
                is_causal = True
            else:  # queries are the last sq positions of the keys (a KV cache)
                allowed = torch.ones(sq, sk, dtype=torch.bool, device=query.device).tril(sk - sq)
        dropout = self.attention_dropout.p if self.training else 0.0
        # Dropout masks per TP rank from Megatron's model-parallel RNG stream, as DotProductAttention draws them.
        # With one TP rank that stream is only another seed: the default one (hidden dropout's) is used instead,
        # which a CUDA graph capture can replay (`train.cuda_graphs`) and which costs no RNG-state swap per layer.
        fork = dropout and not self.config.sequence_parallel and self.config.tensor_model_parallel_size > 1
        with tensor_parallel.get_cuda_rng_tracker().fork() if fork else contextlib.nullcontext():
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=allowed, dropout_p=dropout, is_causal=is_causal,
                scale=self.softmax_scale, enable_gqa=query.shape[1] != key.shape[1],
            )
        return context.permute(2, 0, 1, 3).reshape(sq, batch, self.hidden_size_per_partition)


def transformer_engine_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def core_attention(kind: Attention) -> type:
    """The core-attention module for `model.attention`."""
    if kind == "auto":
        kind = "te" if transformer_engine_available() else "sdpa"
    if kind == "te":
        if not transformer_engine_available():
            raise RaytronError("model.attention=te: Transformer Engine is not installed (the NGC PyTorch image has "
                               "it); use model.attention=sdpa or auto")
        from megatron.core.extensions.transformer_engine import TEDotProductAttention

        return TEDotProductAttention
    return {"sdpa": SDPAttention, "local": DotProductAttention}[kind]


def with_core_attention(spec: ModuleSpec, kind: Attention) -> ModuleSpec:
    """A copy of a transformer-layer spec whose self-attention uses `kind`'s core attention."""
    spec = copy.deepcopy(spec)
    spec.submodules.self_attention.submodules.core_attention = core_attention(kind)
    return spec
