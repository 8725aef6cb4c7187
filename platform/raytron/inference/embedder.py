"""Sentence embeddings from a Megatron-Core BERT encoder, pooled as sentence-transformers does.

all-MiniLM-L6-v2's sentence-transformers pipeline is: tokenize (max 256 tokens), BERT, mean over
the attention mask, L2-normalize. `SentenceEmbedder` does the same with the converted encoder, so
its vectors match sentence-transformers' (tested); a Ray Data callable class and Serve's Embedder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raytron.models.bert.model import bert_from_hf
from raytron.models.classifier import SentenceEncoder
from raytron.runtime import init_megatron


class SentenceEmbedder:
    """Builds the encoder from an HF BERT folder once; `embed(texts)` returns unit vectors [n, hidden]."""

    def __init__(self, encoder_dir: str | Path, max_length: int = 256, batch_size: int = 64):
        from transformers import AutoTokenizer

        self.device = init_megatron()
        bert, _, hf_config = bert_from_hf(encoder_dir, hidden_dropout=0.0, attention_dropout=0.0)
        self.encoder = SentenceEncoder(bert).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        self.max_length = max_length
        self.batch_size = batch_size
        self.dimension = hf_config["hidden_size"]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [str(t) for t in texts[start: start + self.batch_size]]
            encoded = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                pooled = self.encoder(encoded["input_ids"], encoded["attention_mask"])
            out[start: start + len(chunk)] = F.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data: add an `embedding` column for the `text` column."""
        return {**batch, "embedding": self.embed(list(batch["text"]))}
