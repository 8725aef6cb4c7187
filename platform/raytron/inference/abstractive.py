"""Abstractive summaries from a decoder folder (pretrained or fine-tuned) as a Megatron-Core GPTModel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from raytron.data.cnn_dailymail import clean_article, prompt_ids
from raytron.inference.generate import GenerationConfig, Stopped, generate
from raytron.models.kernels import Kernels
from raytron.models.llama.model import decoder_from_hf
from raytron.runtime import init_megatron


class AbstractiveSummarizer:
    """Loads the decoder once; `summarize(articles)` prompts it as in training and decodes in batches."""

    def __init__(self, decoder_dir: str | Path, generation: dict | GenerationConfig | None = None,
                 max_length: int = 1024, batch_size: int = 8, kernels: Kernels = "fused"):
        from transformers import AutoTokenizer

        self.device = init_megatron()
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        model, _, self.hf_config = decoder_from_hf(decoder_dir, dtype, kernels=kernels)
        self.model = model.eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
        self.generation = GenerationConfig.model_validate(generation or {})
        self.max_length = max_length
        self.batch_size = batch_size

    def summarize(self, articles: list[str], generation: GenerationConfig | None = None,
                  abandoned: Callable[[int], bool] | None = None) -> list[str | None]:
        """One summary per article; with `abandoned` (article index -> nobody waits for it any more), a
        sub-batch stops generating between steps once all of its articles are abandoned, and theirs are None."""
        generation = generation or self.generation
        budget = self.max_length - generation.max_new_tokens
        prompts = [prompt_ids(self.tokenizer, self.tokenizer(clean_article(a), add_special_tokens=False)["input_ids"],
                              budget) for a in articles]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        # similar lengths batch together: less padding
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start: start + self.batch_size]
            stop = None if abandoned is None else (lambda rows=rows: all(abandoned(r) for r in rows))
            try:
                continuations = generate(self.model, [prompts[r] for r in rows], generation, eos, pad, stop)
            except Stopped:
                continue
            for row, ids in zip(rows, continuations, strict=True):
                outputs[row] = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return outputs

    def __call__(self, batch):
        """Ray Data: add a `prediction` column for the `article` column."""
        return {**batch, "prediction": np.array(self.summarize(list(batch["article"])), dtype=object)}
