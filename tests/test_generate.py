"""Generation on the converted SmolLM2: KV cache = recompute, beam/sampling/greedy agree where they must, batching, EOS."""

import pytest

from raytron.inference.generate import GenerationConfig, generate
from tests.conftest import PROMPT


@pytest.fixture(scope="module")
def setup(smollm2):
    _, _, ours, _, tokenizer = smollm2
    prompts = [tokenizer(p)["input_ids"] for p in (PROMPT, "Once upon a time", "Breaking news:")]
    return ours, prompts


def run(model, prompts, **options):
    return generate(model, prompts, GenerationConfig(max_new_tokens=10, **options), eos_id=-1, pad_id=0)


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "num_beams": 3},
                                     {"strategy": "sample", "temperature": 0.9, "top_p": 0.9, "seed": 3}])
def test_kv_cache_equals_recomputing(setup, options):
    model, prompts = setup
    assert run(model, prompts, kv_cache=True, **options) == run(model, prompts, kv_cache=False, **options)


def test_batched_equals_one_by_one(setup):
    model, prompts = setup
    for options in ({}, {"strategy": "beam", "num_beams": 3}):
        assert run(model, prompts, **options) == [run(model, [p], **options)[0] for p in prompts]


def test_one_beam_and_a_tiny_nucleus_are_greedy(setup):
    model, prompts = setup
    greedy = run(model, prompts)
    assert run(model, prompts, strategy="beam", num_beams=1) == greedy
    assert run(model, prompts, strategy="sample", top_p=1e-6, seed=1) == greedy


def test_sampling_follows_its_seed(setup):
    model, prompts = setup
    hot = {"strategy": "sample", "temperature": 1.5}
    assert run(model, prompts, seed=5, **hot) == run(model, prompts, seed=5, **hot)
    assert run(model, prompts, seed=5, **hot) != run(model, prompts, seed=6, **hot)


def test_stops_at_eos_and_token_limit(setup):
    model, prompts = setup
    alone = run(model, prompts[:1])[0]
    assert len(alone) == 10  # no EOS: the token limit
    stop_at = alone[3]  # pretend the 4th token is EOS: generation ends before it
    config = GenerationConfig(max_new_tokens=10)
    assert generate(model, prompts[:1], config, eos_id=stop_at, pad_id=0)[0] == alone[: alone.index(stop_at)]
    beam = GenerationConfig(max_new_tokens=10, strategy="beam", num_beams=2)
    assert stop_at not in generate(model, prompts[:1], beam, eos_id=stop_at, pad_id=0)[0]


def test_empty_prompt_is_refused(setup):
    model, _ = setup
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], GenerationConfig(), eos_id=-1, pad_id=0)


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "num_beams": 2}])
def test_stop_ends_generation_between_steps(setup, options):
    """`stop` is asked before the prompt pass and before each step: once it says True, `generate` raises Stopped
    (no more forward passes); while it says False, the continuations are unchanged."""
    from raytron.inference.generate import Stopped

    model, prompts = setup
    assert generate(model, prompts, GenerationConfig(max_new_tokens=10, **options), eos_id=-1, pad_id=0,
                    stop=lambda: False) == run(model, prompts, **options)
    asked, forwards = [], []
    hook = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(Stopped, match="step 2"):
            generate(model, prompts, GenerationConfig(max_new_tokens=10, **options), eos_id=-1, pad_id=0,
                     stop=lambda: asked.append(1) or len(asked) > 3)
    finally:
        hook.remove()
    assert len(asked) == 4 and len(forwards) == 3  # the prompt pass, steps 1 and 2; not step 3 nor the rest
