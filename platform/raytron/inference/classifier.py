"""Score texts with a trained sentiment model folder (a Ray Data callable class; Serve reuses it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytron.models.bert import model as bert_model
from raytron.models.bert.state_dict_adapter import OPTIONAL_MCORE_PREFIXES, hf_to_mcore, read_hf_folder
from raytron.models.classifier import SequenceClassifier
from raytron.models.tensor_parallel_io import load_full_state_dict
from raytron.models.vocab import padded_vocab_size
from raytron.store import read_head, read_meta
from raytron.train.distributed import init_megatron


class SentimentPredictor:
    """Builds the Megatron-Core classifier from `model_dir` once; each call scores an encoded batch."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        self.meta = read_meta(model_dir)
        self.device = init_megatron()
        hf_config, weights = read_hf_folder(model_dir / "encoder")
        tconfig = bert_model.transformer_config(hf_config, hidden_dropout=0.0, attention_dropout=0.0)
        model = SequenceClassifier(hf_config, tconfig, len(self.meta["features"]), len(self.meta["labels"]), 0.0)
        full = hf_to_mcore(hf_config, weights, padded_vocab_size(hf_config["vocab_size"], 1))
        load_full_state_dict(model.bert, full, optional_prefixes=OPTIONAL_MCORE_PREFIXES)
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
