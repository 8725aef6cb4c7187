"""ROUGE-1/2/Lsum with the `rouge-score` package (stemming on) and bootstrap confidence intervals,
plus the Lead-3 baseline (See et al. 2017: the article's first three sentences)."""

from __future__ import annotations

import threading

import numpy as np
import pysbd
from rouge_score import rouge_scorer

METRICS = ("rouge1", "rouge2", "rougeLsum")


_per_thread = threading.local()


def _segmenter() -> pysbd.Segmenter:
    """This thread's segmenter: `segment()` keeps the text it splits on the segmenter, so threads (the Summarizer's
    Lead-3 beside its extractive batches) must not share one."""
    if not hasattr(_per_thread, "segmenter"):
        _per_thread.segmenter = pysbd.Segmenter(language="en", clean=False)
    return _per_thread.segmenter


def sentences(text: str) -> list[str]:
    """Sentences by pySBD's rules ("vs.", "P.T. Barnum" stay whole; no model download needed)."""
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


def lead3(article: str) -> str:
    """The first three sentences, one per line (rougeLsum splits summaries at newlines)."""
    return "\n".join(sentences(article)[:3])


def one_sentence_a_line(text: str) -> str:
    """rougeLsum reads sentences from newlines: split every text the same way (as papers do with NLTK)."""
    return "\n".join(s for line in text.splitlines() for s in sentences(line))


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per-example F1 x 100 for each metric, both sides split one sentence a line first."""
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    rows = [scorer.score(one_sentence_a_line(ref), one_sentence_a_line(pred))
            for pred, ref in zip(predictions, references, strict=True)]
    return {m: np.array([100 * r[m].fmeasure for r in rows]) for m in METRICS}


def bootstrap(scores: dict[str, np.ndarray], samples: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean and 95% percentile-bootstrap interval of each metric over examples."""
    rng = np.random.default_rng(seed)
    out = {}
    for metric, values in scores.items():
        means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
        out[metric] = {"mean": float(values.mean()), "low": float(np.percentile(means, 2.5)),
                       "high": float(np.percentile(means, 97.5))}
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of per-example a - b with a 95% paired-bootstrap interval (same resampled rows for both)."""
    rng = np.random.default_rng(seed)
    means = (a - b)[rng.integers(0, len(a), size=(samples, len(a)))].mean(axis=1)
    return {"mean": float((a - b).mean()), "low": float(np.percentile(means, 2.5)),
            "high": float(np.percentile(means, 97.5))}
