"""CNN/DM for the decoder: fixed splits, loss masked to the summary; ROUGE and Lead-3 checked by hand."""

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from raytron.data.cnn_dailymail import IGNORE_INDEX, SummaryEncoder, read_splits, split_of
from raytron.evaluate.rouge import bootstrap, lead3, rouge_scores, sentences
from raytron.models.llama.gguf import smollm2_folder


def test_splits_are_fixed_and_disjoint(ray_cluster):
    splits = read_splits(None)
    ids = {name: set(ds.to_pandas()["id"]) for name, ds in splits.items()}
    assert sum(map(len, ids.values())) == 800
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"]) and not (ids["train"] & ids["val"])
    assert all(split_of(i) == "test" for i in ids["test"])  # a pure function of the id
    assert 560 <= len(ids["train"]) <= 640 and 70 <= len(ids["test"]) <= 130


def test_loss_only_on_summary_tokens(ray_cluster):
    encoder = SummaryEncoder(str(smollm2_folder()), max_length=256)
    rows = read_splits(None)["train"].take_batch(4, batch_format="pandas")
    out = encoder(rows)
    tokenizer = encoder.tokenizer
    for ids, labels, summary in zip(out["input_ids"], out["labels"], out["summary"], strict=True):
        supervised = labels != IGNORE_INDEX
        first = int(np.argmax(supervised))
        assert supervised[first:].sum() == supervised.sum()  # one contiguous block at the end of the prompt
        assert (labels[supervised] == ids[supervised]).all()
        target = tokenizer.decode(ids[supervised])
        assert target.startswith(summary[:40]) and target.endswith(tokenizer.eos_token)
        assert "Summarize this news article" in tokenizer.decode(ids[:first])  # prompt present, unsupervised
        assert len(tokenizer(rows["article"].iloc[0])["input_ids"]) > 256  # articles really were truncated


def test_rouge_identical_and_unrelated():
    text = "The cat sat on the mat.\nIt was happy."
    same = bootstrap(rouge_scores([text], [text]))
    assert all(same[m]["mean"] == pytest.approx(100.0) for m in same)
    unrelated = rouge_scores(["Quarterly revenue grew in Asian markets."], ["The cat sat on the mat."])
    assert all(v[0] < 5 for v in unrelated.values())


def test_lead3_by_hand():
    article = 'Rain fell in Paris on Monday. "It was cold," she said. Trains stopped! Schools closed. Dr. Who?'
    assert sentences(article)[:3] == ["Rain fell in Paris on Monday.", '"It was cold," she said.', "Trains stopped!"]
    assert lead3(article) == 'Rain fell in Paris on Monday.\n"It was cold," she said.\nTrains stopped!'


def test_lead3_on_many_threads_equals_one_thread():
    """The Summarizer computes Lead-3 on threads, beside the extractive batches' sentence splitting: each thread must
    get its own sentences (pySBD keeps the text it segments on the segmenter)."""
    articles = [" ".join(f"Story {i} says Dr. Lee met {j} people in the U.S. on day {i + j}." for j in range(5 + i % 40))
                for i in range(160)]
    alone = [lead3(article) for article in articles]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave as often as the interpreter allows
    try:
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lead3, articles))
    finally:
        sys.setswitchinterval(switch)
    assert together == alone


def test_bootstrap_interval_brackets_the_mean():
    scores = {"rouge1": np.linspace(0, 100, 101)}
    interval = bootstrap(scores)["rouge1"]
    assert interval["low"] < 50 == interval["mean"] < interval["high"]
