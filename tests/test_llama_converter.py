"""SmolLM2 (GGUF -> HF Llama -> Megatron-Core GPTModel): logit parity, greedy equality, round trip, batching."""

import pytest
import torch
import transformers

from raytron.inference.generate import greedy
from raytron.models.llama import model as llama_model
from raytron.models.llama import state_dict_adapter as adapter
from raytron.models.llama.gguf import smollm2_folder
from raytron.models.tensor_parallel_io import gather_full_state_dict, load_full_state_dict
from raytron.models.vocab import padded_vocab_size
from raytron.train.distributed import init_megatron

PROMPT = "The capital of France is Paris. The capital of Germany is"


@pytest.fixture(scope="module")
def models():
    init_megatron()
    folder = smollm2_folder()
    config, weights = adapter.read_hf_folder(folder)
    ours = llama_model.build_gpt(config, llama_model.transformer_config(config)).eval()
    load_full_state_dict(ours, adapter.hf_to_mcore(config, weights, padded_vocab_size(config["vocab_size"], 1)))
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return config, weights, ours, reference, tokenizer


def test_config_maps_llama_options(models):
    config, _, ours, _, _ = models
    assert ours.config.num_query_groups == config["num_key_value_heads"] == 3  # GQA
    assert ours.config.normalization == "RMSNorm" and ours.config.gated_linear_unit
    assert ours.share_embeddings_and_output_weights and ours.rotary_pos_emb is not None


def test_logits_match_transformers(models):
    config, _, ours, reference, tokenizer = models
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = ours(ids, torch.arange(ids.shape[1])[None], None)[..., : config["vocab_size"]]
        expected = reference(ids).logits
    assert (logits - expected).abs().max().item() <= 1e-3


def test_greedy_continuation_matches_transformers(models):
    _, _, ours, reference, tokenizer = models
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    expected = reference.generate(ids, max_new_tokens=32, do_sample=False, min_new_tokens=32)[0, ids.shape[1]:]
    ours_out = greedy(ours, [ids[0].tolist()], 32, eos_id=-1, pad_id=tokenizer.pad_token_id or 0)[0]
    assert ours_out == expected.tolist() and len(ours_out) == 32


def test_batched_generation_equals_one_by_one_and_stops(models):
    _, _, ours, _, tokenizer = models
    prompts = [tokenizer(p)["input_ids"] for p in (PROMPT, "Once upon a time")]
    alone = [greedy(ours, [p], 8, eos_id=-1, pad_id=0)[0] for p in prompts]
    assert greedy(ours, prompts, 8, eos_id=-1, pad_id=0) == alone  # left padding changes nothing
    stop_at = alone[0][3]  # pretend the 4th token is EOS: generation ends before it
    assert greedy(ours, prompts[:1], 8, eos_id=stop_at, pad_id=0)[0] == alone[0][: alone[0].index(stop_at)]


def test_round_trip_is_bit_identical(models):
    config, weights, ours, _, _ = models
    back = adapter.mcore_to_hf(config, gather_full_state_dict(ours))
    assert set(back) == set(weights)
    assert all(torch.equal(back[name], weights[name]) for name in weights)
