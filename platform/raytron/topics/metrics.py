"""Topic quality as in the BERTopic paper (Grootendorst 2022): NPMI coherence and topic diversity.

NPMI is gensim's `CoherenceModel(coherence="c_npmi")` over the top-10 words of each topic, on the
same tokenized documents both models saw; diversity is the share of unique words among the
top-25 words of all topics (Dieng et al. 2020). One tokenizer and one vocabulary for both models
and the metric, as OCTIS's preprocessed corpora do: scikit-learn's CountVectorizer analyzer with
English stop words, then the words between a minimum and a maximum document frequency.
"""

from __future__ import annotations

import re

from gensim.corpora import Dictionary
from gensim.models.coherencemodel import CoherenceModel
from sklearn.feature_extraction.text import CountVectorizer

from raytron.errors import RaytronError

STOP_WORDS = "english"
TOKEN_PATTERN = r"\b(?=[a-zA-Z0-9]*[a-zA-Z])[a-zA-Z0-9]{2,}\b"
"""Lowercased tokens of 2+ letters and digits with at least one letter: `G7`, `5G`, `H1N1` and
`Covid-19` (`covid19` once `bertopic_text` drops the hyphen) are words; digits-only tokens are not."""


def bertopic_text(text: str) -> str:
    """BERTopic's English preprocessing before its vectorizer (`BERTopic._preprocess_text`): newlines
    and tabs to spaces, then ASCII letters, digits and spaces only ("don't" -> "dont"). Applied
    before our tokenizer too, so that every word in the vocabulary is one c-TF-IDF can see."""
    return re.sub(r"[^A-Za-z0-9 ]+", "", text.replace("\n", " ").replace("\t", " "))


def vectorizer(vocabulary: list[str] | None = None, min_df: int = 1, max_df: float = 1.0) -> CountVectorizer:
    """The shared CountVectorizer; with `vocabulary`, it counts those words only."""
    return CountVectorizer(stop_words=STOP_WORDS, token_pattern=TOKEN_PATTERN, vocabulary=vocabulary,
                           min_df=min_df, max_df=max_df)


def vocabulary(texts: list[str], min_df: int = 1, max_df: float = 1.0) -> list[str]:
    """Words in at least `min_df` documents and at most a `max_df` share of them, sorted."""
    try:
        return list(vectorizer(min_df=min_df, max_df=max_df).fit(map(bertopic_text, texts)).get_feature_names_out())
    except ValueError as error:  # no word left, or max_df below min_df
        raise RaytronError(f"no vocabulary from {len(texts)} documents with topics.min_df={min_df} and "
                           f"topics.max_df={max_df} ({error}): lower min_df or raise max_df") from error


def tokenize(texts: list[str], vocabulary: list[str] | None = None) -> list[list[str]]:
    """Each text's tokens in order, kept to `vocabulary` when given."""
    analyze = vectorizer().build_analyzer()
    tokens = (analyze(bertopic_text(text)) for text in texts)
    if vocabulary is None:
        return list(tokens)
    known = set(vocabulary)
    return [[word for word in words if word in known] for words in tokens]


def npmi(topics: list[list[str]], tokens: list[list[str]], dictionary: Dictionary, top_n: int = 10) -> tuple[float, int]:
    """Mean c_npmi of the topics' top_n words found in the reference corpus (`dictionary`), and how
    many topics were left out of the mean for having fewer than 2 such words (NaN when all were)."""
    known = [[w for w in topic if w in dictionary.token2id][:top_n] for topic in topics]
    scored = [topic for topic in known if len(topic) >= 2]
    if not scored:
        return float("nan"), len(topics)
    model = CoherenceModel(topics=scored, texts=tokens, dictionary=dictionary, coherence="c_npmi", topn=top_n,
                           processes=1)
    return float(model.get_coherence()), len(topics) - len(scored)


def diversity(topics: list[list[str]], top_n: int = 25) -> float:
    """Unique words / all words over the top_n words of every topic (1.0 = no word shared)."""
    words = [w for topic in topics for w in topic[:top_n]]
    return len(set(words)) / len(words) if words else 0.0
