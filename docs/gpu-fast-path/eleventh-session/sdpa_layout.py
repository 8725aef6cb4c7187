"""Does the encoder's SDPA call block the host? Per-call host time in a chain of 6 layers, like the model's."""
import time, torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
dev = "cuda"; b, h, s, d = 32, 12, 512, 32
w = [torch.randn(h * d, 3 * h * d, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(6)]
allowed = torch.ones(b, 1, 1, s, dtype=torch.bool, device=dev)
def fork_rng(fn):
    state = torch.cuda.get_rng_state(); out = fn(); torch.cuda.set_rng_state(state); return out
def layers(permuted, rng, mask, dropout, sdpa_host):
    x = torch.randn(s, b, h * d, device=dev, dtype=torch.bfloat16)
    for wi in w:
        qkv = (x @ wi).view(s, b, h, 3 * d)
        q, k, v = qkv.split(d, dim=-1)
        if permuted: q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
        else: q, k, v = (t.permute(1, 2, 0, 3).contiguous() for t in (q, k, v))
        call = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed if mask else None, dropout_p=dropout, scale=0.17)
        t0 = time.perf_counter()
        o = fork_rng(call) if rng else call()
        sdpa_host.append(time.perf_counter() - t0)
        x = o.permute(2, 0, 1, 3).reshape(s, b, h * d)
    return x.float().square().mean()
for permuted in (True, False):
    for rng in (True, False):
        for mask, dropout in ((True, 0.1), (False, 0.1), (True, 0.0)):
            sdpa_host = []
            for i in range(30):
                if i == 10: torch.cuda.synchronize(); t0 = time.perf_counter(); sdpa_host.clear()
                layers(permuted, rng, mask, dropout, sdpa_host).backward()
            torch.cuda.synchronize(); wall = (time.perf_counter() - t0) / 20
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                layers(permuted, rng, mask, dropout, []).backward()
            ev = {e.key: e.count for e in prof.key_averages()}
            syncs = {k: v for k, v in ev.items() if "ynchronize" in k or k in ("aten::item", "aten::_local_scalar_dense", "cudaMemcpy", "cudaMemcpyAsync")}
            kern = [k for k in ev if "attention" in k and k.startswith("aten::_")][:2]
            print(f"permuted={permuted} rng_fork={rng} mask={mask} dropout={dropout}: SDPA fwd host p50 "
                  f"{1000*sorted(sdpa_host)[len(sdpa_host)//2]:.3f} ms, step wall {1000*wall:.2f} ms, {syncs} {kern}", flush=True)
