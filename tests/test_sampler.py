"""Length-bucketed batches (train.bucket_by_length): every micro-batch is cut to its longest row rounded up to
64 tokens, the order stays a seeded function of (seed, epoch) that data-parallel ranks slice, and validation
of the real encoder and decoder on real rows gives the unbucketed metrics."""

import gzip
import json
from itertools import islice

import numpy as np
import pandas as pd
import pytest
import torch

from raytron.config import load_config
from raytron.runtime import init_megatron
from raytron.train.sampler import StepSampler, row_lengths, to_device, validation_batches
from raytron.train.tasks import make_task
from tests.conftest import DATA_ROOT, REPO


def padded_rows(lengths: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Right-padded encoder rows with these real lengths (token ids 1000 + position, padding 0)."""
    real = np.arange(width)[None, :] < lengths[:, None]
    return {"input_ids": np.where(real, 1000 + np.arange(width), 0).astype(np.int32),
            "attention_mask": real.astype(np.int8), "label": np.arange(len(lengths)) % 2}


class MaskLengths:
    """A task's `lengths` for encoder rows (as SentimentTask counts them)."""

    @staticmethod
    def lengths(batch):
        return batch["attention_mask"].sum(1)


@pytest.fixture(scope="module")
def review_lengths():
    """Lengths like IMDb's at 512 tokens: many short reviews, a long tail cut at 512."""
    rng = np.random.default_rng(7)
    return np.minimum(rng.lognormal(5.5, 0.6, 1000).astype(int) + 3, 512)


def test_each_micro_batch_is_cut_to_its_longest_row_rounded_up_to_64(review_lengths):
    rows = padded_rows(review_lengths, 512)
    lengths = row_lengths(MaskLengths, rows)
    assert np.array_equal(lengths, review_lengths)
    sampler = StepSampler(len(lengths), global_batch=32, micro_batch=8, dp_rank=0, dp_size=1, seed=3, lengths=lengths)
    padded = real = 0
    for step in range(sampler.steps_per_epoch):
        for index in sampler.micro_batches(epoch=1, step_in_epoch=step):
            batch = to_device(rows, index, torch.device("cpu"), lengths)
            longest = review_lengths[index].max()
            expected = min(512, int(np.ceil(longest / 64)) * 64)
            assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, expected)
            assert torch.equal(batch["attention_mask"].sum(1), torch.from_numpy(review_lengths[index]))  # no token lost
            assert torch.equal(batch["input_ids"], torch.from_numpy(rows["input_ids"][index, :expected]))
            assert batch["label"].shape == (8,)
            padded += batch["input_ids"].numel()
            real += int(review_lengths[index].sum())
    unbucketed = sampler.steps_per_epoch * 32 * 512
    assert padded < 0.6 * unbucketed  # the point of it: most of the padding is gone
    assert real / padded > 0.75, real / padded


def test_the_bucketed_order_is_seeded_per_epoch_and_ranks_slice_each_global_batch(review_lengths):
    def sampler(dp_rank=0, dp_size=1, lengths=review_lengths, seed=3):
        return StepSampler(len(review_lengths), 32, 8, dp_rank, dp_size, seed, lengths)

    whole = sampler()
    epoch = whole.epoch_order(2)
    used = whole.steps_per_epoch * 32
    assert len(epoch) == len(set(epoch)) == used  # each row at most once, every full step filled
    assert np.array_equal(epoch, sampler().epoch_order(2))  # a restarted rank computes the same order
    assert not np.array_equal(epoch, whole.epoch_order(3))
    assert not np.array_equal(epoch, sampler(seed=4).epoch_order(2))
    # batches hold rows of similar length: their spread is far below that of random batches
    spread = np.ptp(review_lengths[epoch].reshape(-1, 32), axis=1).mean()
    random_spread = np.ptp(review_lengths[sampler(lengths=None).epoch_order(2)[:used]].reshape(-1, 32), axis=1).mean()
    assert spread < 0.4 * random_spread, (spread, random_spread)
    # the plain order is the one every earlier run and checkpoint used
    assert np.array_equal(sampler(lengths=None).epoch_order(2), np.random.default_rng([3, 2]).permutation(1000))
    for step in (0, 7, whole.steps_per_epoch - 1):
        one_rank = np.concatenate(whole.micro_batches(2, step))
        two_ranks = np.concatenate([np.concatenate(sampler(rank, 2).micro_batches(2, step)) for rank in (0, 1)])
        assert np.array_equal(one_rank, two_ranks)
        assert np.array_equal(one_rank, epoch[step * 32:(step + 1) * 32])


