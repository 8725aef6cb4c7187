"""The topic model's search: UMAP/HDBSCAN settings scored by NPMI and diversity on documents held out from the fit.

Objective (written down, and logged by every search): topic_quality = NPMI x topic diversity (Dieng et al. 2020's
topic quality), each the mean over `topics.topic_counts` (BERTopic's topics merged to each count; HDBSCAN's own
clusters when the list is empty) and over the seeds run so far. BERTopic is fitted on the fit documents only; NPMI
counts word co-occurrence in the held-out documents (`tune.holdout` of the corpus), so settings that memorize the
fit documents' word pairs gain nothing. Each seed is one Tune result: ASHA's rungs are seeds.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import tune

from raytron.config import TopicsConfig

log = logging.getLogger("raytron.tune")
OBJECTIVE = ("topic_quality = NPMI x diversity (Dieng et al. 2020), means over topics.topic_counts and seeds; NPMI "
             "on documents held out from the fit")


def prepare_topics(job: TopicsConfig) -> dict:
    """What every trial shares: the fit documents and their embeddings (the run's encoder, cached), the vocabulary of
    the fit documents, and the held-out documents' tokens and dictionary for NPMI."""
    from gensim.corpora import Dictionary

    from raytron.data.news import load_documents
    from raytron.runtime import use_gpu
    from raytron.topics.embed import cached_embed, encoder_folders, main_encoder
    from raytron.topics.metrics import tokenize, vocabulary

    docs = load_documents(job.data)
    name, folder = main_encoder(job, encoder_folders(job))
    vectors = cached_embed(docs, name, folder, job, use_gpu(job))
    held = np.random.default_rng(job.tune.seed).random(len(docs)) < job.tune.holdout
    texts, heldout = list(docs["text"][~held]), list(docs["text"][held])
    vocab = vocabulary(texts, job.topics.min_df, job.topics.max_df)
    tokens = tokenize(heldout, vocab)
    log.info("objective: %s; %d documents fitted, %d held out (tune.holdout=%g), %s encoder", OBJECTIVE, len(texts),
             len(heldout), job.tune.holdout, name)
    return {"texts": texts, "embeddings": vectors[~held], "vocab": vocab, "heldout_tokens": tokens,
            "dictionary": Dictionary(tokens)}


def topics_trial(values: dict, job: dict, metric: str, texts, embeddings, vocab, heldout_tokens, dictionary) -> None:
    """One trial: per seed, one UMAP + HDBSCAN fit with this trial's settings, merged to each topic count and scored
    on the held-out documents; reports the running means after each seed."""
    from raytron.topics.models import bertopic_words, cluster, merge
    from raytron.topics.sweep import scores
    from raytron.tune.space import trial_config

    cfg = trial_config(TopicsConfig.model_validate(job), values).topics
    npmis, diversities = [], []
    for done, seed in enumerate(cfg.seeds, 1):
        clustered = cluster(texts, embeddings, cfg, seed, vocab)
        for count in cfg.topic_counts or [None]:
            result = scores(bertopic_words(merge(clustered, texts, count)[0]), heldout_tokens, dictionary, cfg)
            npmis.append(result["npmi"])
            diversities.append(result["diversity"])
        npmi, diversity = float(np.nanmean(npmis)), float(np.mean(diversities))
        tune.report({"npmi": npmi, "diversity": diversity, "topic_quality": npmi * diversity, "seeds": done})
