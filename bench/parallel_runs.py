"""Compare fine-tune runs of one recipe on different GPU layouts (DP, TP) from their per-window metrics files.

`python bench/parallel_runs.py REFERENCE.metrics.jsonl RUN.metrics.jsonl ... --gpus 1 2 ... [--plot curves.png]`
prints, per run: median ms/step, real tokens/s, TFLOP/s and MFU per GPU over the logged windows (the first one,
with compilation and warm-up, left out; `--timed-after RUN=STEP` keeps a resumed run's own windows only), scaling
efficiency against the reference (tokens/s over GPUs x the reference's tokens/s per GPU), rank 0's peak GPU memory
(only rank 0 writes the file), the last validation metrics, and the largest loss difference from the reference at
the steps both logged (the later record of a step wins: a resumed run logs its redone steps again). The plot draws
every run's loss curve over the reference's. Used for issue 15's figures (docs/gpu-multi.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def read_run(path: Path) -> tuple[dict[int, dict], dict]:
    """The run's training windows by step (later records win) and its last validation metrics."""
    windows, validation = {}, {}
    for record in map(json.loads, path.read_text().splitlines()):
        if "train/loss" in record:
            windows[record["step"]] = record
        elif any(key.startswith("val/") for key in record):
            validation = {key: value for key, value in record.items() if key.startswith("val/")}
    return windows, validation


def summary(windows: dict[int, dict], gpus: int) -> dict:
    timed = [windows[step] for step in sorted(windows)[1:]]

    def median(key: str) -> float:
        return statistics.median(window[key] for window in timed)

    return {"gpus": gpus, "ms_per_step": median("train/step_time_ms"), "tokens_per_s": median("train/tokens_per_s"),
            "tflops_per_gpu": median("train/tflops_per_device"), "mfu": median("train/mfu"),
            "peak_gib": max(window.get("train/peak_memory_gib", 0.0) for window in windows.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="metrics.jsonl files, the reference (1 GPU) first")
    parser.add_argument("--gpus", nargs="+", type=int, required=True, help="GPUs of each run, in the same order")
    parser.add_argument("--plot", type=Path, help="write the loss curves to this PNG")
    parser.add_argument("--timed-after", nargs="*", default=[], metavar="RUN=STEP",
                        help="time RUN only on windows after STEP (a resumed run's file starts with the restored "
                             "windows of the run it resumed)")
    args = parser.parse_args()
    if len(args.gpus) != len(args.runs):
        parser.error(f"--gpus takes one count per run ({len(args.runs)}), got {len(args.gpus)}")
    runs = {path.name.removesuffix(".metrics.jsonl"): (read_run(path), gpus)
            for path, gpus in zip(args.runs, args.gpus, strict=True)}
    timed_after = {name: int(step) for name, step in (item.split("=") for item in args.timed_after)}
    (reference, _), reference_gpus = next(iter(runs.values()))
    base = summary(reference, reference_gpus)
    print("| run | GPUs | ms/step | tokens/s | TFLOP/s per GPU | MFU | scaling efficiency | peak memory per GPU "
          "| last validation | max abs loss difference from the reference (steps compared) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ((windows, validation), gpus) in runs.items():
        row = summary({step: w for step, w in windows.items() if step > timed_after.get(name, 0)}, gpus)
        efficiency = row["tokens_per_s"] / gpus / (base["tokens_per_s"] / base["gpus"])
        common = sorted(set(windows) & set(reference))
        difference = max(abs(windows[s]["train/loss"] - reference[s]["train/loss"]) for s in common)
        shown = ", ".join(f"{key.removeprefix('val/')} {value:.4f}" for key, value in validation.items()
                          if not key.endswith("neg_loss"))
        print(f"| {name} | {gpus} | {row['ms_per_step']:.1f} | {row['tokens_per_s']:,.0f} | "
              f"{row['tflops_per_gpu']:.1f} | {row['mfu']:.1%} | {efficiency:.0%} | {row['peak_gib']:.2f} GiB | "
              f"{shown} | {difference:.2e} ({len(common)}) |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(8, 4.5))
        for index, (name, ((windows, _), _)) in enumerate(runs.items()):
            steps = sorted(windows)
            axis.plot(steps, [windows[s]["train/loss"] for s in steps], label=name,
                      linewidth=2.5 if index == 0 else 1.2, linestyle="-" if index == 0 else "--")
        axis.set_xlabel("step")
        axis.set_ylabel("training loss (mean over the logged window)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"loss curves: {args.plot}")


if __name__ == "__main__":
    main()
