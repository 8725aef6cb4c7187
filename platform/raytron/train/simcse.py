"""Unsupervised contrastive tuning of the topic encoder: no labels, only the corpus.

The positive pair of a document is its two halves (DeCLUTR, Giorgi et al. 2021: spans of one
document), each encoded with its own dropout mask (SimCSE, Gao et al. 2021); an InfoNCE loss
pulls the pair together against the other documents of the micro-batch (temperature 0.05).
Dropout alone (plain unsupervised SimCSE) was tried first: on 20NG posts MiniLM already tells
documents apart, the loss sat at ~1e-7 and nothing was learned. Span pairs ask for what topic
clustering needs: two parts of one post land together. Chosen over masked-LM continued
pretraining because all-MiniLM-L6-v2 ships without an MLM head and is used as a *sentence*
encoder: this adapts exactly the pooled embedding BERTopic clusters.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from raytron.config import TopicsConfig
from raytron.models.bert.model import bert_from_hf
from raytron.models.classifier import SentenceEncoder
from raytron.models.pretrained import resolve_pretrained
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.store import write_encoder
from raytron.train.flops import training_flops

TRAIN_COLUMNS = ("input_ids", "attention_mask", "input_ids_b", "attention_mask_b")


def info_nce(first: torch.Tensor, second: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean InfoNCE loss of matching row i of `first` to row i of `second`, and how often it ranks first."""
    similarity = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).T / temperature
    targets = torch.arange(len(first), device=first.device)
    return F.cross_entropy(similarity, targets), (similarity.argmax(-1) == targets).float().mean()


class ContrastiveTask:
    columns = TRAIN_COLUMNS
    selection = "neg_loss"
    published_as = "topics-encoder"

    def __init__(self, cfg: TopicsConfig):
        self.cfg = cfg
        self.pretrained = resolve_pretrained(cfg.model.pretrained)

    def build(self, device, params_dtype):
        dropout = self.cfg.model.dropout
        bert, tconfig, self.hf_config = bert_from_hf(self.pretrained, params_dtype, self.cfg.model.attention, hidden_dropout=dropout,
                                                     attention_dropout=dropout)
        self.tconfig = tconfig
        return SentenceEncoder(bert).to(device), tconfig

    def check_rows(self, rows, split):
        """Nothing to check: every encoded view holds at least [CLS] and [SEP], and any ids the tokenizer gave."""

    def _pair_loss(self, model, batch):
        first = model(batch["input_ids"].long(), batch["attention_mask"].long())
        second = model(batch["input_ids_b"].long(), batch["attention_mask_b"].long())
        return info_nce(first, second, self.cfg.model.temperature)

    def loss(self, model, batch):
        return self._pair_loss(model, batch)[0] * len(batch["input_ids"])  # InfoNCE is a mean over rows

    def lengths(self, batch):
        return torch.maximum(batch["attention_mask"].sum(1), batch["attention_mask_b"].sum(1))

    def measure(self, batch):
        lengths = torch.cat([batch["attention_mask"].sum(1), batch["attention_mask_b"].sum(1)])
        positions = batch["attention_mask"].numel() + batch["attention_mask_b"].numel()
        return {"items": torch.full((), len(batch["input_ids"]), device=lengths.device), "tokens": lengths.sum(),
                "positions": torch.full((), positions, device=lengths.device),
                "flops": training_flops(self.tconfig, lengths)}

    def validation_sums(self, model, batch):
        # In eval mode (no dropout): the halves are two views already, and the selection metric must not
        # move with dropout noise from epoch to epoch.
        loss, top1 = self._pair_loss(model, batch)
        rows = float(len(batch["input_ids"]))
        return torch.stack([loss.double() * rows, top1.double() * rows,
                            torch.full((), rows, dtype=torch.float64, device=loss.device)])

    def validation_metrics(self, sums):
        loss = (sums[0] / sums[2]).item()
        return {"loss": loss, "pair_top1": (sums[1] / sums[2]).item(), "neg_loss": -loss}

    def export(self, model, metrics):
        full = {name: tensor.float() for name, tensor in gather_full_state_dict(model.bert).items()}
        if dist.get_rank() == 0:
            meta = {"task": "topics", "objective": "simcse", "max_length": self.cfg.data.max_length,
                    "pretrained": str(self.pretrained), "metrics": metrics, "tuned": self.cfg.tune.applied,
                    "config": self.cfg.model_dump()}
            write_encoder(self.cfg.run_dir / "model", self.hf_config, self.pretrained, full, meta)
        dist.barrier()