def validation_sums(task, model, rows, lengths=None):
    total = None
    for index in validation_batches(len(rows["input_ids"]), 4, 0, 1, lengths):
        batch = to_device(rows, index, torch.device("cpu"), lengths)
        sums = task.validation_sums(model, batch)
        total = sums if total is None else total + sums
    return total


def bucketed_and_plain(task, model, rows):
    """Validation sums with and without bucketing, and the widths the bucketed micro-batches were cut to."""
    lengths = row_lengths(task, rows)
    batches = validation_batches(len(lengths), 4, 0, 1, lengths)
    widths = [to_device(rows, index, torch.device("cpu"), lengths)["input_ids"].shape[1] for index in batches]
    with torch.no_grad():
        return validation_sums(task, model, rows, lengths), validation_sums(task, model, rows), widths


def test_validation_of_the_real_encoder_is_unchanged_by_bucketing():
    from raytron.data.imdb import ReviewEncoder

    init_megatron()
    cfg = load_config(REPO / "configs" / "sentiment.yaml", ["data.max_length=256", "model.dropout=0.0"])
    task = make_task(cfg)
    model, _ = task.build(torch.device("cpu"), torch.float32)
    with gzip.open(DATA_ROOT / "imdb" / "imdb_50k.jsonl.gz", "rt") as lines:
        reviews = pd.DataFrame([json.loads(line) for line in islice(lines, 24)])
    reviews["label"] = (reviews["label"] == "pos").astype(int)
    encoded = ReviewEncoder(str(task.pretrained), 256, 64)(reviews)
    rows = {column: encoded[column] for column in task.columns}
    bucketed, plain, widths = bucketed_and_plain(task, model.eval(), rows)
    assert min(widths) < 256 and all(w % 64 == 0 for w in widths)  # some batches were really cut
    assert plain[2] == bucketed[2] == 24
    assert bucketed[1] == plain[1]  # the same reviews right
    assert bucketed[0].item() == pytest.approx(plain[0].item(), rel=1e-5, abs=1e-6)


def test_validation_of_the_real_decoder_is_unchanged_by_bucketing(smollm2):
    from raytron.data.cnn_dailymail import SummaryEncoder, summary_text

    cfg = load_config(REPO / "configs" / "summarization.yaml", ["data.max_length=256"])
    task = make_task(cfg)
    _, _, model, _, _ = smollm2
    with gzip.open(next((DATA_ROOT / "cnn_dailymail").glob("*.jsonl.gz")), "rt") as lines:
        stories = pd.DataFrame([json.loads(line) for line in islice(lines, 8)])
    # articles of different lengths (cut to 60-900 characters) so that the rows are not all full
    stories["article"] = [a[:60 + 120 * i] for i, a in enumerate(stories["article"])]
    stories["summary"] = stories["highlights"].map(summary_text)
    encoded = SummaryEncoder(str(task.pretrained), 256, max_summary_tokens=32)(stories)
    rows = {column: encoded[column] for column in task.columns}
    bucketed, plain, widths = bucketed_and_plain(task, model, rows)
    assert min(widths) < 256 and all(w % 64 == 0 for w in widths)
    assert bucketed[1] == plain[1] > 100  # the same supervised tokens
    assert bucketed[0].item() == pytest.approx(plain[0].item(), rel=1e-5)
