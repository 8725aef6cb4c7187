"""Fitting the two topic models on the same documents and vocabulary: BERTopic on given embeddings,
and gensim LDA."""

from __future__ import annotations

import copy

import numpy as np
from gensim.corpora import Dictionary
from gensim.models import LdaModel

from raytron.config import TopicModelConfig
from raytron.topics.metrics import vectorizer


def bertopic(cfg: TopicModelConfig, seed: int, vocabulary: list[str] | None = None):
    """An unfitted BERTopic: UMAP (seeded) -> HDBSCAN -> c-TF-IDF over `vocabulary`."""
    from bertopic import BERTopic
    from bertopic.vectorizers import ClassTfidfTransformer
    from hdbscan import HDBSCAN
    from umap import UMAP

    return BERTopic(
        umap_model=UMAP(n_neighbors=cfg.n_neighbors, n_components=cfg.n_components, min_dist=0.0, metric="cosine",
                        random_state=seed, n_jobs=1),  # seeded UMAP is single-threaded anyway
        hdbscan_model=HDBSCAN(min_cluster_size=cfg.min_cluster_size, metric="euclidean", core_dist_n_jobs=1,
                              cluster_selection_method=cfg.cluster_selection, prediction_data=True),
        vectorizer_model=vectorizer(vocabulary),
        ctfidf_model=ClassTfidfTransformer(reduce_frequent_words=cfg.reduce_frequent_words),
        top_n_words=max(cfg.top_words, cfg.diversity_words),
        calculate_probabilities=False,
    )


def cluster(docs: list[str], embeddings: np.ndarray, cfg: TopicModelConfig, seed: int,
            vocabulary: list[str] | None = None):
    """BERTopic fitted down to HDBSCAN's clusters (outliers kept), to be merged by `merge`."""
    model = bertopic(cfg, seed, vocabulary)
    model.fit(docs, embeddings)
    return model


def merge(clustered, docs: list[str], nr_topics: int | None):
    """A copy of a `cluster`ed model merged to `nr_topics` topics (c-TF-IDF similarity; None keeps them
    all), its outlier documents (-1) given their nearest topic by c-TF-IDF, keywords refreshed.

    The costly UMAP + HDBSCAN run once per seed and every topic count is merged from it: the same
    models as BERTopic(nr_topics=k) fitted once per k.
    """
    model = copy.deepcopy(clustered)
    if nr_topics is not None:
        model.reduce_topics(docs, nr_topics=nr_topics + 1)  # + the outlier topic -1
    topics = model.topics_
    if -1 in topics and len(set(topics)) > 1:
        topics = model.reduce_outliers(docs, topics, strategy="c-tf-idf")
        model.update_topics(docs, topics=topics, vectorizer_model=model.vectorizer_model,
                            ctfidf_model=model.ctfidf_model, top_n_words=model.top_n_words)
    return model, list(topics)


def fit_bertopic(docs: list[str], embeddings: np.ndarray, cfg: TopicModelConfig, seed: int,
                 nr_topics: int | None = None, vocabulary: list[str] | None = None):
    """`cluster` then `merge`: one BERTopic model with `nr_topics` topics and no outliers."""
    return merge(cluster(docs, embeddings, cfg, seed, vocabulary), docs, nr_topics)


def bertopic_words(model) -> list[list[str]]:
    """Keywords of every topic except the outlier topic -1, best first."""
    return [[word for word, _ in model.get_topic(topic)] for topic in sorted(model.get_topics()) if topic != -1]


def fit_lda(tokens: list[list[str]], dictionary: Dictionary, topics: int, seed: int, passes: int,
            top_n: int = 25) -> list[list[str]]:
    """gensim LDA on the same tokens; the top_n words of each topic."""
    corpus = [dictionary.doc2bow(doc) for doc in tokens]
    lda = LdaModel(corpus, id2word=dictionary, num_topics=topics, passes=passes, random_state=seed,
                   alpha="auto", eta="auto")
    return [[word for word, _ in lda.show_topic(t, topn=top_n)] for t in range(topics)]
