"""Topic quality as in the BERTopic paper (Grootendorst 2022): NPMI coherence and topic diversity.

NPMI is gensim's `CoherenceModel(coherence="c_npmi")` over the top-10 words of each topic, on the
same tokenized documents both models saw; diversity is the share of unique words among the
top-25 words of all topics (Dieng et al. 2020). One tokenizer for both models: scikit-learn's
CountVectorizer analyzer with English stop words (BERTopic's c-TF-IDF uses the same).
"""

from __future__ import annotations

from functools import cache

from gensim.corpora import Dictionary
from gensim.models.coherencemodel import CoherenceModel
from sklearn.feature_extraction.text import CountVectorizer


@cache
def vectorizer() -> CountVectorizer:
    """Lowercased word tokens of 2+ letters (no digits-only tokens), English stop words removed."""
    return CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")


def tokenize(texts: list[str]) -> list[list[str]]:
    analyze = vectorizer().build_analyzer()
    return [analyze(text) for text in texts]


def npmi(topics: list[list[str]], tokens: list[list[str]], dictionary: Dictionary, top_n: int = 10) -> float:
    """Mean c_npmi of the topics' top_n words (words missing from the dictionary are skipped)."""
    known = [[w for w in topic if w in dictionary.token2id][:top_n] for topic in topics]
    known = [topic for topic in known if len(topic) >= 2]
    model = CoherenceModel(topics=known, texts=tokens, dictionary=dictionary, coherence="c_npmi", topn=top_n,
                           processes=1)
    return float(model.get_coherence())


def diversity(topics: list[list[str]], top_n: int = 25) -> float:
    """Unique words / all words over the top_n words of every topic (1.0 = no word shared)."""
    words = [w for topic in topics for w in topic[:top_n]]
    return len(set(words)) / len(words) if words else 0.0
