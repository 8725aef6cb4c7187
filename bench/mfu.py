"""Model FLOPs utilization of the fine-tune step on fixed synthetic batches, per model and attention.

    python bench/mfu.py [--model encoder|decoder] [--attention sdpa local] [--compile off on] [--cuda-graphs off on]
                        [--batch 32] [--seq 512] [--loss task whole-vocab vocab-parallel] [--kernels fused megatron]

Builds the task's model exactly as the fine-tune does (Megatron DDP, optimizer, bf16 on GPU) and times
the job's own `train_step` (device-synchronized, median of the steps after `--warmup`). FLOPs are
`raytron.train.flops` on real tokens (here every token is real); MFU against the GPU's bf16 peak.
The decoder batch is a SmolLM2 summarization row: a prompt, then `--supervised` summary tokens.
`--compile on` compiles the transformer blocks first (`train.compile`, raytron.train.compile; the compile
happens in the warm-up steps); `--cuda-graphs on` replays the model's forward and backward from CUDA graphs
(`train.cuda_graphs`, raytron.train.cuda_graphs; captured in the first step; encoder with sdpa only, not with
compile). `--loss` picks the decoder's cross entropy per chunk of supervised positions (raytron.train.summarization):
the task's own choice (`task`), or `whole-vocab` (compiled with `--compile on`) or Megatron's `vocab-parallel` one,
for comparison. `--kernels` picks the decoder's QKV split with rotary embedding and its SwiGLU
(`model.kernels`: raytron's fused ops or Megatron-Core's unfused ones). Prints one row per attention, compile, graphs and loss setting and, with --profile, the twenty
CUDA kernels and the twelve host-side ops that took the most time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

TASKS = {"encoder": "configs/sentiment.yaml", "decoder": "configs/summarization.yaml"}
"""The recipe whose model each benchmark builds."""


def synthetic_batch(model: str, batch: int, seq: int, supervised: int, device) -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 30000, (batch, seq), device=device)
    if model == "encoder":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "label": torch.randint(0, 2, (batch,), device=device),
                "log_length": torch.rand(batch, device=device), "vader_compound": torch.rand(batch, device=device)}
    labels = torch.full_like(ids, -100)
    labels[:, -supervised:] = ids[:, -supervised:]
    return {"input_ids": ids, "labels": labels}


def run_steps(args: dict) -> dict:
    """Median step time, tokens/s, TFLOP/s and MFU of `train_step` on one synthetic batch."""
    from raytron.config import load_config
    from raytron.models.pretrained import pin_pretrained
    from raytron.runtime import init_megatron
    from raytron.train.compile import compile_layers
    from raytron.train.cuda_graphs import GraphedTraining
    from raytron.train.flops import peak_flops_per_device
    from raytron.train.optim import wrap_for_training
    from raytron.train.step import train_step
    from raytron.train.summarization import vocab_parallel_losses, whole_vocab_losses
    from raytron.train.tasks import make_task

    recipe = Path(__file__).resolve().parents[1] / TASKS[args["model"]]
    # the decoder's loss covers max_summary_tokens + 1 positions per row: all `--supervised` ones
    summary = [f"data.max_summary_tokens={args['supervised'] - 1}"] if args["model"] == "decoder" else []
    cfg = pin_pretrained(load_config(recipe, [*summary, f"train.micro_batch_size={args['batch']}",
                                              f"train.global_batch_size={args['batch']}",
                                              f"model.attention={args['attention']}", "resources.num_workers=1",
                                              *([f"model.kernels={args['kernels']}"] if args.get("kernels") else []),
                                              f"train.compile={args.get('compile') == 'on'}",
                                              f"train.cuda_graphs={args.get('cuda_graphs') == 'on'}"]))
    device = init_megatron()
    bf16 = device.type == "cuda"
    task = make_task(cfg)
    model, tconfig = task.build(device, torch.bfloat16 if bf16 else torch.float32)
    if args.get("loss") == "vocab-parallel":
        task.chunk_losses = vocab_parallel_losses
    elif args.get("loss") == "whole-vocab":
        task.chunk_losses = torch.compile(whole_vocab_losses) if cfg.train.compile else whole_vocab_losses
    if cfg.train.compile:
        torch._dynamo.reset()  # a fresh compile per row, not a recompile of the previous row's model
        compile_layers(model, device)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, total_steps=args["steps"])
    forward = GraphedTraining(ddp) if cfg.train.cuda_graphs else ddp
    batch = synthetic_batch(args["model"], args["batch"], args["seq"], args["supervised"], device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if bf16:
        torch.cuda.reset_peak_memory_stats()
    times, result = [], None
    for _ in range(args["steps"]):
        sync()
        start = time.perf_counter()
        result = train_step(ddp, optimizer, scheduler, task, [batch], forward)
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times[args["warmup"]:])
    flops = float(result.flops) / median
    peak = peak_flops_per_device(None, device)
    out = {"median_ms": 1000 * median, "p90_ms": 1000 * sorted(times[args["warmup"]:])[int(0.9 * (len(times) - args["warmup"]))],
           "tokens_per_s": float(result.tokens) / median, "tflops": flops / 1e12,
           "mfu": flops / peak if peak else None, "device": torch.cuda.get_device_name() if bf16 else "cpu",
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if bf16 else None}
    if args.get("profile") and bf16:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                train_step(ddp, optimizer, scheduler, task, [batch], forward)
            sync()
        averages = prof.key_averages()
        out["top_kernels"] = (averages.table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=70)
                              + averages.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=70))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(TASKS), default="encoder")
    parser.add_argument("--attention", nargs="+", default=["sdpa", "local"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--cuda-graphs", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--supervised", type=int, default=128, help="decoder: summary tokens at the end of each row")
    parser.add_argument("--loss", nargs="+", choices=["task", "whole-vocab", "vocab-parallel"], default=["task"],
                        help="decoder: the cross entropy (see above)")
    parser.add_argument("--kernels", nargs="+", choices=["fused", "megatron"], default=["fused"],
                        help="decoder: model.kernels (see above)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = vars(parser.parse_args())
    print(f"{args['model']}: batch {args['batch']} x {args['seq']} tokens, {args['steps'] - args['warmup']} timed steps")
    print(f"{'setting':<24}{'median ms':>10}{'p90 ms':>9}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>8}{'peak GiB':>9}")
    decoder = args["model"] == "decoder"
    losses, kernels = (args["loss"], args["kernels"]) if decoder else ([None], [None])
    settings = [(a, c, g, loss, k) for a in args["attention"] for c in args["compile"] for g in args["cuda_graphs"]
                for loss in losses for k in kernels
                if g == "off" or (c == "off" and a == "sdpa")]  # graphs: sdpa attention, not compiled (train.cuda_graphs)
    for attention, compiled, graphed, loss, kernel in settings:
        row = run_steps({**args, "attention": attention, "compile": compiled, "cuda_graphs": graphed, "loss": loss,
                         "kernels": kernel})
        name = (attention + ("+compile" if compiled == "on" else "") + ("+graphs" if graphed == "on" else "")
                + {None: "", "task": "", "whole-vocab": "+wv-loss", "vocab-parallel": "+vp-loss"}[loss]
                + {None: "", "fused": "", "megatron": "+mc-kernels"}[kernel])
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        memory = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "-"
        print(f"{name:<24}{row['median_ms']:>10.2f}{row['p90_ms']:>9.2f}{row['tokens_per_s']:>11.0f}"
              f"{row['tflops']:>9.1f}{mfu:>8}{memory:>9}  ({row['device']})", flush=True)
        if "top_kernels" in row:
            print(row["top_kernels"])


if __name__ == "__main__":
    main()
