"""The main job (`make demo`): every task on a small slice (local Ray, W&B offline), a two-trial Ray Tune search,
then the report. Each step is the job a user would run, as its own process joining one local Ray cluster that the
demo starts once; progress and times are printed. `--runs DIR` puts every output under DIR instead of runs/.

Rerunning resumes the fine-tunes, the topic sweep and the search from their checkpoints and journals (finished ones
end at once); the evaluations run again.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from raytron.errors import RaytronError, exit_on_user_error

RUNS = "runs"
"""Where the recipes put their runs (run.output_dir)."""


def steps(runs: str = RUNS) -> list[tuple[str, list[str]]]:
    """(what it does, the command after `python`), in order, with every output under `runs`."""
    moved = [] if runs == RUNS else [f"run.output_dir={runs}"]
    tune_slice = ["run.name=sentiment-tune", "data.train_rows=64", "data.val_rows=32", "data.max_length=64",
                  "data.head_tokens=16", "train.epochs=2", "train.micro_batch_size=8", "resources.num_workers=1",
                  "tune.num_samples=2", f"tune.tuned_dir={runs}/tuned"]
    # the search: two one-worker trials on 64 reviews (the recipe's batch sizes: the first trial is its hand-set
    # values, which must lie in the search space). Its tuned recipe goes to <runs>/tuned, not configs/tuned: a
    # two-trial search must not change the checkout's recipes (the fine-tune applies configs/tuned by default).
    # Within the 12 minutes on a 2-core laptop (a fresh cache: 14 min 47 s with the recipes as they are):
    # one epoch of sentiment, 256-token summarization rows, 600 topic documents embedded on both cores. The runs are
    # named <task>-demo: the recipes' own runs (the README's publish commands) must not resume these smaller ones.
    sentiment = ["--config", "configs/sentiment.yaml", *moved, "run.name=sentiment-demo", "train.epochs=1",
                 "data.test_rows=300"]
    summarization = ["--config", "configs/summarization.yaml", *moved, "run.name=summarization-demo",
                     "data.max_length=256"]
    return [
        ("sentiment: fine-tune MiniLM on 512 IMDb reviews, one epoch (2 Ray Train workers)",
         ["jobs/finetune.py", *sentiment]),
        ("sentiment: evaluate on 300 held-out test reviews", ["jobs/evaluate.py", *sentiment]),
        ("summarization: fine-tune SmolLM2-135M on 16 CNN/DM articles", ["jobs/finetune.py", *summarization]),
        ("summarization: ROUGE of Lead-3, extractive, zero-shot and fine-tuned on 8 test articles",
         ["jobs/evaluate.py", *summarization]),
        ("topics: BERTopic vs LDA on 600 20 Newsgroups posts",
         ["jobs/topics.py", "--config", "configs/topics.yaml", *moved, "run.name=topics-demo", "data.rows=600",
          "resources.cpus_per_worker=2"]),
        ("tune: a two-trial Ray Tune search of the sentiment fine-tune",
         ["jobs/tune.py", "--config", "configs/sentiment.yaml", *moved, *tune_slice]),
        ("report: one HTML page of the runs", ["jobs/report.py", "--runs", runs, "--tuned", f"{runs}/tuned"]),
    ]


STEPS = steps()
"""The demo's steps with its outputs under runs/."""


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def shared_ray() -> dict:
    """Start one local Ray cluster for all steps (each job would otherwise start and stop its own: seconds to
    minutes each on a loaded 2-core machine); the steps' environment, RAY_ADDRESS pointing at it."""
    import ray

    from raytron.runtime import connect_ray

    if "RAY_ADDRESS" in os.environ:  # a cluster given: the steps join it
        return dict(os.environ)
    connect_ray()
    print(f"==> one local Ray cluster for every step: {ray.get_runtime_context().gcs_address}", flush=True)
    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default=RUNS, help="folder of every output (default: %(default)s)")
    args = parser.parse_args(argv)
    if not Path("jobs/finetune.py").is_file():
        raise RaytronError(f"run the demo from the repository root (make demo); {Path.cwd()} has no jobs/ folder")
    todo = steps(args.runs)
    start = time.perf_counter()
    env = shared_ray()
    for number, (what, command) in enumerate(todo, 1):
        began = time.perf_counter()
        print(f"==> [{number}/{len(todo)}] {what}: python {' '.join(command)} ({clock(began - start)} so far)",
              flush=True)
        code = subprocess.run([sys.executable, *command], env=env).returncode
        if code:
            print(f"error: step {number} ({what}) failed with exit code {code}; fix what it says and rerun `make "
                  "demo` (finished steps resume)", file=sys.stderr)
            return code
        print(f"<== [{number}/{len(todo)}] done in {clock(time.perf_counter() - began)}", flush=True)
    print(f"make demo: all {len(todo)} steps done in {clock(time.perf_counter() - start)}; the report: "
          f"{Path(args.runs, 'report.html').absolute()}")
    return 0
