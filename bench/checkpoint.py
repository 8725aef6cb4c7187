"""Checkpoint save and load time and size of a recipe's model + optimizer, on local disk and on S3.

    python bench/checkpoint.py [--config configs/sentiment-gpu.yaml ...] [--s3 s3://bucket/prefix?endpoint_override=...]

For each recipe: the job's own model, Megatron DDP and optimizer (one rank), one `raytron.train.checkpoint.save`
into a local folder (what each rank does before Ray Train uploads), its size, the upload to the S3 location
(what Ray Train does), the verification the launcher runs there, the download and `checkpoint.load`. Without
--s3 a moto server is started on 127.0.0.1 (the tests' S3 server). Prints one JSON line per recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import torch

REPO = Path(__file__).resolve().parents[1]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(recipe: str, s3: str) -> dict:
    from raytron.config import load_config
    from raytron.runtime import absolute_paths, init_megatron
    from raytron.storage import filesystem, join
    from raytron.train import checkpoint
    from raytron.train.optim import wrap_for_training
    from raytron.train.tasks import make_task

    cfg = absolute_paths(load_config(REPO / recipe, ["train.precision=fp32"]))
    device = init_megatron(1, 1, cfg.train.seed)
    model, tconfig = make_task(cfg).build(device, torch.float32)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, 100)
    ddp.zero_grad_buffer()
    optimizer.step()  # zero gradients: Adam's moments exist (and are saved) as after a training step
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "checkpoint"
        _, save_s = timed(lambda: checkpoint.save(local, model, optimizer, scheduler, {"step": 0}, local / "none"))
        size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
        where = join(s3, Path(recipe).stem)
        fs, base = filesystem(where)
        _, upload_s = timed(lambda: pafs.copy_files(str(local), base, destination_filesystem=fs))
        _, verify_s = timed(lambda: checkpoint.verify(fs, base, where))
        back = Path(scratch) / "downloaded"
        back.mkdir()
        _, download_s = timed(lambda: pafs.copy_files(base, str(back), source_filesystem=fs))
        _, load_s = timed(lambda: checkpoint.load(back, model, optimizer, scheduler))
    return {"recipe": recipe, "parameters": sum(p.numel() for p in model.parameters()), "size_mb": size / 2**20,
            "save_local_s": save_s, "upload_s3_s": upload_s, "verify_s3_s": verify_s, "download_s3_s": download_s,
            "load_local_s": load_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["configs/sentiment-gpu.yaml", "configs/summarization-gpu.yaml"])
    parser.add_argument("--s3", default=None, help="S3 location; default: a moto server on 127.0.0.1")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.s3 is None:
        from tests.s3_server import MotoServer

        with tempfile.TemporaryDirectory() as logs, MotoServer(Path(logs)) as server:
            for recipe in args.config:
                print(json.dumps(measure(recipe, server.store_uri())), flush=True)
    else:
        for recipe in args.config:
            print(json.dumps(measure(recipe, args.s3)), flush=True)


if __name__ == "__main__":
    main()
