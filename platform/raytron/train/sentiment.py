"""Sentiment task for the shared loop: MiniLM encoder (HF -> Megatron-Core) + mean pool + features head."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from raytron.config import SentimentConfig
from raytron.data.imdb import LABELS
from raytron.errors import RaytronError
from raytron.models.classifier import classifier_from_hf
from raytron.models.pretrained import resolve_pretrained
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.store import write_classifier
from raytron.train.flops import training_flops

TRAIN_COLUMNS = ("input_ids", "attention_mask", "label", "log_length", "vader_compound")


class SentimentTask:
    columns = TRAIN_COLUMNS
    selection = "accuracy"
    published_as = "sentiment"

    def __init__(self, cfg: SentimentConfig):
        self.cfg = cfg
        self.pretrained = resolve_pretrained(cfg.model.pretrained)

    def build(self, device, params_dtype):
        model, tconfig, self.hf_config = classifier_from_hf(
            self.pretrained, len(self.cfg.model.features), len(LABELS), self.cfg.model.head_dropout,
            params_dtype=params_dtype, head_seed=self.cfg.train.seed, attention=self.cfg.model.attention,
            **self.cfg.model.dropout_overrides(),
        )
        self.tconfig = tconfig
        return model.to(device), tconfig

    def logits(self, model, batch):
        feats = torch.stack([batch[name].float() for name in self.cfg.model.features], dim=-1)
        return model(batch["input_ids"].long(), batch["attention_mask"].long(), feats).float()

    def loss(self, model, batch):
        return F.cross_entropy(self.logits(model, batch), batch["label"], reduction="sum")

    def lengths(self, batch):
        return batch["attention_mask"].sum(1)

    def check_rows(self, rows, split):
        """Every label is one of LABELS' indices (cross entropy on a GPU fails with a device assert otherwise)."""
        wrong = (rows["label"] < 0) | (rows["label"] >= len(LABELS))
        if wrong.any():
            row = int(wrong.argmax())
            raise RaytronError(f"{split} row {row} has label {rows['label'][row]}, not one of 0..{len(LABELS) - 1} "
                               f"({', '.join(LABELS)}): fix the dataset's labels")

    def measure(self, batch):
        lengths = self.lengths(batch)
        # torch.full, not torch.tensor: a host value copied to a GPU is a sync, a fill is a kernel
        return {"items": torch.full((), len(lengths), device=lengths.device), "tokens": lengths.sum(),
                "positions": torch.full((), batch["attention_mask"].numel(), device=lengths.device),
                "flops": training_flops(self.tconfig, lengths)}

    def validation_sums(self, model, batch):
        logits = self.logits(model, batch)
        return torch.stack([
            F.cross_entropy(logits, batch["label"], reduction="sum").double(),
            (logits.argmax(-1) == batch["label"]).sum().double(),
            torch.full((), len(logits), dtype=torch.float64, device=logits.device),
        ])

    def validation_metrics(self, sums):
        return {"loss": (sums[0] / sums[2]).item(), "accuracy": (sums[1] / sums[2]).item()}

    def export(self, model, metrics):
        bert_full = {name: tensor.float() for name, tensor in gather_full_state_dict(model.bert).items()}
        if dist.get_rank() == 0:
            cfg = self.cfg
            meta = {
                "task": "sentiment",
                "labels": list(LABELS),
                "features": cfg.model.features,
                "max_length": cfg.data.max_length,
                "head_tokens": cfg.data.head_tokens,
                "hidden_size": self.hf_config["hidden_size"],
                "pretrained": str(self.pretrained),
                "metrics": metrics,
                "tuned": cfg.tune.applied,  # the tuned recipe applied (raytron.tune.recipe), or None
                "config": cfg.model_dump(),
            }
            head = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
            write_classifier(cfg.run_dir / "model", self.hf_config, self.pretrained, bert_full, head, meta)
        dist.barrier()
