"""Score texts with a trained sentiment model folder (a Ray Data callable class; Serve reuses it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytron.inference.cuda_graphs import GraphedForward
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
        self.graphed: GraphedForward | None = None

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The eager forward (bf16 autocast on a GPU) of `inputs`' tensors."""
        # no autocast weight cache: a CUDA graph must not capture casts cached outside it
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda",
                            cache_enabled=False):
            return self.model(input_ids, attention_mask, features)

    def inputs(self, batch: dict[str, np.ndarray]) -> list[torch.Tensor]:
        """An encoded batch (`raytron.data.imdb.ReviewEncoder`) as the model's device tensors."""
        to = lambda name, dtype: torch.tensor(np.asarray(batch[name]), dtype=dtype, device=self.device)  # noqa: E731
        features = torch.stack([to(name, torch.float32) for name in self.meta["features"]], dim=-1)
        return [to("input_ids", torch.long), to("attention_mask", torch.long), features]

    @torch.no_grad()
    def capture_cuda_graphs(self, example: dict[str, np.ndarray], max_rows: int) -> None:
        """From now on, batches run as CUDA graphs of up to `max_rows` rows (`raytron.inference.cuda_graphs`);
        `example` (an encoded batch) gives the inputs' shapes and the values the captures are checked on."""
        self.graphed = GraphedForward(self.logits, self.inputs(example), max_rows)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        forward = self.logits if self.graphed is None else self.graphed
        logits = forward(*self.inputs(batch))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return {**batch, "prob_positive": probs[:, 1], "prediction": probs.argmax(-1)}
