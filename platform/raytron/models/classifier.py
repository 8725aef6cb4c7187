"""Sequence classifier: a Megatron-Core BERT encoder, mean pooling, extra features, an MLP head."""

from __future__ import annotations

from pathlib import Path

import torch
from megatron.core.transformer.module import MegatronModule

from raytron.models.bert import model as bert_model
from raytron.models.bert.model import build_bert, encode
from raytron.models.bert.state_dict_adapter import load_hf_weights, read_hf_folder


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the mask, as sentence-transformers pools ([seq, b, h] -> [b, h])."""
    mask = attention_mask.transpose(0, 1).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(0) / mask.sum(0).clamp(min=1.0)


class SequenceClassifier(MegatronModule):
    """BERT encoder -> mean pool ++ features -> Linear-tanh-Linear logits (MiniLM was trained for mean pooling)."""

    def __init__(self, hf_config: dict, config, num_features: int, num_labels: int = 2, head_dropout: float = 0.1):
        super().__init__(config=config)
        self.bert = build_bert(hf_config, config)
        # The MLM head, pooler and NSP head are kept for checkpoint round trips but not trained here.
        for unused in (self.bert.lm_head, self.bert.output_layer, self.bert.binary_head, self.bert.pooler):
            unused.requires_grad_(False)
        hidden = config.hidden_size
        self.head = torch.nn.Sequential(
            torch.nn.Dropout(head_dropout),
            torch.nn.Linear(hidden + num_features, hidden),
            torch.nn.Tanh(),
            torch.nn.Dropout(head_dropout),
            torch.nn.Linear(hidden, num_labels),
        )
        # Replicated across TP ranks like Megatron's layernorms: identical inputs, identical grads.
        for param in self.head.parameters():
            param.sequence_parallel = False

    def set_input_tensor(self, input_tensor):
        self.bert.set_input_tensor(input_tensor)

    def forward(self, input_ids, attention_mask, features):
        hidden = encode(self.bert, input_ids, attention_mask)
        pooled = mean_pool(hidden, attention_mask)
        return self.head(torch.cat([pooled, features.to(pooled.dtype)], dim=-1))


def classifier_from_hf(encoder_dir: Path, num_features: int, num_labels: int, head_dropout: float,
                       params_dtype=torch.float32, **config_overrides):
    """A SequenceClassifier whose encoder holds this rank's TP shard of an HF BERT folder's weights
    (the head keeps its initialization). Returns the model, its TransformerConfig and the HF config."""
    hf_config, weights = read_hf_folder(encoder_dir)
    tconfig = bert_model.transformer_config(hf_config, params_dtype=params_dtype, **config_overrides)
    model = SequenceClassifier(hf_config, tconfig, num_features, num_labels, head_dropout)
    load_hf_weights(model.bert, hf_config, weights)
    return model, tconfig, hf_config
