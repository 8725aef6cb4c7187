"""Summarization task for the shared loop: a Llama decoder (HF -> Megatron-Core GPTModel), next-token
loss on the summary tokens only (prompt and padding carry IGNORE_INDEX), exported as an HF folder."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.utils import unwrap_model
from torch.utils.checkpoint import checkpoint

from raytron.config import SummarizationConfig
from raytron.data.cnn_dailymail import IGNORE_INDEX
from raytron.errors import RaytronError
from raytron.models.llama import state_dict_adapter as adapter
from raytron.models.llama.model import decoder_from_hf, decoder_hidden_states
from raytron.models.pretrained import resolve_pretrained
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.store import write_decoder
from raytron.train.flops import training_flops

TRAIN_COLUMNS = ("input_ids", "labels")


LOGIT_CHUNK = 1024
"""Supervised positions projected to the vocabulary at a time: a [1024 x 49,152] fp32 block is 200 MB."""


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next one); IGNORE_INDEX where nothing is supervised."""
    labels = labels.long()
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)


def vocab_parallel_losses(output_layer, weight, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token losses of `hidden` [n, h] with the vocabulary split over the tensor-parallel ranks (Megatron's
    `vocab_parallel_cross_entropy`: max, exp and sum as separate passes over an fp32 copy of the logits)."""
    logits, _ = output_layer(hidden.unsqueeze(1), weight=weight)  # [n, 1, vocab / TP]
    return tensor_parallel.vocab_parallel_cross_entropy(logits.float(), targets.unsqueeze(1)).squeeze(1)


def whole_vocab_losses(output_layer, weight, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same losses with the whole vocabulary on this rank (TP = 1): `F.cross_entropy` in fp32, which
    `torch.compile` fuses with the cast of the logits into a few Inductor kernels."""
    logits, _ = output_layer(hidden.unsqueeze(1), weight=weight)  # [n, 1, vocab]
    return F.cross_entropy(logits.squeeze(1).float(), targets, reduction="none")


def summary_span(labels: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's `width` positions from the first one that predicts a summary token, and their next-token
    targets (IGNORE_INDEX past the summary). A row's supervised positions are one span (prompt, summary + EOS,
    right padding: `cnn_dailymail.SummaryEncoder`) of at most max_summary_tokens + 1, so `width` that long
    covers it: fixed shapes, where selecting the supervised positions by a mask reads their count back to the
    host (a sync that drains the GPU's queue every micro-batch)."""
    targets = next_token_targets(labels)
    first = (targets != IGNORE_INDEX).int().argmax(1)  # 0 for a row without a summary: all its targets ignored
    offsets = torch.arange(min(width, labels.shape[1]), device=labels.device)
    positions = (first[:, None] + offsets).clamp(max=labels.shape[1] - 1)  # the last position predicts nothing
    return positions, targets.gather(1, positions)


def supervised_losses(model, input_ids: torch.Tensor, labels: torch.Tensor, width: int,
                      chunk_losses=vocab_parallel_losses) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token losses (`chunk_losses`: `vocab_parallel_losses`, or `whole_vocab_losses` compiled on one TP rank)
    over each row's summary span (`summary_span`), 0 where nothing is supervised, and the mask of the supervised
    ones; both [rows, width].

    The decoder runs on every position, but the output layer and the loss only on the span (~128 of 1,024),
    in chunks recomputed in backward: logits never exist for the prompt, and never all at once."""
    gpt = unwrap_model(model)  # the GPTModel inside DDP / Float16Module (their forward only passes through)
    positions, targets = summary_span(labels, width)
    supervised = targets != IGNORE_INDEX
    all_positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    # attention_mask=None: the causal mask; right padding sits after every supervised token
    hidden = decoder_hidden_states(gpt, input_ids.long(), all_positions).transpose(0, 1)
    span = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1])).flatten(0, 1)
    weight = gpt.shared_embedding_or_output_weight() if gpt.share_embeddings_and_output_weights else None
    losses = torch.cat([
        checkpoint(chunk_losses, gpt.output_layer, weight, h, t, use_reentrant=False)
        for h, t in zip(span.split(LOGIT_CHUNK), targets.clamp(min=0).flatten().split(LOGIT_CHUNK), strict=True)
    ]).view_as(targets)
    return torch.where(supervised, losses, 0.0), supervised


class SummarizationTask:
    columns = TRAIN_COLUMNS
    selection = "neg_loss"
    published_as = "summarization"

    def __init__(self, cfg: SummarizationConfig):
        self.cfg = cfg
        self.pretrained = resolve_pretrained(cfg.model.pretrained)

    def build(self, device, params_dtype):
        model, self.tconfig, self.hf_config = decoder_from_hf(self.pretrained, params_dtype, self.cfg.model.attention,
                                                                 self.cfg.model.kernels)
        return model.to(device), self.tconfig

    @functools.cached_property
    def chunk_losses(self):
        """The loss of a chunk of supervised positions: with train.compile on one TP rank, `whole_vocab_losses`
        compiled (6% of the compiled 128 x 1,024 step on an H200, docs/gpu-fast-path.md); otherwise Megatron's
        `vocab_parallel_losses`, which eagerly is as fast and holds less memory (its passes work in place)."""
        if self.cfg.train.compile and parallel_state.get_tensor_model_parallel_world_size() == 1:
            return torch.compile(whole_vocab_losses)
        return vocab_parallel_losses

    @property
    def span_width(self) -> int:
        """Positions per row that can predict a summary token (`summary_span`): the summary and its EOS."""
        return self.cfg.data.max_summary_tokens + 1

    def loss(self, model, batch):
        losses, _ = supervised_losses(model, batch["input_ids"], batch["labels"], self.span_width, self.chunk_losses)
        return losses.sum()

    def check_rows(self, rows, split):
        """Every row's supervised labels lie within `span_width` positions (what `summary_span` covers)."""
        labelled = rows["labels"] != IGNORE_INDEX
        first, last = labelled.argmax(1), labelled.shape[1] - 1 - labelled[:, ::-1].argmax(1)
        widths = np.where(labelled.any(1), last - first + 1, 0)
        if (widths > self.span_width).any():
            row = int(np.argmax(widths > self.span_width))
            raise RaytronError(
                f"{split} row {row} has labels over {widths[row]} positions, more than data.max_summary_tokens + 1 = "
                f"{self.span_width}: the rows were encoded with other settings. Encode them with this config's "
                "(raytron.data.cnn_dailymail) or raise data.max_summary_tokens")

    def lengths(self, batch):
        # real (non-pad) tokens of a row: everything up to its last supervised label (right padding)
        labelled = batch["labels"] != IGNORE_INDEX
        return (labelled.shape[1] - labelled.flip(1).int().argmax(1)) * labelled.any(1)

    def measure(self, batch):
        lengths = self.lengths(batch)
        items = (next_token_targets(batch["labels"]) != IGNORE_INDEX).sum()  # all in the span: `check_rows`
        return {"items": items, "tokens": lengths.sum(), "positions": torch.full((), batch["labels"].numel(),
                                                                                device=lengths.device),
                "flops": training_flops(self.tconfig, lengths, items, self.hf_config["vocab_size"])}

    def validation_sums(self, model, batch):
        losses, supervised = supervised_losses(model, batch["input_ids"], batch["labels"], self.span_width,
                                               self.chunk_losses)
        return torch.stack([losses.sum().double(), supervised.sum().double()])

    def validation_metrics(self, sums):
        loss = (sums[0] / sums[1]).item()
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "neg_loss": -loss}

    def export(self, model, metrics):
        full = gather_full_state_dict(model)
        if dist.get_rank() == 0:
            weights = adapter.mcore_to_hf(self.hf_config, full, tp=parallel_state.get_tensor_model_parallel_world_size())
            meta = {
                "task": "summarization",
                "max_length": self.cfg.data.max_length,
                "pretrained": str(self.pretrained),
                "metrics": metrics,
                "tuned": self.cfg.tune.applied,  # the tuned recipe applied (raytron.tune.recipe), or None
                "config": self.cfg.model_dump(),
            }
            write_decoder(self.cfg.run_dir / "model", self.hf_config, self.pretrained,
                          {k: v.float() for k, v in weights.items()}, meta)
        dist.barrier()
