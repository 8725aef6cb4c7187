"""The BERTopic-vs-LDA sweep over topic counts and seeds (the BERTopic paper's protocol, Grootendorst
2022, sec. 4) as Ray tasks, journaled so that an interrupted sweep resumes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from raytron.config import TopicModelConfig
from raytron.data.newsapi import drop_torn_tail, read_jsonl
from raytron.topics.metrics import TOKEN_PATTERN, diversity, npmi, tokenize
from raytron.topics.models import bertopic_words, cluster, fit_lda, fit_main_model, merge

log = logging.getLogger("raytron.topics")
LDA = "LDA (gensim)"
SCORES = ("topics", "npmi", "npmi_skipped", "diversity")
"""What a journal row holds (part of its key: rows from before a new score are stale)."""
SINGLE_THREADED = {"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
"""Sweep tasks run side by side, one core each: no nested thread pools."""
fit_main_task = ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)(fit_main_model)
"""The run's own model. Every BERTopic fit runs in a Ray worker: in the driver, after ray.init, pynndescent's numba kernels
(UMAP's neighbour search above 4,096 documents) fail to compile."""


def bertopic_name(encoder: str) -> str:
    return f"BERTopic ({encoder})"


def scores(words: list[list[str]], tokens, dictionary, cfg: TopicModelConfig) -> dict:
    """Topics found, NPMI over their top `top_words` (and the topics it had to leave out), diversity
    over their top `diversity_words`."""
    coherence, skipped = npmi(words, tokens, dictionary, cfg.top_words)
    return {"topics": len(words), "npmi": coherence, "npmi_skipped": skipped,
            "diversity": diversity(words, cfg.diversity_words)}


@ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)
def score_bertopic(texts, embeddings, vocab, tokens, dictionary, cfg: TopicModelConfig, seed: int,
                   counts: list[int]) -> list[dict]:
    """One UMAP + HDBSCAN fit, merged to every topic count."""
    clustered = cluster(texts, embeddings, cfg, seed, vocab)
    return [{"requested": count, **scores(bertopic_words(merge(clustered, texts, count)[0]), tokens, dictionary, cfg)}
            for count in counts]


@ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)
def score_lda(tokens, dictionary, cfg: TopicModelConfig, seed: int, count: int) -> list[dict]:
    """One LDA fit with `count` topics."""
    words = fit_lda(tokens, dictionary, count, seed, cfg.lda_passes, cfg.diversity_words)
    return [{"requested": count, **scores(words, tokens, dictionary, cfg)}]


def setup_key(texts: list[str], embeddings: dict[str, np.ndarray], cfg: TopicModelConfig) -> str:
    """What a sweep result depends on besides model, count and seed: the documents, every encoder's
    embeddings (a re-tuned encoder), the fitting settings and the tokenizer. A journal row with another
    key is stale."""
    settings = cfg.model_dump(exclude={"topic_counts", "seeds", "main_topics", "min_topics", "max_topics",
                                       "time_bucket", "over_time", "embed_batch_size", "encoder"})
    digest = hashlib.sha1(json.dumps([texts, settings, TOKEN_PATTERN, SCORES], sort_keys=True).encode())
    for name in sorted(embeddings):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(embeddings[name]).tobytes())
    return digest.hexdigest()[:12]


class Journal:
    """Sweep results as JSON lines, one per (model, topic count, seed), appended as tasks finish; a
    line torn by a crash is skipped (that result is computed again) and cut before the next append."""

    def __init__(self, path: Path, resume: bool = True):
        self.path = Path(path)
        if not resume:
            self.path.unlink(missing_ok=True)

    def rows(self, setup: str) -> list[dict]:
        """The rows recorded for this `setup_key` (others are stale)."""
        return [row for row in read_jsonl(self.path) if row.get("setup") == setup]

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)
        with open(self.path, "a") as out:
            out.write(json.dumps(row) + "\n")


def sweep(texts: list[str], vocab: list[str], embeddings: dict[str, np.ndarray], cfg: TopicModelConfig,
          journal: Journal) -> pd.DataFrame:
    """NPMI and diversity of BERTopic (per encoder) and LDA at every topic count and seed.

    A Ray task per BERTopic encoder and seed (one UMAP + HDBSCAN fit, merged to each count) and per
    LDA count and seed. Results go to `journal` as they finish, and a rerun skips those already
    there: an interrupted sweep resumes instead of starting over.
    """
    from gensim.corpora import Dictionary

    key = setup_key(texts, embeddings, cfg)
    done = journal.rows(key)
    finished = {(r["model"], r["requested"], r["seed"]) for r in done}
    tokens = tokenize(texts, vocab)
    dictionary = Dictionary(tokens)
    shared = {name: ray.put(value) for name, value in
              {"texts": texts, "vocab": vocab, "tokens": tokens, "dictionary": dictionary}.items()}
    pending = {}
    for encoder, vectors in embeddings.items():
        stored = ray.put(vectors)
        for seed in cfg.seeds:
            counts = [c for c in cfg.topic_counts if (bertopic_name(encoder), c, seed) not in finished]
            if counts:
                pending[score_bertopic.remote(shared["texts"], stored, shared["vocab"], shared["tokens"],
                                              shared["dictionary"], cfg, seed, counts)] = (bertopic_name(encoder), seed)
    for count in cfg.topic_counts:
        for seed in cfg.seeds:
            if (LDA, count, seed) not in finished:
                pending[score_lda.remote(shared["tokens"], shared["dictionary"], cfg, seed, count)] = (LDA, seed)
    log.info("sweep: %d Ray tasks over %d documents and %d words (%d results already in %s)", len(pending),
             len(texts), len(vocab), len(done), journal.path)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        model, seed = pending.pop(ready[0])
        for result in ray.get(ready[0]):
            row = {"model": model, "seed": seed, "setup": key, **result}
            journal.append(row)
            done.append(row)
            log.info("%s, %d topics, seed %d: NPMI %.3f (%d topics left out), diversity %.3f (%d tasks left)", model,
                     row["topics"], seed, row["npmi"], row["npmi_skipped"], row["diversity"], len(pending))
    wanted = {(m, c, s) for c in cfg.topic_counts for s in cfg.seeds
              for m in [*(bertopic_name(e) for e in embeddings), LDA]}
    return pd.DataFrame([r for r in done if (r["model"], r["requested"], r["seed"]) in wanted])
