"""Micro-bench (torch only): one SmolLM2 layer's QKV split + RoPE + cuDNN SDPA, forward + backward, compiled.
Megatron-Core's unfused path (rope_utils._apply_rotary_pos_emb_bshd, split as get_query_key_value_tensors)
against cos/sin precomputed once and an autograd.Function with an explicit backward; and SwiGLU."""
import sys, time
import torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
from raytron.models.kernels.rope import rope_qkv
from raytron.models.kernels.swiglu import swiglu

torch.manual_seed(0)
dev = "cuda"
s, b, ng, r, d = 1024, int(sys.argv[1]) if len(sys.argv) > 1 else 128, 3, 3, 64
nh = ng * r


def rotate_half(x):
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def split(mixed):
    q, k, v = torch.split(mixed, [r * d, d, d], dim=3)
    return q.reshape(s, b, nh, d), k, v


def attend(q, k, v):
    q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return o.permute(2, 0, 1, 3).reshape(s, b, nh * d)


def mcore_rope(t, freqs):
    cos, sin = torch.cos(freqs).to(t.dtype), torch.sin(freqs).to(t.dtype)
    return t * cos + rotate_half(t) * sin


def v0(mixed, freqs, cos, sin):
    q, k, v = split(mixed)
    return attend(mcore_rope(q, freqs), mcore_rope(k, freqs), v)


def rope(t, cos, sin):
    return t * cos + rotate_half(t) * sin


def v1(mixed, freqs, cos, sin):
    q, k, v = split(mixed)
    return attend(rope(q, cos, sin), rope(k, cos, sin), v)


class SplitRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mixed, cos, sin):
        ctx.save_for_backward(cos, sin)
        q, k, v = split(mixed)
        return rope(q, cos, sin), rope(k, cos, sin), v

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin = ctx.saved_tensors
        dq, dk = (g * cos - rotate_half(g * sin) for g in (dq, dk))
        return torch.cat([dq.reshape(s, b, ng, r * d), dk, dv], dim=3), None, None


def v2(mixed, freqs, cos, sin):
    return attend(*SplitRope.apply(mixed, cos, sin))


def v3(mixed, freqs, cos, sin):  # [b, h, s, d] contiguous into SDPA
    q, k, v = SplitRope.apply(mixed, cos, sin)
    q, k, v = (t.permute(1, 2, 0, 3).contiguous() for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return o.permute(2, 0, 1, 3).reshape(s, b, nh * d)


def v4(mixed, freqs, cos, sin):  # raytron.models.rope: the Triton split + rotary op
    q, k, v = rope_qkv(mixed.view(s, b, -1), freqs[:, 0, 0, : d // 2], ng, r)
    return attend(q, k, v)


def sdpa_only(mixed, freqs, cos, sin):
    q, k, v = split(mixed)
    return attend(q, k, v)


def glu_mcore(x, *_):
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return F.silu(x1) * x2


class SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return F.silu(x1) * x2

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        x1, x2 = torch.chunk(x.float(), 2, dim=-1)
        sig = torch.sigmoid(x1)
        dy = dy.float()
        return torch.cat([dy * x2 * sig * (1 + x1 * (1 - sig)), dy * x1 * sig], dim=-1).to(x.dtype)


def glu_fn(x, *_):
    return SwiGLU.apply(x)


inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=dev).float() / d))
f = torch.outer(torch.arange(s, device=dev).float(), inv)
freqs = torch.cat((f, f), dim=-1)[:, None, None, :]
cos, sin = freqs.cos().bfloat16(), freqs.sin().bfloat16()
mixed = torch.randn(s, b, ng, (r + 2) * d, device=dev, dtype=torch.bfloat16, requires_grad=True)
gout = torch.randn(s, b, nh * d, device=dev, dtype=torch.bfloat16)
x_glu = torch.randn(s, b, 2 * 1536, device=dev, dtype=torch.bfloat16, requires_grad=True)
g_glu = torch.randn(s, b, 1536, device=dev, dtype=torch.bfloat16)


def run(fn, x, g):
    x.grad = None
    out = fn(x, freqs, cos, sin)
    out.backward(g)
    return out, x.grad


def timed(name, fn, x, g, prof=False):
    fn = torch.compile(fn)
    for _ in range(5):
        run(fn, x, g)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); run(fn, x, g); e.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(e))
    times.sort()
    print(f"{name:40s} median {times[10]:7.3f} ms  min {times[0]:7.3f} ms", flush=True)
    if prof:
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                run(fn, x, g)
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=90))
    return run(fn, x, g)


print(torch.__version__, torch.cuda.get_device_name(), f"batch {b} x {s}, {nh} heads / {ng} groups, d {d}")
ref_out, ref_grad = [t.detach().clone() for t in timed("megatron unfused rope (cos in kernel)", v0, mixed, gout, prof=True)]
for name, fn in [("sdpa only (no rope)", sdpa_only), ("rope, cos/sin precomputed bf16", v1),
                 ("split+rope autograd.Function", v2), ("split+rope fn, [b,h,s,d] contiguous", v3),
                 ("raytron rope_qkv (Triton)", v4)]:
    out, grad = timed(name, fn, mixed, gout, prof=fn in (v2, v4))
    if fn is not sdpa_only:
        print(f"   vs megatron: out max diff {(out - ref_out).abs().max().item():.3g}, grad max diff "
              f"{(grad - ref_grad).abs().max().item():.3g} (grad max {ref_grad.abs().max().item():.3g})")
go, gg = [t.detach().clone() for t in timed("swiglu megatron (chunk, silu*mul)", glu_mcore, x_glu, g_glu, prof=True)]
out, grad = timed("swiglu autograd.Function (fp32 math)", glu_fn, x_glu, g_glu, prof=True)
print(f"   vs megatron: out {(out - go).abs().max().item():.3g}, grad {(grad - gg).abs().max().item():.3g}")
out, grad = timed("swiglu raytron op (Triton)", lambda x, *_: swiglu(x), x_glu, g_glu, prof=True)
print(f"   vs megatron: out {(out - go).abs().max().item():.3g}, grad {(grad - gg).abs().max().item():.3g}")
