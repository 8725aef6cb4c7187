"""The topic model's search: UMAP/HDBSCAN settings scored on documents held out from the fit, counting the topics found.

Objective (written down here, and logged by every search):

    topic_quality = (1 + NPMI) / 2  x  diversity  x  coverage

per requested topic count k (each of `topics.topic_counts`; `topics.min_topics` when that list is empty), then the
mean over the counts and the seeds run so far. NPMI: of the topics' top words, counted in the held-out documents
(`tune.holdout` of the corpus; BERTopic is fitted on the rest, so settings that memorize the fit documents' word pairs
gain nothing), rescaled from [-1, 1] to [0, 1]: with a negative NPMI (a small reference corpus), the plain product
NPMI x diversity would reward less diverse topics. Diversity: unique words among the topics' top words (Dieng et al.
2020). Coverage: min(1, topics found / k): a clustering that collapses (HDBSCAN finding 2 clusters, which no merge
can turn into 10) scores in proportion to the topics it lacks, instead of scoring its 2 topics' NPMI and diversity
as if they were k. All three factors lie in [0, 1], so the product rises with each. Each seed is one Tune result:
ASHA's rungs are seeds.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import tune

from raytron.config import TopicModelConfig, TopicsConfig
from raytron.errors import RaytronError

log = logging.getLogger("raytron.tune")
PARTS = ("topic_quality", "npmi", "diversity", "coverage", "topics")
"""What a topics trial reports besides its seeds, each the running mean over counts and seeds."""
OBJECTIVE = ("topic_quality = (1 + NPMI)/2 x diversity x coverage, per requested topic count k (topics.topic_counts, "
             "else topics.min_topics), meaned over the counts and seeds; NPMI on documents held out from the fit, "
             "coverage = min(1, topics found / k)")


def requested_counts(cfg: TopicModelConfig) -> list[int]:
    """The topic counts a trial is scored at: topics.topic_counts, else topics.min_topics (the least it must find)."""
    if cfg.topic_counts:
        return list(cfg.topic_counts)
    if cfg.min_topics is None:
        raise RaytronError("a topics search scores the topics found against the counts asked for: set "
                           "topics.topic_counts (e.g. [10, 20]) or, for HDBSCAN's own clusters, topics.min_topics")
    return [cfg.min_topics]


def split_heldout(texts: list[str], vectors: np.ndarray, job: TopicsConfig) -> dict:
    """The fit documents and their embeddings, the fit documents' vocabulary, and the held-out documents' tokens and
    dictionary (NPMI's reference corpus): `tune.holdout` of the documents, drawn with `tune.seed`."""
    from gensim.corpora import Dictionary

    from raytron.topics.metrics import tokenize, vocabulary

    held = np.random.default_rng(job.tune.seed).random(len(texts)) < job.tune.holdout
    texts = np.asarray(texts, dtype=object)
    fit = list(texts[~held])
    vocab = vocabulary(fit, job.topics.min_df, job.topics.max_df)
    tokens = tokenize(list(texts[held]), vocab)
    return {"texts": fit, "embeddings": vectors[~held], "vocab": vocab, "heldout_tokens": tokens,
            "dictionary": Dictionary(tokens)}


def prepare_topics(job: TopicsConfig) -> dict:
    """What every trial shares: `split_heldout` of the corpus, embedded once by the run's encoder (cached)."""
    from raytron.data.news import load_documents
    from raytron.runtime import use_gpu
    from raytron.topics.embed import cached_embed, encoder_folders, main_encoder

    counts = requested_counts(job.topics)
    docs = load_documents(job.data)
    name, folder = main_encoder(job, encoder_folders(job))
    shared = split_heldout(list(docs["text"]), cached_embed(docs, name, folder, job, use_gpu(job)), job)
    log.info("objective: %s; scored at k = %s; %d documents fitted, %d held out (tune.holdout=%g), %s encoder",
             OBJECTIVE, counts, len(shared["texts"]), len(docs) - len(shared["texts"]), job.tune.holdout, name)
    return shared


def seed_scores(cfg: TopicModelConfig, seed: int, texts, embeddings, vocab, heldout_tokens, dictionary) -> list[dict]:
    """One UMAP + HDBSCAN fit with `cfg`'s settings, merged to each requested count k and scored on the held-out
    documents: per k, the topics found, NPMI, diversity, coverage and topic_quality (the module's objective)."""
    from raytron.topics.models import bertopic_words, cluster, merge
    from raytron.topics.sweep import scores

    clustered = cluster(texts, embeddings, cfg, seed, vocab)
    rows = []
    for count in requested_counts(cfg):
        row = scores(bertopic_words(merge(clustered, texts, count)[0]), heldout_tokens, dictionary, cfg)
        npmi = -1.0 if np.isnan(row["npmi"]) else row["npmi"]  # no topic NPMI can score: the worst NPMI
        coverage = min(1.0, row["topics"] / count)
        rows.append({"requested": count, **row, "coverage": coverage,
                     "topic_quality": (1 + npmi) / 2 * row["diversity"] * coverage})
    return rows


def topics_trial(values: dict, job: dict, metric: str, **shared) -> None:
    """One trial: `seed_scores` per seed with this trial's settings; reports the running means after each seed."""
    from raytron.tune.space import trial_config

    cfg = trial_config(TopicsConfig.model_validate(job), values).topics
    rows = []
    for done, seed in enumerate(cfg.seeds, 1):
        rows += seed_scores(cfg, seed, **shared)
        means = {key: float(np.nanmean([row[key] for row in rows])) for key in PARTS}
        tune.report({**means, "seeds": done})
