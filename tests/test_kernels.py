"""`model.kernels=fused` (raytron.models.kernels: the QKV split with RoPE in FusedRopeSelfAttention, SwiGLU as the
MLP's activation module) computes what Megatron-Core's unfused modules compute: each op against Megatron's code, its
hand-written backward against autograd (gradcheck, float64), a decoder's outputs and gradients within 1e-5 of
Megatron's (fp32, padded batches too); on a GPU, the Triton kernels against the torch ops."""

import pytest
import torch
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from test_attention import TINY_LLAMA, TOLERANCE, assert_same_gradients

from raytron.errors import RaytronError
from raytron.models.kernels.rope import rope_qkv
from raytron.models.kernels.swiglu import SwiGLU, swiglu
from raytron.models.llama import model as llama_model
from raytron.models.llama.self_attention import FusedRopeSelfAttention
from raytron.runtime import init_megatron

GROUPS, Q_PER_GROUP, D = 2, 3, 16


@pytest.fixture(scope="module", autouse=True)
def megatron():
    torch.set_default_device(init_megatron())
    yield
    torch.set_default_device(None)


def megatron_split_and_rotary(mixed, emb, tconfig):
    """SelfAttention.get_query_key_value_tensors' split, then Megatron-Core's unfused rotary embedding."""
    s, b = mixed.shape[:2]
    q, k, v = mixed.view(s, b, GROUPS, -1).split([Q_PER_GROUP * D, D, D], dim=3)
    q = q.reshape(s, b, -1, D)
    return apply_rotary_pos_emb(q, emb, tconfig), apply_rotary_pos_emb(k, emb, tconfig), v


