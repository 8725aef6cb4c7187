"""Fitting the two topic models on the same documents: BERTopic on given embeddings, and gensim LDA."""

from __future__ import annotations

import numpy as np
from gensim.corpora import Dictionary
from gensim.models import LdaModel

from raytron.config import TopicModelConfig
from raytron.topics.metrics import vectorizer


def bertopic(cfg: TopicModelConfig, seed: int, nr_topics: int | None = None, top_n_words: int = 25):
    """An unfitted BERTopic: UMAP (seeded) -> HDBSCAN -> c-TF-IDF with the shared vectorizer."""
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from umap import UMAP

    return BERTopic(
        umap_model=UMAP(n_neighbors=cfg.n_neighbors, n_components=cfg.n_components, min_dist=0.0, metric="cosine",
                        random_state=seed),
        hdbscan_model=HDBSCAN(min_cluster_size=cfg.min_cluster_size, metric="euclidean",
                              cluster_selection_method=cfg.cluster_selection, prediction_data=True),
        vectorizer_model=vectorizer(),
        nr_topics=nr_topics,
        top_n_words=top_n_words,
        calculate_probabilities=False,
    )


def fit_bertopic(docs: list[str], embeddings: np.ndarray, cfg: TopicModelConfig, seed: int,
                 nr_topics: int | None = None):
    """Fit, then give outlier documents (-1) their nearest topic by c-TF-IDF and refresh the keywords."""
    model = bertopic(cfg, seed, nr_topics, top_n_words=max(cfg.top_words, cfg.diversity_words))
    topics, _ = model.fit_transform(docs, embeddings)
    if -1 in topics and len(set(topics)) > 1:
        topics = model.reduce_outliers(docs, topics, strategy="c-tf-idf")
        model.update_topics(docs, topics=topics, vectorizer_model=vectorizer(),
                            top_n_words=max(cfg.top_words, cfg.diversity_words))
    return model, list(topics)


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
