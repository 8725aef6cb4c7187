"""The summarizer's generation stage: decoding settings of the trained model scored by ROUGE on the validation split.

Each trial loads the trained decoder (`<run>/model/decoder`, written by jobs/finetune.py) once, summarizes the
validation articles (never the test split) with its generation.* values in `parts(cfg)` equal parts, and reports the
running mean ROUGE-1/2/Lsum (F1 x 100) after each part: ASHA's rungs are parts of the same articles in the same order
for every trial, so a trial far behind after the first part is stopped before decoding the rest.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import tune

from raytron.config import SummarizationConfig
from raytron.errors import RaytronError

log = logging.getLogger("raytron.tune")
PARTS = 4
"""Results per trial: the validation articles in this many parts (fewer when there are fewer articles)."""


def parts(cfg: SummarizationConfig) -> int:
    """How many results a generation trial reports."""
    return min(PARTS, cfg.data.val_rows or PARTS)


def prepare_generation(job: SummarizationConfig) -> dict:
    """What every trial shares: the trained decoder's folder, the validation articles and their reference summaries."""
    from raytron.data.cnn_dailymail import read_splits

    decoder = job.run_dir / "model" / "decoder"
    if not decoder.is_dir():
        raise RaytronError(f"no trained decoder at {decoder}: the generation stage searches the decoding of the "
                           f"fine-tuned model, so run jobs/finetune.py with the same recipe and run.name first")
    val = read_splits(job.data.data_dir, {"val": job.data.val_rows})["val"].to_pandas()
    if val.empty:
        raise RaytronError("the validation split is empty: the generation stage scores ROUGE on it (data.val_rows)")
    log.info("objective: ROUGE-1/2/Lsum F1 of %s's summaries of %d validation articles (never test), running means "
             "over %d parts", decoder, len(val), parts(job))
    return {"decoder": str(decoder), "articles": list(val["article"]), "references": list(val["summary"])}


def generation_trial(values: dict, job: dict, metric: str, decoder: str, articles: list[str],
                     references: list[str]) -> None:
    """One trial: the validation articles summarized with this trial's generation settings, part by part; reports the
    running mean ROUGE after each part."""
    from raytron.evaluate.rouge import METRICS, rouge_scores
    from raytron.inference.abstractive import AbstractiveSummarizer
    from raytron.tune.space import trial_config

    cfg = trial_config(SummarizationConfig.model_validate(job), values)
    summarizer = AbstractiveSummarizer(decoder, cfg.generation, cfg.data.max_length,
                                       batch_size=16 if cfg.resources.use_gpu else 4, kernels=cfg.model.kernels)
    scores = {name: [] for name in METRICS}
    for done, rows in enumerate(np.array_split(np.arange(len(articles)), parts(cfg)), 1):
        predictions = summarizer.summarize([articles[i] for i in rows])
        for name, per_article in rouge_scores(predictions, [references[i] for i in rows]).items():
            scores[name] += per_article.tolist()
        tune.report({**{f"val/{name}": float(np.mean(v)) for name, v in scores.items()}, "articles": len(scores["rouge1"]),
                     "parts": done})
