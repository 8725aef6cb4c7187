"""The main job (`make demo`): every task on a small slice (local Ray, W&B offline), a two-trial Ray Tune search,
then the report. Each step is the job a user would run, as its own process; progress and times are printed.

Rerunning resumes the fine-tunes, the topic sweep and the search from their checkpoints and journals (finished ones
end at once); the evaluations run again.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from raytron.errors import RaytronError, exit_on_user_error

TUNE_SLICE = ["run.name=sentiment-tune", "data.train_rows=64", "data.val_rows=32", "data.max_length=64",
              "data.head_tokens=16", "train.epochs=2", "train.micro_batch_size=8", "resources.num_workers=1",
              "tune.num_samples=2", "tune.tuned_dir=runs/tuned"]
"""The demo's search: two one-worker trials on 64 reviews (the recipe's batch sizes: the first trial is its hand-set
values, which must lie in the search space). Its tuned recipe goes to runs/tuned, not configs/tuned:
a two-trial search must not change the checkout's recipes (the fine-tune applies configs/tuned by default)."""
STEPS = [
    ("sentiment: fine-tune MiniLM on 512 IMDb reviews (2 Ray Train workers)",
     ["jobs/finetune.py", "--config", "configs/sentiment.yaml"]),
    ("sentiment: evaluate on 500 held-out test reviews", ["jobs/evaluate.py", "--config", "configs/sentiment.yaml"]),
    ("summarization: fine-tune SmolLM2-135M on 16 CNN/DM articles",
     ["jobs/finetune.py", "--config", "configs/summarization.yaml"]),
    ("summarization: ROUGE of Lead-3, extractive, zero-shot and fine-tuned on 8 test articles",
     ["jobs/evaluate.py", "--config", "configs/summarization.yaml"]),
    ("topics: BERTopic vs LDA on 1,000 20 Newsgroups posts", ["jobs/topics.py", "--config", "configs/topics.yaml"]),
    ("tune: a two-trial Ray Tune search of the sentiment fine-tune",
     ["jobs/tune.py", "--config", "configs/sentiment.yaml", *TUNE_SLICE]),
    ("report: one HTML page of the runs", ["jobs/report.py", "--tuned", "runs/tuned"]),
]
"""(what it does, the command after `python`), in order."""


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    if not Path("jobs/finetune.py").is_file():
        raise RaytronError(f"run the demo from the repository root (make demo); {Path.cwd()} has no jobs/ folder")
    start = time.perf_counter()
    for number, (what, command) in enumerate(STEPS, 1):
        began = time.perf_counter()
        print(f"==> [{number}/{len(STEPS)}] {what}: python {' '.join(command)} ({clock(began - start)} so far)",
              flush=True)
        code = subprocess.run([sys.executable, *command]).returncode
        if code:
            print(f"error: step {number} ({what}) failed with exit code {code}; fix what it says and rerun `make "
                  "demo` (finished steps resume)", file=sys.stderr)
            return code
        print(f"<== [{number}/{len(STEPS)}] done in {clock(time.perf_counter() - began)}", flush=True)
    print(f"make demo: all {len(STEPS)} steps done in {clock(time.perf_counter() - start)}; the report: "
          f"{Path('runs/report.html').absolute()}")
    return 0
