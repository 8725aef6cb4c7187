"""Build a Megatron-Core GPTModel equal to an HF Llama config (RMSNorm, SwiGLU, RoPE, GQA, no biases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from raytron.models.attention import Attention, with_core_attention
from raytron.models.kernels import Kernels
from raytron.models.kernels.swiglu import SwiGLU
from raytron.models.llama import state_dict_adapter as adapter
from raytron.models.llama.self_attention import FusedRopeSelfAttention
from raytron.models.runtime import runtime_fields
from raytron.models.tensor_parallel_io import load_full_state_dict
from raytron.models.vocab import padded_vocab_size


def rope_theta(hf: dict[str, Any]) -> float:
    """RoPE base: transformers 5 nests it in `rope_parameters`, older configs keep `rope_theta`."""
    return float((hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10000.0)))


def transformer_config(hf: dict[str, Any], *, params_dtype=torch.float32, kernels: Kernels = "fused",
                       **overrides) -> TransformerConfig:
    """Megatron's config of an HF Llama config; `kernels=fused` turns on the MLP's activation module (SwiGLU)."""
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf['hidden_act']!r}: only SwiGLU (silu) Llama checkpoints are supported")
    heads = hf["num_attention_heads"]
    fields = dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads", heads),
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        ffn_hidden_size=hf["intermediate_size"],
        normalization="RMSNorm",
        layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=bool(hf.get("attention_bias", False)),
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        init_method_std=hf.get("initializer_range", 0.02),
        use_te_activation_func=kernels == "fused",  # Megatron's switch for the spec's activation module
        **runtime_fields(params_dtype),
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def build_gpt(hf: dict[str, Any], config: TransformerConfig, attention: Attention = "auto",
              kernels: Kernels = "fused") -> GPTModel:
    """A GPTModel for this pipeline stage with Llama's options: Megatron-Core's local layer spec (its norms
    and linears need no Transformer Engine) with `attention`'s core attention and `kernels`' self-attention and
    MLP activation (the config from `transformer_config(..., kernels=kernels)`)."""
    if (kernels == "fused") != config.use_te_activation_func:
        raise ValueError(f"build_gpt(kernels={kernels!r}) needs the config of transformer_config(kernels={kernels!r})")
    spec = with_core_attention(get_gpt_layer_local_spec(normalization="RMSNorm"), attention)
    if kernels == "fused":
        spec.submodules.self_attention.module = FusedRopeSelfAttention
        spec.submodules.mlp.submodules.activation_func = SwiGLU
    return GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab_size(hf["vocab_size"], config.tensor_model_parallel_size),
        max_sequence_length=hf["max_position_embeddings"],
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
        position_embedding_type="rope",
        rotary_base=rope_theta(hf),
    )


def decoder_from_hf(folder: str | Path, params_dtype=torch.float32, attention: Attention = "auto",
                    kernels: Kernels = "fused", **config_overrides):
    """A GPTModel holding this rank's TP shard of an HF Llama folder; returns it, its TransformerConfig and
    the HF config. The one builder of this family: training, inference and serving use it."""
    hf_config, weights = adapter.read_hf_folder(folder)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    tconfig = transformer_config(hf_config, params_dtype=params_dtype, kernels=kernels, **config_overrides)
    model = build_gpt(hf_config, tconfig, attention, kernels)
    load_full_state_dict(model, adapter.hf_to_mcore(hf_config, weights, padded_vocab_size(hf_config["vocab_size"], tp), tp))
    return model, tconfig, hf_config


def decoder_hidden_states(gpt: GPTModel, input_ids, position_ids, attention_mask=None):
    """Final (normed) hidden states [seq, batch, hidden]: GPTModel.forward without the output layer, so that
    callers project only the positions they need (GPTModel's own `_preprocess` embeds and builds RoPE)."""
    decoder_input, rotary_pos_emb, rotary_pos_cos, rotary_pos_sin, sequence_len_offset = gpt._preprocess(
        input_ids=input_ids, position_ids=position_ids)[:5]
    return gpt.decoder(hidden_states=decoder_input, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb,
                       rotary_pos_cos=rotary_pos_cos, rotary_pos_sin=rotary_pos_sin,
                       sequence_len_offset=sequence_len_offset)
