"""Score texts with a trained sentiment model folder (a Ray Data callable class; Serve reuses it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytron.models.classifier import classifier_from_hf
from raytron.runtime import init_megatron
from raytron.store import read_head, read_meta


class SentimentPredictor:
    """Builds the Megatron-Core classifier from `model_dir` once; each call scores an encoded batch."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        self.meta = read_meta(model_dir)
        self.device = init_megatron()
        model, _, _ = classifier_from_hf(
            model_dir / "encoder", len(self.meta["features"]), len(self.meta["labels"]), 0.0,
            hidden_dropout=0.0, attention_dropout=0.0,
        )
        model.head.load_state_dict(read_head(model_dir))
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        to = lambda name, dtype: torch.tensor(np.asarray(batch[name]), dtype=dtype, device=self.device)  # noqa: E731
        features = torch.stack([to(name, torch.float32) for name in self.meta["features"]], dim=-1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(to("input_ids", torch.long), to("attention_mask", torch.long), features)
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return {**batch, "prob_positive": probs[:, 1], "prediction": probs.argmax(-1)}
