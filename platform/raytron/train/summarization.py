"""Summarization task for the shared loop: a Llama decoder (HF -> Megatron-Core GPTModel), next-token
loss on the summary tokens only (prompt and padding carry IGNORE_INDEX), exported as an HF folder."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from raytron.config import SummarizationConfig
from raytron.data.cnn_dailymail import IGNORE_INDEX
from raytron.models.llama import state_dict_adapter as adapter
from raytron.models.llama.model import decoder_from_hf
from raytron.models.pretrained import resolve_pretrained
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.store import write_decoder

TRAIN_COLUMNS = ("input_ids", "labels")


def token_losses(model, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token loss (vocab-parallel cross entropy) and the mask of supervised positions."""
    input_ids, labels = input_ids.long(), labels.long()
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)
    supervised = targets != IGNORE_INDEX
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    # attention_mask=None: the causal mask; right padding sits after every supervised token
    losses = model(input_ids, positions, None, labels=targets.masked_fill(~supervised, 0))
    return losses.float() * supervised, supervised


class SummarizationTask:
    columns = TRAIN_COLUMNS
    selection = "neg_loss"
    published_as = "summarization"

    def __init__(self, cfg: SummarizationConfig):
        self.cfg = cfg
        self.pretrained = resolve_pretrained(cfg.model.pretrained)

    def build(self, device, params_dtype):
        model, tconfig, self.hf_config = decoder_from_hf(self.pretrained, params_dtype, self.cfg.model.attention)
        return model.to(device), tconfig

    def loss(self, model, batch):
        losses, supervised = token_losses(model, batch["input_ids"], batch["labels"])
        # real (non-pad) tokens of a row: everything up to its last supervised label (right padding)
        labelled = batch["labels"] != IGNORE_INDEX
        lengths = labelled.shape[1] - labelled.flip(1).int().argmax(1)
        return losses.sum() / supervised.sum().clamp(min=1), int(lengths[labelled.any(1)].sum())

    def validation_sums(self, model, batch):
        losses, supervised = token_losses(model, batch["input_ids"], batch["labels"])
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
                "config": self.cfg.model_dump(),
            }
            write_decoder(self.cfg.run_dir / "model", self.hf_config, self.pretrained,
                          {k: v.float() for k, v in weights.items()}, meta)
        dist.barrier()
