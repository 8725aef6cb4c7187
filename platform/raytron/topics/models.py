"""Fitting the two topic models on the same documents and vocabulary: BERTopic on given embeddings,
and gensim LDA."""

from __future__ import annotations

import copy
import logging

import numpy as np
from gensim.corpora import Dictionary
from gensim.models import LdaModel

from raytron.config import TopicModelConfig
from raytron.topics.metrics import vectorizer


class BenignBERTopicWarnings(logging.Filter):
    """Two BERTopic warnings that do not apply to how raytron uses it, dropped at BERTopic's own logger
    ("BERTopic"; its other messages pass):

    - "Using a custom list of topic assignments may lead to errors if topic reduction techniques are
      used afterwards": `place_outliers` hands update_topics the assignments of reduce_outliers as the
      last step of every fit (nothing is reduced after it); logged once per merge, ~10 times a run.
    - "You are saving a BERTopic model without explicitly defining an embedding model": export.py saves
      the encoder the embeddings came from beside the model (`topic_model/encoder`), which BERTopic's
      saved config has no field for.
    """

    MESSAGES = ("Using a custom list of topic assignments may lead to errors if topic reduction techniques",
                "You are saving a BERTopic model without explicitly defining an embedding model")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(known in message for known in self.MESSAGES)


def quiet_bertopic() -> None:
    """Install `BenignBERTopicWarnings` on the "BERTopic" logger once per process (this module is imported
    by every Ray worker that fits, merges or saves a model)."""
    bertopic_log = logging.getLogger("BERTopic")
    if not any(isinstance(f, BenignBERTopicWarnings) for f in bertopic_log.filters):
        bertopic_log.addFilter(BenignBERTopicWarnings())


quiet_bertopic()


def bertopic(cfg: TopicModelConfig, seed: int, vocabulary: list[str] | None = None):
    """An unfitted BERTopic: UMAP (seeded) -> HDBSCAN -> c-TF-IDF over `vocabulary`."""
    from bertopic import BERTopic
    from bertopic.vectorizers import ClassTfidfTransformer
    from hdbscan import HDBSCAN
    from umap import UMAP

    return BERTopic(
        umap_model=UMAP(n_neighbors=cfg.n_neighbors, n_components=cfg.n_components, min_dist=cfg.min_dist, metric="cosine",
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


def topic_count(model) -> int:
    """Topics of a BERTopic model, the outlier topic -1 not counted."""
    return len(set(model.topics_) - {-1})


def reduce(clustered, docs: list[str], nr_topics: int | str | None):
    """A copy of a `cluster`ed model merged by topic similarity: to `nr_topics` topics, or by BERTopic's
    automatic reduction ("auto": HDBSCAN over the topics' embeddings joins the topics that cluster
    together); None keeps them all. Outliers (-1) are left as they are."""
    model = copy.deepcopy(clustered)
    if nr_topics == "auto":
        if topic_count(model) > 2:  # HDBSCAN needs 3+ topics to cluster
            model.reduce_topics(docs, nr_topics="auto")
    elif nr_topics is not None:
        model.reduce_topics(docs, nr_topics=nr_topics + 1)  # + the outlier topic -1
    return model


def place_outliers(model, docs: list[str]):
    """`model` with its outlier documents (-1) given their nearest topic by c-TF-IDF, keywords refreshed;
    returns it and the documents' topics."""
    topics = model.topics_
    if -1 in topics and len(set(topics)) > 1:
        topics = model.reduce_outliers(docs, topics, strategy="c-tf-idf")
        model.update_topics(docs, topics=topics, vectorizer_model=model.vectorizer_model,
                            ctfidf_model=model.ctfidf_model, top_n_words=model.top_n_words)
    return model, list(topics)


def merge(clustered, docs: list[str], nr_topics: int | None):
    """A copy of a `cluster`ed model merged to `nr_topics` topics (c-TF-IDF similarity; None keeps them
    all), its outlier documents (-1) given their nearest topic by c-TF-IDF, keywords refreshed.

    The costly UMAP + HDBSCAN run once per seed and every topic count is merged from it: the same
    models as BERTopic(nr_topics=k) fitted once per k.
    """
    return place_outliers(reduce(clustered, docs, nr_topics), docs)


def main_model(clustered, docs: list[str], nr_topics: int | None, floor: int | None = None,
               cap: int | None = None) -> tuple[object, list[int], str]:
    """The run's model from a `cluster`ed one, and a sentence saying how its topic count was chosen.

    `nr_topics` given: merged to that many. None: the automatic count, BERTopic's own (`reduce` with
    "auto": HDBSCAN's clusters, then those whose topic embeddings cluster together joined), raised to
    `floor` (when HDBSCAN found that many clusters) and lowered to `cap`, both by c-TF-IDF merging from
    HDBSCAN's clusters."""
    found = topic_count(clustered)
    if nr_topics is not None:
        model, topics = merge(clustered, docs, nr_topics)
        return model, topics, (f"{topic_count(model)} topics (topics.main_topics={nr_topics}; HDBSCAN found {found} "
                               "clusters)")
    automatic = reduce(clustered, docs, "auto")
    joined = topic_count(automatic)
    wanted = None  # the automatic model as it is
    if floor is not None and joined < floor:
        wanted = min(floor, found)
        applied = f"floor {floor} applied" if wanted == floor else f"floor {floor} not reachable: all {found} kept"
    elif cap is not None and joined > cap:
        wanted, applied = cap, f"cap {cap} applied"
    else:
        applied = f"within floor {floor} and cap {cap}" if floor is not None or cap is not None else "no floor or cap"
    model, topics = place_outliers(automatic, docs) if wanted is None else merge(clustered, docs, wanted)
    return model, topics, (f"{topic_count(model)} topics (automatic: HDBSCAN found {found} clusters, BERTopic's "
                           f"merge of similar topics left {joined}; {applied})")


def fit_bertopic(docs: list[str], embeddings: np.ndarray, cfg: TopicModelConfig, seed: int,
                 nr_topics: int | None = None, vocabulary: list[str] | None = None):
    """`cluster` then `merge`: one BERTopic model with `nr_topics` topics and no outliers."""
    return merge(cluster(docs, embeddings, cfg, seed, vocabulary), docs, nr_topics)


def fit_main_model(docs: list[str], embeddings: np.ndarray, cfg: TopicModelConfig, seed: int, nr_topics: int | None,
                   vocabulary: list[str] | None = None, floor: int | None = None, cap: int | None = None):
    """`cluster` then `main_model`: the run's model, its documents' topics, and how its count was chosen."""
    return main_model(cluster(docs, embeddings, cfg, seed, vocabulary), docs, nr_topics, floor, cap)


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
