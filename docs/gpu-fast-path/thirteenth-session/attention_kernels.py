"""Attention fwd+bwd on CNN/DM-shaped micro-batches: padded cuDNN SDPA vs varlen flash vs flex doc mask.

Run on the device as `python3 .dev/attn_bench.py` with cnndm_lengths.npy (beside this file) at .dev/: the 800
validation articles' SmolLM2 token counts + their summaries' (at most 128) + 30 for the chat template, capped at 1,024."""
import inspect
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
dev = "cuda"
H, G, D = 9, 3, 64
lengths = np.load(".dev/cnndm_lengths.npy")
rng = np.random.default_rng(0)
docs = rng.choice(lengths, 512, replace=False)
groups = np.sort(docs)[::-1].reshape(4, 128)  # the loop's bucketing: one sort window, 4 micro-batches of 128
out = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
from torch.nn.attention import varlen as V  # noqa

out["varlen_sig"] = str(inspect.signature(V.varlen_attn))
print(out, flush=True)


def timeit(fn, n=10, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def sdpa_step(b, s):
    q = torch.randn(b, H, s, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, G, s, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, G, s, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    def f():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        o.sum().backward()
    return f


def varlen_step(lens, gqa):
    T = int(lens.sum())
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device=dev)
    q = torch.randn(T, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(T, G, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(T, G, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    kw = {"window_size": (-1, 0)} if "window_size" in out["varlen_sig"] else {"is_causal": True}
    def f():
        kk, vv = (k, v) if gqa else (k.repeat_interleave(H // G, 1), v.repeat_interleave(H // G, 1))
        o = V.varlen_attn(q, kk, vv, cu, cu, 1024, 1024, **kw, **({"enable_gqa": True} if gqa else {}))
        o.sum().backward()
    return f


def flex_step(lens, width=4096):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    rows, cur = [], []
    for n in lens:  # next-fit into rows of `width`
        if sum(cur) + n > width:
            rows.append(cur); cur = []
        cur.append(int(n))
    rows.append(cur)
    doc = torch.full((len(rows), width), -1, dtype=torch.int32)
    i = 0
    for r, row in enumerate(rows):
        p = 0
        for n in row:
            doc[r, p:p + n] = i; i += 1; p += n
    doc = doc.to(dev)
    def mask(b, h, qi, ki):
        return (doc[b, qi] == doc[b, ki]) & (qi >= ki)
    bm = create_block_mask(mask, len(rows), None, width, width, device=dev)
    fa = torch.compile(flex_attention)
    q = torch.randn(len(rows), H, width, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(len(rows), G, width, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(len(rows), G, width, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    def f():
        o = fa(q, k, v, block_mask=bm, enable_gqa=True)
        o.sum().backward()
    return f, len(rows)


res = {}
res["padded_1024_x128_cudnn_ms"] = timeit(sdpa_step(128, 1024))
bucket = 0.0
for g in groups:
    w = min(1024, -(-int(g.max()) // 64) * 64)
    bucket += timeit(sdpa_step(128, w))
res["bucketed_4x128_cudnn_ms"] = bucket
for gqa in (True, False):
    try:
        res[f"varlen_4x128_gqa{gqa}_ms"] = sum(timeit(varlen_step(g, gqa)) for g in groups)
    except Exception as e:  # noqa
        res[f"varlen_gqa{gqa}_error"] = repr(e)[:300]
try:
    t, nrows = 0.0, 0
    for g in groups:
        f, n = flex_step(g)
        t += timeit(f); nrows += n
    res["flex_4x128_rows4096_ms"] = t; res["flex_rows"] = nrows
except Exception as e:  # noqa
    res["flex_error"] = repr(e)[:300]
res["real_tokens"] = int(groups.sum())
res["causal_attn_tflop"] = float(sum(4 * H * D * (g.astype(float) ** 2).sum() / 2 for g in groups) * 3.5 / 1e12)
out.update(res)
print(json.dumps(out, indent=1))
os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "attn.json"), "w"), indent=1)
