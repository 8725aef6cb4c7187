"""Extractive summarization: a sentence scorer on Megatron-Core MiniLM embeddings, trained on oracle labels.

BertSumExt (Liu & Lapata 2019) scores each sentence with a fine-tuned BERT, trained on greedy
oracle labels (the sentences that together maximize ROUGE-1 + ROUGE-2 against the reference),
and picks the top 3 with trigram blocking. With 595 training articles here, fine-tuning the
encoder for this would overfit; instead the encoder stays frozen and a logistic regression
(scikit-learn) scores each sentence from its embedding, its cosine to the document centroid
(the unsupervised centroid method of Radev et al. 2004) and its position (the lead bias that makes
Lead-3 strong on CNN/DM). The fitted scorer is a few hundred numbers, stored as JSON (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from raytron.evaluate.rouge import sentences
from raytron.inference.embedder import SentenceEmbedder
from raytron.registry import publish
from raytron.store import META, git_commit

SCORER_FILE = "sentence_scorer.json"
POSITIONS = 5
"""One-hot position features for the first POSITIONS sentences (the rest share the last slot)."""


def greedy_oracle(article_sentences: list[str], reference: str, limit: int = 3) -> list[int]:
    """Indices of sentences added greedily while ROUGE-1 + ROUGE-2 F1 of the selection improves."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < limit:
        gains = []
        for index in range(len(article_sentences)):
            if index in chosen:
                continue
            text = " ".join(article_sentences[i] for i in sorted([*chosen, index]))
            score = scorer.score(reference, text)
            gains.append((score["rouge1"].fmeasure + score["rouge2"].fmeasure, index))
        if not gains or max(gains)[0] <= best:
            break
        best, index = max(gains)
        chosen.append(index)
    return sorted(chosen)


def sentence_features(embeddings: np.ndarray) -> np.ndarray:
    """Per sentence: embedding, cosine to the centroid, position one-hot, relative position."""
    count = len(embeddings)
    centroid = embeddings.mean(0)
    centroid /= np.linalg.norm(centroid) + 1e-8
    positions = np.zeros((count, POSITIONS + 1), dtype=np.float32)
    positions[np.arange(count), np.minimum(np.arange(count), POSITIONS)] = 1.0
    relative = (np.arange(count) / max(count - 1, 1))[:, None]
    return np.hstack([embeddings, (embeddings @ centroid)[:, None], positions, relative]).astype(np.float32)


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i: i + 3]) for i in range(len(words) - 2)}


def select(article_sentences: list[str], scores: np.ndarray, count: int) -> str:
    """Top sentences by score, skipping any that repeats a trigram of one already chosen; in article order."""
    chosen: list[int] = []
    seen: set[tuple[str, ...]] = set()
    for index in np.argsort(-scores, kind="stable"):
        grams = _trigrams(article_sentences[index])
        if grams & seen:
            continue
        chosen.append(int(index))
        seen |= grams
        if len(chosen) == count:
            break
    return "\n".join(article_sentences[i] for i in sorted(chosen))


class ExtractiveSummarizer:
    """Sentence embeddings (Megatron-Core encoder) -> scorer -> top sentences with trigram blocking."""

    def __init__(self, encoder_dir: str | Path, scorer_dir: str | Path | None = None, sentences_per_summary: int = 3,
                 max_sentence_tokens: int = 64):
        self.embedder = SentenceEmbedder(encoder_dir, max_length=max_sentence_tokens)
        self.count = sentences_per_summary
        self.weights = None
        if scorer_dir is not None:
            path = Path(scorer_dir) / SCORER_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: fit the extractive scorer with jobs/evaluate.py first")
            self.weights = {k: np.asarray(v, dtype=np.float64) for k, v in json.loads(path.read_text()).items()}

    def features(self, articles: list[str]) -> list[tuple[list[str], np.ndarray]]:
        split = [sentences(a) or [a] for a in articles]
        flat = self.embedder.embed([s for group in split for s in group])
        out, start = [], 0
        for group in split:
            out.append((group, sentence_features(flat[start: start + len(group)])))
            start += len(group)
        return out

    def fit(self, articles: list[str], references: list[str], out_dir: str | Path) -> dict:
        """Train the scorer on greedy-oracle labels of (article, reference) pairs; save it under `out_dir`."""
        rows, labels = [], []
        for (group, feats), reference in zip(self.features(articles), references, strict=True):
            oracle = set(greedy_oracle(group, reference, self.count))
            rows.append(feats)
            labels.extend(int(i in oracle) for i in range(len(group)))
        x, y = np.vstack(rows), np.array(labels)
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(x), y)
        self.weights = {"mean": scaler.mean_, "scale": scaler.scale_, "coef": model.coef_[0],
                        "intercept": model.intercept_}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / (SCORER_FILE + ".partial")
        partial.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in self.weights.items()}))
        partial.rename(out_dir / SCORER_FILE)
        return {"sentences": len(y), "oracle_share": float(y.mean())}

    def scores(self, feats: np.ndarray) -> np.ndarray:
        if self.weights is None:  # unfitted: centroid similarity alone (Radev et al. 2004)
            return feats[:, self.embedder.dimension]
        w = self.weights
        return ((feats - w["mean"]) / w["scale"]) @ w["coef"] + w["intercept"]

    def summarize(self, articles: list[str]) -> list[str]:
        return [select(group, self.scores(feats), self.count) for group, feats in self.features(articles)]

    def __call__(self, batch):
        """Ray Data: add a `prediction` column for the `article` column."""
        return {**batch, "prediction": np.array(self.summarize(list(batch["article"])), dtype=object)}


def publish_scorer(scorer_dir: str | Path, store: str, name: str, settings: dict, fitted: dict, metrics: dict) -> str:
    """Make a fitted scorer's folder a model (raytron.json beside sentence_scorer.json: the encoder and settings it
    was fitted with, what it was fitted on, its test ROUGE) and publish it to `store` as `name`, where the Serve
    Summarizer's extractive mode loads it; returns the version."""
    meta = {"task": "extractive-summarization", **settings, "fitted": fitted, "metrics": metrics, "commit": git_commit(),
            "scorer": "logistic regression on frozen sentence embeddings, centroid similarity and position, fitted on "
                      f"greedy-oracle labels of {fitted['sentences']} training sentences"}
    (Path(scorer_dir) / META).write_text(json.dumps(meta, indent=2))
    return publish(scorer_dir, store, name)

