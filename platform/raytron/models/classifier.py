"""Heads on the Megatron-Core BERT encoder: mean pooling, a sentence encoder and a sequence classifier."""

from __future__ import annotations

from pathlib import Path

import torch
from megatron.core.transformer.module import MegatronModule

from raytron.models.attention import Attention
from raytron.models.bert.model import bert_from_hf, encode


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the mask, as sentence-transformers pools ([seq, b, h] -> [b, h]), in fp32."""
    mask = attention_mask.transpose(0, 1).unsqueeze(-1).float()
    return (hidden.float() * mask).sum(0) / mask.sum(0).clamp(min=1.0)


def _freeze_unused_heads(bert) -> None:
    """The MLM head, pooler and NSP head are kept for checkpoint round trips but not trained here."""
    for unused in (bert.lm_head, bert.output_layer, bert.binary_head, bert.pooler):
        unused.requires_grad_(False)


class SentenceEncoder(MegatronModule):
    """BERT encoder -> mean pooling over the mask (sentence-transformers' pooling), no head."""

    def __init__(self, bert):
        super().__init__(config=bert.config)
        self.bert = bert
        _freeze_unused_heads(bert)

    def set_input_tensor(self, input_tensor):
        self.bert.set_input_tensor(input_tensor)

    def forward(self, input_ids, attention_mask):
        return mean_pool(encode(self.bert, input_ids, attention_mask), attention_mask)


class SequenceClassifier(MegatronModule):
    """BERT encoder -> mean pool ++ features -> Linear-tanh-Linear logits (MiniLM was trained for mean pooling)."""

    def __init__(self, bert, num_features: int, num_labels: int = 2, head_dropout: float = 0.1, head_seed: int = 0):
        super().__init__(config=bert.config)
        self.bert = bert
        _freeze_unused_heads(bert)
        hidden = bert.config.hidden_size
        # Its own seed: the head starts the same whatever the encoder's init consumed (it differs with TP).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
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
        pooled = mean_pool(hidden, attention_mask).to(hidden.dtype)
        return self.head(torch.cat([pooled, features.to(hidden.dtype)], dim=-1))


def classifier_from_hf(encoder_dir: Path, num_features: int, num_labels: int, head_dropout: float,
                       params_dtype=torch.float32, head_seed: int = 0, attention: Attention = "auto",
                       **config_overrides):
    """A SequenceClassifier whose encoder holds this rank's TP shard of an HF BERT folder's weights
    (the head keeps its seeded initialization). Returns the model, its TransformerConfig and the HF config."""
    bert, tconfig, hf_config = bert_from_hf(encoder_dir, params_dtype, attention, **config_overrides)
    return SequenceClassifier(bert, num_features, num_labels, head_dropout, head_seed), tconfig, hf_config
