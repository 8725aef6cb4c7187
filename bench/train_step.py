"""Step time of a fine-tune step bare vs inside a Ray Train worker (same code, same GPU).

    python bench/train_step.py [--model encoder|decoder] [--steps 60] [--batch 32] [--seq 512] [--attention sdpa]
                               [--compile off|on] [--cuda-graphs off|on]

Runs `bench/mfu.py`'s measurement (the job's own model, Megatron DDP, optimizer and `train_step` on a
fixed synthetic batch: no data pipeline, so only the runtime differs) first in this process, then in a
one-worker Ray Train TorchTrainer, and prints both medians and Ray's overhead.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from mfu import TASKS, run_steps


def ray_worker(args: dict) -> None:
    # Ray Train V2 keeps metrics in the Result only next to checkpoints: hand them back via a file.
    Path(args["out"]).write_text(json.dumps({k: v for k, v in run_steps(args).items() if k != "top_kernels"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(TASKS), default="encoder")
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--compile", choices=["off", "on"], default="off")
    parser.add_argument("--cuda-graphs", choices=["off", "on"], default="off")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--supervised", type=int, default=128)
    args = vars(parser.parse_args())
    args["out"] = tempfile.mktemp(suffix=".json")
    bare = run_steps(args)
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raytron.runtime import shutdown_megatron

    shutdown_megatron()
    torch.distributed.destroy_process_group()
    here = Path(__file__).resolve().parent  # the worker imports bench/mfu.py and the package as this process does
    ray.init(logging_level="ERROR", runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "platform"), os.environ.get("PYTHONPATH", "")])}})
    use_gpu = torch.cuda.is_available()
    result = TorchTrainer(
        ray_worker, train_loop_config=args, torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
    ).fit()
    if result.error:
        raise result.error
    in_ray = json.loads(Path(args["out"]).read_text())
    print(f"\n{args['model']}, batch {args['batch']} x {args['seq']} tokens, {args['steps'] - args['warmup']} timed steps, "
          f"{bare['device']}, attention {args['attention']}, compile {args['compile']}, CUDA graphs {args['cuda_graphs']}")
    print(f"{'runtime':<22}{'median ms':>10}{'p90 ms':>9}{'tokens/s':>11}")
    for name, row in (("bare process", bare), ("Ray Train worker", in_ray)):
        print(f"{name:<22}{row['median_ms']:>10.2f}{row['p90_ms']:>9.2f}{row['tokens_per_s']:>11.0f}")
    print(f"Ray Train overhead: {100 * (in_ray['median_ms'] / bare['median_ms'] - 1):+.1f}% of the bare median")


if __name__ == "__main__":
    main()
