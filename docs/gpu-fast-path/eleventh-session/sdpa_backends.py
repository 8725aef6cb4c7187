"""Host and device time of SDPA fwd+bwd per backend at the IMDb encoder's shapes (MiniLM-L6: 12 heads x 32, 32 x 512)."""
import time, torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
dev = "cuda"
b, h, s, d = 32, 12, 512, 32
def inputs():
    q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    lengths = torch.randint(100, s + 1, (b,), device=dev)
    allowed = (torch.arange(s, device=dev)[None, :] < lengths[:, None])[:, None, None, :]  # [b,1,1,s]
    return q, k, v, allowed
def run(backend, mask, dropout, iters=50):
    q, k, v, allowed = inputs()
    m = allowed if mask == "bool" else (torch.zeros(allowed.shape, device=dev, dtype=torch.bfloat16).masked_fill(~allowed, float("-inf")) if mask == "float" else None)
    g = torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16)
    try:
        with sdpa_kernel([backend]) if backend else torch.nn.attention.sdpa_kernel(list(SDPBackend)):
            for i in range(iters + 10):
                if i == 10:
                    torch.cuda.synchronize(); t0 = time.perf_counter(); host = 0.0
                h0 = time.perf_counter()
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=dropout)
                out.backward(g)
                if i >= 10: host += time.perf_counter() - h0
            torch.cuda.synchronize(); wall = time.perf_counter() - t0
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with sdpa_kernel([backend]) if backend else torch.nn.attention.sdpa_kernel(list(SDPBackend)):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=dropout); out.backward(g)
        syncs = sum(e.count for e in prof.key_averages() if "Synchronize" in e.key or e.key in ("aten::item", "aten::_local_scalar_dense"))
        names = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or "sdpa" in e.key.lower()})[:4]
        print(f"{str(backend):28} mask={mask:5} dropout={dropout}: host {1000*host/iters:6.2f} ms/iter, wall {1000*wall/iters:6.2f} ms/iter, syncs/iter {syncs}, {names}", flush=True)
    except Exception as e:
        print(f"{str(backend):28} mask={mask:5} dropout={dropout}: {type(e).__name__}: {str(e)[:150]}", flush=True)
for dropout in (0.1, 0.0):
    for mask in ("bool", "float"):
        for backend in (None, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
            run(backend, mask, dropout)
run(SDPBackend.FLASH_ATTENTION, "none", 0.1)
