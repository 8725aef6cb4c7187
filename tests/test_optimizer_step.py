"""The device-side optimizer step (raytron.train.optimizer_step) equals Megatron-Core's own `optimizer.step()`:
the same gradient norm and the same parameters after the step, clipping or not, fp32 and bf16, and through the
distributed optimizer."""

import pytest
import torch

from raytron.config import TrainConfig
from raytron.models.llama.model import build_gpt, transformer_config
from raytron.runtime import init_megatron
from raytron.train.optim import wrap_for_training
from raytron.train.optimizer_step import optimizer_step

HF_LLAMA = dict(vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                num_hidden_layers=2, max_position_embeddings=16, tie_word_embeddings=True)


@pytest.fixture(scope="module", autouse=True)
def megatron():
    init_megatron(seed=7)  # one gloo rank and the CPU shim, as a job on a CPU


def stepped(step, clip_grad: float, dtype: torch.dtype, distributed_optimizer: bool):
    """A tiny Llama after one backward and the optimizer step `step`: (what `step` returned, the main gradients
    the optimizer stepped with, i.e. after clipping, the parameters after the step, and the optimizer's fp32 main
    parameters after it)."""
    torch.manual_seed(0)
    tconfig = transformer_config(HF_LLAMA, params_dtype=dtype, bf16=dtype == torch.bfloat16)
    model = build_gpt(HF_LLAMA, tconfig)
    train = TrainConfig(lr=1e-2, warmup_fraction=0.0, clip_grad=clip_grad, distributed_optimizer=distributed_optimizer)
    ddp, optimizer, _ = wrap_for_training(model, tconfig, train, total_steps=4)
    tokens = torch.randint(0, HF_LLAMA["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(8).expand(2, 8)
    ddp(input_ids=tokens[:, :-1], position_ids=positions, attention_mask=None, labels=tokens[:, 1:]).sum().backward()
    ddp.finish_grad_sync()
    clipped = []
    step_with_ready_grads = optimizer.step_with_ready_grads

    def record_then_step():
        clipped.extend(param.grad.clone() for opt in optimizer.chained_optimizers for param in opt.get_parameters()
                       if param.grad is not None)
        return step_with_ready_grads()

    optimizer.step_with_ready_grads = record_then_step  # both steps call it once, after clipping
    returned = step(optimizer)
    main = [param.detach().clone() for opt in optimizer.chained_optimizers for param in opt.get_parameters()]
    return returned, clipped, [param.detach().float().clone() for param in model.parameters()], main


def megatrons_step(optimizer):
    _, grad_norm, _ = optimizer.step()
    return grad_norm


@pytest.mark.parametrize("distributed_optimizer", [False, True], ids=["adam", "distributed-adam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("clip_grad", [1e-3, 1e3], ids=["clipping", "not-clipping"])
def test_step_equals_megatrons(clip_grad, dtype, distributed_optimizer):
    ours, our_grads, our_params, our_main = stepped(optimizer_step, clip_grad, dtype, distributed_optimizer)
    theirs, their_grads, their_params, their_main = stepped(megatrons_step, clip_grad, dtype, distributed_optimizer)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float32  # on the device, not read back
    assert float(ours) == pytest.approx(theirs, rel=1e-5)
    assert (float(ours) > clip_grad) == (clip_grad < 1)  # so one case clips and the other does not
    assert len(our_grads) == len(their_grads) > 0
    clipped_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in our_grads]))
    assert float(clipped_norm) == pytest.approx(min(clip_grad, float(ours)), rel=1e-4)
    for ours_grad, theirs_grad in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-6, atol=0)
    initial = stepped(lambda optimizer: None, clip_grad, dtype, distributed_optimizer)[2]
    assert our_main and all(p.dtype == torch.float32 for p in our_main)
    for ours_param, theirs_param in zip(our_main, their_main, strict=True):
        # Adam divides by sqrt(v): fp32 rounding of the clip coefficient shows up as ~1e-6 relative
        torch.testing.assert_close(ours_param, theirs_param, rtol=1e-5, atol=1e-6)
    for ours_param, theirs_param, before in zip(our_params, their_params, initial, strict=True):
        assert not torch.equal(ours_param, before)  # the step moved every parameter
        # a bf16 copy of main parameters 1e-6 apart may round one bf16 ulp apart (2**-7 relative at most; seen once
        # in 1,024 elements); fp32 parameters are the main parameters
        torch.testing.assert_close(ours_param, theirs_param, rtol=2**-7 if dtype == torch.bfloat16 else 1e-5, atol=1e-6)


def test_no_clipping_still_reports_the_norm():
    """Megatron's clip_grad=0 turns clipping off (its bare FP32 optimizer then reports no norm, its bf16 one 0.0);
    the norm is still returned. (raytron's TrainConfig requires clip_grad > 0: this is the optimizer config's own
    meaning of 0.)"""
    def unclipped_step(optimizer):
        optimizer.config.clip_grad = 0.0
        return optimizer_step(optimizer)

    unclipped, _, params, _ = stepped(unclipped_step, 1e-3, torch.float32, False)
    reference, _, reference_params, _ = stepped(megatrons_step, 1e3, torch.float32, False)  # a clip it never reaches
    assert float(unclipped) == pytest.approx(reference, rel=1e-6) and reference > 1e-3
    for ours, theirs in zip(params, reference_params, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
