"""Vocabulary padding shared by every model family (Megatron-LM's --make-vocab-size-divisible-by)."""

from __future__ import annotations

import math

import torch

VOCAB_DIVISOR = 128
"""Pad the vocabulary to a multiple of this times TP, so every TP rank holds an equal, aligned slice."""


def padded_vocab_size(vocab_size: int, tensor_parallel: int) -> int:
    """Smallest multiple of VOCAB_DIVISOR * TP that holds `vocab_size` rows."""
    step = VOCAB_DIVISOR * tensor_parallel
    return int(math.ceil(vocab_size / step) * step)


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append zero rows up to `rows` (embedding and output-layer padding)."""
    pad = torch.zeros((rows - tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype)
    return torch.cat([tensor, pad])
