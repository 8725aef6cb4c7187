"""The sync-free multi-tensor ops (raytron.megatron_multi_tensor) give what Megatron-Core's own fallbacks give, and
init_megatron puts them where Megatron-Core's gradient clipping uses its fallbacks."""

import pytest
import torch
from megatron.core import parallel_state, utils
from megatron.core.optimizer import clip_grads

from raytron import megatron_multi_tensor
from raytron.runtime import init_megatron

CHUNK = 2048 * 32
"""The chunk size Megatron's `local_multi_tensor_applier` passes (unused by both implementations)."""


@pytest.fixture(scope="module")
def megatron():
    """Megatron-Core as a job sees it: one gloo rank, the CPU shim, the sync-free ops installed."""
    fallback = clip_grads.l2_norm_impl is utils.local_multi_tensor_l2_norm  # no Apex / TE here (CI)
    init_megatron()
    return fallback


def tensors(seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for shape in ((576,), (192, 576), (3, 1536, 576), (1,))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_l2_norm_equals_megatrons_fallback(megatron, dtype):
    grads = tensors(0, dtype)
    ours, _ = megatron_multi_tensor.l2_norm(CHUNK, None, [grads], False)
    theirs, _ = utils.local_multi_tensor_l2_norm(CHUNK, None, [grads], False)  # device="cuda": the CPU shim
    assert ours.shape == theirs.shape == (1,) and ours.dtype == theirs.dtype == torch.float32
    assert ours.device == grads[0].device
    exact = torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads])).float().reshape(1)
    torch.testing.assert_close(ours, exact, rtol=1e-4, atol=0)  # fp32 norms (fp32 sums of 2.7M squares), also of bf16
    # the fallback rounds each bf16 tensor's norm to bf16 (spacing 2^-7 relative) before adding them up
    torch.testing.assert_close(ours, theirs, rtol=1e-6 if dtype == torch.float32 else 2**-7, atol=0)
    two_lists, _ = megatron_multi_tensor.l2_norm(CHUNK, None, [grads[:2], grads[2:]], False)
    torch.testing.assert_close(two_lists, ours, rtol=1e-6, atol=0)


def test_empty_lists_are_a_zero_norm_and_no_op(megatron):
    norm, _ = megatron_multi_tensor.l2_norm(CHUNK, None, [[]], False)
    assert norm.tolist() == [0.0]
    megatron_multi_tensor.scale(CHUNK, None, [[], []], 0.5)  # a rank without gradients clips nothing


@pytest.mark.parametrize("factor", [1.0, 0.37])
def test_scale_equals_megatrons_fallback_into_bf16(factor):
    sources = tensors(1)
    ours, theirs = tensors(2, torch.bfloat16), tensors(2, torch.bfloat16)
    megatron_multi_tensor.scale(CHUNK, None, [sources, ours], factor)
    utils.local_multi_tensor_scale(CHUNK, None, [sources, theirs], factor)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not torch.equal(ours[1], tensors(2, torch.bfloat16)[1])  # written, not left as they were


def test_scale_in_place_equals_megatrons_fallback():
    """Clipping passes one list as sources and targets."""
    ours, theirs = tensors(3), tensors(3)
    megatron_multi_tensor.scale(CHUNK, None, [ours, ours], 0.25)
    utils.local_multi_tensor_scale(CHUNK, None, [theirs, theirs], 0.25)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert torch.equal(ours[1], tensors(3)[1] * 0.25)


def test_init_megatron_installs_them_where_clipping_uses_its_fallbacks(megatron):
    if not megatron:
        pytest.skip("Megatron-Core uses Apex / Transformer Engine kernels here: nothing to replace")
    assert clip_grads.l2_norm_impl is megatron_multi_tensor.l2_norm
    assert clip_grads.multi_tensor_scale_impl is megatron_multi_tensor.scale
    assert megatron_multi_tensor.install() == []  # once only


def test_gradient_clipping_gives_torchs_norm_and_scale(megatron):
    """Megatron-Core's grad clipping (the path every optimizer step takes) with the ops installed: the total norm
    and the clipped gradients equal torch.nn.utils.clip_grad_norm_'s."""
    params = [torch.nn.Parameter(t) for t in tensors(3)]
    expected = [torch.nn.Parameter(t) for t in tensors(3)]
    for param, reference, grad in zip(params, expected, tensors(4), strict=True):
        param.grad, reference.grad = grad.clone(), grad.clone()
    group = parallel_state.get_model_parallel_group()
    norm = clip_grads.get_grad_norm_fp32([p.grad for p in params], grad_stats_parallel_group=group)
    clip_grads.clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=norm)
    torch_norm = torch.nn.utils.clip_grad_norm_(expected, max_norm=1.0)
    assert norm == pytest.approx(float(torch_norm), rel=1e-6) and norm > 1.0  # so the clipping scaled
    for param, reference in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad, reference.grad, rtol=1e-5, atol=1e-7)
