"""`train.compile`: the compiled Megatron-Core transformer layers compute what the eager ones compute (outputs and
gradients, fp32 on CPU) as whole graphs (no graph break, one graph for all layers; with static shapes, one a
width), keep their parameter names (checkpoints and exports unchanged); an encoder with attention dropout trains
compiled, Megatron's RNG setter (TP > 1) run eagerly; a model without a transformer layer is a clear error."""

import pytest
import torch
from megatron.core.tensor_parallel import random as megatron_random
from torch._dynamo.utils import counters

from raytron.errors import RaytronError
from raytron.models.bert import model as bert_model
from raytron.models.llama import model as llama_model
from raytron.runtime import init_megatron
from raytron.train.compile import compile_layers

TINY_LLAMA = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "vocab_size": 300,
              "tie_word_embeddings": True}


def eager_and_compiled(transformer_config, build, hf: dict, static_shapes: int | None = None):
    """Two copies of one seeded model (SDPA attention), the second's layers compiled (a fresh Dynamo cache)."""
    init_megatron()
    torch.manual_seed(0)
    tconfig = transformer_config(hf)
    eager, compiled = build(hf, tconfig, "sdpa"), build(hf, tconfig, "sdpa")
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    assert compile_layers(compiled, torch.device("cpu"), static_shapes) == 2
    return eager, compiled


@pytest.mark.parametrize("static_shapes, graphs", [(None, 2), (12, 3)])
def test_compiled_decoder_matches_eager_for_three_widths(static_shapes, graphs):
    """Three bucket widths: with dynamic shapes the second compiles a dynamic graph the third reuses (2 graphs);
    with static shapes each width has its own (3), and Dynamo's limits leave room for all the shapes asked for."""
    with torch._dynamo.config.patch(recompile_limit=8, accumulated_recompile_limit=8):  # restored afterwards
        decoder_matches_eager_for_three_widths(static_shapes, graphs)


def decoder_matches_eager_for_three_widths(static_shapes: int | None, graphs: int) -> None:
    eager, compiled = eager_and_compiled(llama_model.transformer_config, llama_model.build_gpt, TINY_LLAMA, static_shapes)
    assert torch._dynamo.config.recompile_limit == (12 if static_shapes else 8)
    assert torch._dynamo.config.accumulated_recompile_limit == (24 if static_shapes else 8)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    torch._dynamo.reset()
    counters.clear()
    for width in (64, 128, 192):
        ids = torch.randint(0, 300, (2, width))
        positions = torch.arange(width).expand_as(ids)
        outputs = []
        for model in (eager, compiled):
            model.zero_grad()
            logits = model(ids, positions, None)
            logits.square().mean().backward()
            outputs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        assert (outputs[0][0] - outputs[1][0]).abs().max().item() < 1e-4
        for name, grad in outputs[0][1].items():
            assert torch.allclose(outputs[1][1][name], grad, rtol=1e-4, atol=1e-6), (width, name)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs  # both layers share each graph

TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
             "max_position_embeddings": 128, "vocab_size": 300, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.1}  # only attention dropout


def test_compiled_encoder_trains_with_attention_dropout():
    """With TP > 1 attention dropout runs inside Megatron's RNG-tracker fork, whose CUDA RNG setter deadlocked Dynamo
    on a GPU (`raytron.train.compile`): compiling leaves that setter to eager Python. With one TP rank, as here, it
    draws from the default RNG stream (`raytron.models.attention`). On CPU the deadlock cannot occur (the setter
    takes no lock here), and SDPA's CPU dropout draws new masks on every call even from the same RNG states, so this
    checks what can be checked here: the setter is excluded from compilation, compiled training steps apply dropout
    (two steps differ), and without dropout (eval) outputs and gradients equal the eager encoder's."""
    eager, compiled = eager_and_compiled(bert_model.transformer_config, bert_model.build_bert, TINY_BERT)
    assert getattr(megatron_random._set_cuda_rng_state, "_torchdynamo_disable", False), \
        "Megatron's CUDA RNG setter must run eagerly under torch.compile"
    ids = torch.randint(0, 300, (2, 32))
    mask = torch.ones(2, 32, dtype=torch.long)
    mask[1, 20:] = 0  # a padded row
    compiled.train()
    steps = [bert_model.encode(compiled, ids, mask) for _ in range(2)]
    steps[0].square().mean().backward()
    assert (steps[0] - steps[1]).abs().max().item() > 1e-3, "two training steps drew the same masks: no dropout"
    outputs = []
    for model in (eager, compiled):
        model.eval()
        model.zero_grad()
        hidden = bert_model.encode(model, ids, mask)
        hidden.square().mean().backward()
        outputs.append((hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert (outputs[0][0] - outputs[1][0]).abs().max().item() < 1e-4
    for name, grad in outputs[0][1].items():
        assert torch.allclose(outputs[1][1][name], grad, rtol=1e-4, atol=1e-6), name


def test_a_model_without_transformer_blocks_is_a_clear_error():
    with pytest.raises(RaytronError, match="Linear has no Megatron-Core TransformerLayer to compile; set train.compile=false"):
        compile_layers(torch.nn.Linear(2, 2), torch.device("cpu"))