def angles(seq: int, dtype=torch.float32, d: int = D):
    """Megatron's rotary embedding [s, 1, 1, d] (the angles twice along d) and the op's [s, d / 2]."""
    emb = RotaryEmbedding(d, rotary_percent=1.0, rotary_base=10000).get_emb(seq).to(dtype)
    return emb, emb[:, 0, 0, : d // 2]


def test_rope_qkv_is_megatrons_split_and_rotary():
    tconfig = llama_model.transformer_config(TINY_LLAMA)
    emb, freqs = angles(12)
    mixed = torch.randn(12, 3, GROUPS * (Q_PER_GROUP + 2) * D)
    ours = rope_qkv(mixed, freqs, GROUPS, Q_PER_GROUP)
    shapes = [(12, 3, GROUPS * Q_PER_GROUP, D), (12, 3, GROUPS, D), (12, 3, GROUPS, D)]
    for got, want, shape in zip(ours, megatron_split_and_rotary(mixed, emb, tconfig), shapes, strict=True):
        assert got.shape == shape
        assert (got - want).abs().max().item() <= TOLERANCE
    with pytest.raises(ValueError, match="11 positions' angles for a sequence of 12"):
        rope_qkv(mixed, freqs[:11], GROUPS, Q_PER_GROUP)


def test_swiglu_is_megatrons_glu():
    """Megatron's MLP computes `silu(x_glu) * x_linear` over `torch.chunk(x, 2, dim=-1)`."""
    x = torch.randn(7, 3, 2 * 24)
    gate, linear = torch.chunk(x, 2, dim=-1)
    assert (swiglu(x) - torch.nn.functional.silu(gate) * linear).abs().max().item() <= TOLERANCE


def test_backwards_are_their_forwards_gradients():
    """The torch implementations (the CPU's; the GPU's kernels are checked against them below)."""
    _, freqs = angles(5, torch.float64)
    freqs = freqs.cpu()
    mixed = torch.randn(5, 2, GROUPS * (Q_PER_GROUP + 2) * D, dtype=torch.float64, device="cpu", requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: rope_qkv(m, freqs, GROUPS, Q_PER_GROUP), (mixed,))
    torch.library.opcheck(rope_qkv, (mixed, freqs, GROUPS, Q_PER_GROUP))
    x = torch.randn(5, 2, 2 * 6, dtype=torch.float64, device="cpu", requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (x,))
    torch.library.opcheck(swiglu, (x,))


def twins(**overrides):
    """The same weights with Megatron-Core's unfused modules and with raytron's fused kernels."""
    torch.manual_seed(0)
    megatron, fused = (llama_model.build_gpt(TINY_LLAMA, llama_model.transformer_config(
        TINY_LLAMA, kernels=kernels, **overrides), "sdpa", kernels) for kernels in ("megatron", "fused"))
    fused.load_state_dict(megatron.state_dict())
    for model, is_fused in ((megatron, False), (fused, True)):
        layer = model.decoder.layers[0]
        assert isinstance(layer.self_attention, FusedRopeSelfAttention) == is_fused
        assert isinstance(layer.mlp.activation_func, SwiGLU) == is_fused
    return megatron, fused


@pytest.mark.parametrize("padded", [False, True])
def test_fused_decoder_matches_megatron(padded):
    megatron, fused = twins()
    ids = torch.randint(0, 300, (3, 16))
    positions = torch.arange(16).expand_as(ids)
    mask = None
    if padded:  # right padding as training batches it: causal, and no query sees the pad keys (True = masked)
        valid = torch.ones_like(ids, dtype=torch.bool)
        valid[1, 10:] = False
        mask = (torch.ones(16, 16, dtype=torch.bool).triu(1).unsqueeze(0) | ~valid.unsqueeze(1)).unsqueeze(1)
    with torch.no_grad():
        weights = torch.randn_like(megatron(ids, positions, mask))
    outputs = []
    for model in (megatron, fused):
        logits = model(ids, positions, mask)
        (logits * weights).sum().backward()
        outputs.append(logits)
    assert (outputs[0] - outputs[1]).abs().max().item() <= TOLERANCE
    assert_same_gradients(megatron, fused)


@pytest.mark.parametrize(("overrides", "named"), [
    ({"rotary_interleaved": True}, "does not support rotary_interleaved"),
    ({"attention_output_gate": True}, "does not support attention_output_gate"),
    ({"recompute_granularity": "selective", "recompute_modules": ["core_attn"]}, "does not support recomputed core"),
    ({"kv_channels": 24}, "does not support a head_dim / 2 that is not a power of two"),
    ({"activation_func_clamp_value": 7.0}, "computes SwiGLU only"),
])
def test_fused_kernels_refuse_what_they_do_not_compute(overrides, named):
    with pytest.raises(RaytronError, match=f"model.kernels=fused {named}.*set model.kernels=megatron"):
        twins(**overrides)


def test_ops_refuse_inputs_of_the_wrong_shape():
    _, freqs = angles(4)
    with pytest.raises(ValueError, match="a fused QKV width of 150 is not 2 groups x .3 . 2. heads x 16"):
        rope_qkv(torch.randn(4, 1, 150), freqs, GROUPS, Q_PER_GROUP)
    with pytest.raises(ValueError, match="the last dimension .7. holds two halves"):
        swiglu(torch.randn(2, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels need a GPU (none here)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernels_match_the_torch_ops(dtype):
    """SmolLM2's head shape (3 groups of 3 query heads, d 64) at 1,023 positions (large angles) x 3 rows (tokens not a
    multiple of a program's 4), and for SwiGLU an f that is not a multiple of the kernel's block."""
    from raytron.models.kernels import rope
    from raytron.models.kernels import swiglu as swiglu_op

    def close(got, want):
        tolerance = 1e-5 if dtype == torch.float32 else 1.6e-2  # bf16: one rounding of nearly equal fp32 values
        torch.testing.assert_close(got.cpu(), want.cpu(), rtol=tolerance, atol=tolerance)

    groups, q_per_group, d = 3, 3, 64
    _, freqs = angles(1023, d=d)
    freqs = freqs.cuda()
    mixed = torch.randn(1023, 3, groups * (q_per_group + 2) * d, dtype=dtype, device="cuda")
    for got, want in zip(rope_qkv(mixed, freqs, groups, q_per_group),
                         rope._reference_forward(mixed.cpu(), freqs.cpu(), groups, q_per_group), strict=True):
        close(got, want)
    grads = [torch.randn(1023, 3, n, d, dtype=dtype, device="cuda") for n in (groups * q_per_group, groups, groups)]
    grads[0] = grads[0].permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)  # SDPA's [b, h, s, d] layout
    close(rope.rope_qkv_backward(*grads, freqs, groups, q_per_group),
          rope._reference_backward(*(g.cpu() for g in grads), freqs.cpu(), groups, q_per_group))
    torch.library.opcheck(rope_qkv, (mixed.float().requires_grad_(), freqs, groups, q_per_group))
    x = torch.randn(64, 5, 2 * 1000, dtype=dtype, device="cuda")
    dy = torch.randn(64, 5, 1000, dtype=dtype, device="cuda")
    close(swiglu(x), swiglu_op._reference_forward(x.cpu()))
    close(swiglu_op.swiglu_backward(dy, x), swiglu_op._reference_backward(dy.cpu(), x.cpu()))


def test_fused_decoder_has_megatrons_distributed_checkpoint_keys():
    """Checkpoints (Megatron's sharded state dict) are the same with either kernels, so runs resume across them."""
    megatron, fused = twins()
    assert megatron.sharded_state_dict().keys() == fused.sharded_state_dict().keys()
