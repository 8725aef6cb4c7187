"""Build a Megatron-Core BertModel shaped like a Hugging Face BERT config, and run its encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.transformer_config import TransformerConfig

from raytron.models.attention import Attention
from raytron.models.bert.layer import post_layernorm_bert_layer_spec
from raytron.models.bert.state_dict_adapter import load_hf_weights, read_hf_folder
from raytron.models.runtime import runtime_fields
from raytron.models.vocab import padded_vocab_size

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


def transformer_config(hf: dict[str, Any], *, params_dtype=torch.float32, **overrides) -> TransformerConfig:
    """Megatron-Core TransformerConfig equal to an HF BertConfig (config.json as a dict)."""
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT checkpoints with absolute position embeddings are supported")
    fields = dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        num_attention_heads=hf["num_attention_heads"],
        ffn_hidden_size=hf["intermediate_size"],
        layernorm_epsilon=hf.get("layer_norm_eps", 1e-12),
        activation_func=_ACTIVATIONS[hf.get("hidden_act", "gelu")],
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        init_method_std=hf.get("initializer_range", 0.02),
        add_bias_linear=True,
        **runtime_fields(params_dtype),
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


class PostLayerNormBertModel(BertModel):
    """BertModel with our layer specs: Megatron-Core 0.16.1's mask-layout check knows its own
    DotProductAttention and Transformer Engine only, and takes any other core attention (our SDPA
    subclass included) for TE, whose version check then fails without TE."""

    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        core = self.transformer_layer_spec.submodules.self_attention.submodules.core_attention
        if isinstance(core, type) and issubclass(core, DotProductAttention):
            return "b1ss"  # [b, 1, s, s] booleans, True = masked out
        return super()._sanity_check_attention_and_get_attn_mask_dimension()


def build_bert(hf: dict[str, Any], config: TransformerConfig, attention: Attention = "auto") -> BertModel:
    """A BertModel for this pipeline stage, with BERT's post-LN layers, pooler and MLM head."""
    return PostLayerNormBertModel(
        config=config,
        num_tokentypes=hf.get("type_vocab_size", 2),
        transformer_layer_spec=post_layernorm_bert_layer_spec(attention),
        vocab_size=padded_vocab_size(hf["vocab_size"], config.tensor_model_parallel_size),
        max_sequence_length=hf["max_position_embeddings"],
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=True,
        add_binary_head=True,
    )


def bert_from_hf(folder: str | Path, params_dtype=torch.float32, attention: Attention = "auto", **config_overrides):
    """A BertModel holding this rank's TP shard of an HF BERT folder; returns it, its TransformerConfig and
    the HF config. The one builder of this family: training, inference, serving and embedding use it."""
    hf_config, weights = read_hf_folder(folder)
    tconfig = transformer_config(hf_config, params_dtype=params_dtype, **config_overrides)
    bert = build_bert(hf_config, tconfig, attention)
    load_hf_weights(bert, hf_config, weights)
    return bert, tconfig, hf_config


def encode(bert: BertModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states [seq, batch, hidden] (HF's last_hidden_state, transposed).

    BertModel.forward ends in the MLM head; encoders (classifiers, embedders) need the states
    before it, so this runs its embedding and encoder alone. On a middle pipeline stage the
    input comes through `set_input_tensor` and `input_ids` is unused.
    """
    extended_mask = bert.bert_extended_attention_mask(attention_mask)
    embedded = None
    if bert.pre_process:
        embedded = bert.embedding(
            input_ids=input_ids,
            position_ids=bert.bert_position_ids(input_ids),
            tokentype_ids=torch.zeros_like(input_ids),
        )
    return bert.encoder(hidden_states=embedded, attention_mask=extended_mask)
