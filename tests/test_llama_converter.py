"""SmolLM2 (GGUF -> HF Llama -> Megatron-Core GPTModel): logit parity, greedy equality, round trip."""

import torch

from raytron.inference.generate import GenerationConfig, generate
from raytron.models.llama import state_dict_adapter as adapter
from raytron.models.tensor_parallel_io import gather_full_state_dict
from tests.conftest import PROMPT


def test_config_maps_llama_options(smollm2):
    config, _, ours, _, _ = smollm2
    assert ours.config.num_query_groups == config["num_key_value_heads"] == 3  # GQA
    assert ours.config.normalization == "RMSNorm" and ours.config.gated_linear_unit
    assert ours.share_embeddings_and_output_weights and ours.rotary_pos_emb is not None


def test_logits_match_transformers(smollm2):
    config, _, ours, reference, tokenizer = smollm2
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = ours(ids, torch.arange(ids.shape[1])[None], None)[..., : config["vocab_size"]]
        expected = reference(ids).logits
    assert (logits - expected).abs().max().item() <= 1e-3


def test_greedy_continuation_matches_transformers(smollm2):
    _, _, ours, reference, tokenizer = smollm2
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    expected = reference.generate(ids, max_new_tokens=32, do_sample=False, min_new_tokens=32)[0, ids.shape[1]:]
    ours_out = generate(ours, [ids[0].tolist()], GenerationConfig(max_new_tokens=32), eos_id=-1, pad_id=0)[0]
    assert ours_out == expected.tolist() and len(ours_out) == 32


def test_round_trip_is_bit_identical(smollm2):
    config, weights, ours, _, _ = smollm2
    back = adapter.mcore_to_hf(config, gather_full_state_dict(ours))
    assert set(back) == set(weights)
    assert all(torch.equal(back[name], weights[name]) for name in weights)
