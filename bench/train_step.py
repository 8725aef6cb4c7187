"""Step time of the sentiment fine-tune step bare vs inside a Ray Train worker (same code, same GPU).

    python bench/train_step.py [--steps 60] [--batch 32] [--seq 512]

Builds the MiniLM classifier with Megatron DDP + optimizer exactly as the job does and runs the
job's own `train_step` on fixed random token batches (no data pipeline, so only the runtime differs), and prints the median step
time of the last `steps - warmup` steps measured with device synchronization.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def run_steps(args: dict) -> dict:
    from raytron.config import SentimentConfig
    from raytron.models.pretrained import pin_pretrained
    from raytron.runtime import init_megatron
    from raytron.train.optim import wrap_for_training
    from raytron.train.sentiment import SentimentTask
    from raytron.train.step import train_step

    cfg = pin_pretrained(SentimentConfig.model_validate(
        {"train": {"micro_batch_size": args["batch"], "global_batch_size": args["batch"]}}))
    device = init_megatron()
    bf16 = device.type == "cuda"
    task = SentimentTask(cfg)
    model, tconfig = task.build(device, torch.bfloat16 if bf16 else torch.float32)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, total_steps=args["steps"])
    ids = torch.randint(1000, 30000, (args["batch"], args["seq"]), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "label": torch.randint(0, 2, (args["batch"],), device=device),
             "log_length": torch.rand(args["batch"], device=device), "vader_compound": torch.rand(args["batch"], device=device)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(args["steps"]):
        sync()
        start = time.perf_counter()
        train_step(ddp, optimizer, scheduler, task.loss, [batch])
        sync()
        times.append(time.perf_counter() - start)
    measured = times[args["warmup"]:]
    return {"median_ms": 1000 * statistics.median(measured), "p90_ms": 1000 * sorted(measured)[int(0.9 * len(measured))],
            "tokens_per_s": args["batch"] * args["seq"] / statistics.median(measured), "device": str(device)}


def ray_worker(args: dict) -> None:
    # Ray Train V2 keeps metrics in the Result only next to checkpoints: hand them back via a file.
    Path(args["out"]).write_text(json.dumps(run_steps(args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    args = vars(parser.parse_args())
    args["out"] = tempfile.mktemp(suffix=".json")
    bare = run_steps(args)
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raytron.runtime import shutdown_megatron

    shutdown_megatron()
    torch.distributed.destroy_process_group()
    ray.init(logging_level="ERROR")
    use_gpu = torch.cuda.is_available()
    result = TorchTrainer(
        ray_worker, train_loop_config=args, torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
    ).fit()
    if result.error:
        raise result.error
    in_ray = json.loads(Path(args["out"]).read_text())
    print(f"\nbatch {args['batch']} x {args['seq']} tokens, {args['steps'] - args['warmup']} timed steps, {bare['device']}")
    print(f"{'runtime':<22}{'median ms':>10}{'p90 ms':>9}{'tokens/s':>11}")
    for name, row in (("bare process", bare), ("Ray Train worker", in_ray)):
        print(f"{name:<22}{row['median_ms']:>10.2f}{row['p90_ms']:>9.2f}{row['tokens_per_s']:>11.0f}")


if __name__ == "__main__":
    main()
