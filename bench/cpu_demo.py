"""Time, peak memory and load of the README's main job (`make demo`: `python jobs/demo.py`) on this machine, per step.

The demo runs once, from scratch, with its outputs in a fresh folder (`--runs`; default a new temporary folder) and
a cold cache (RAYTRON_CACHE=<runs>/cache: tokenized splits, the dequantized SmolLM2; `--warm` keeps the user's), as
one process exactly as `make demo` runs it; its "==> [n/N]" and "<== [n/N]" lines mark the steps. Per step: wall
time, peak memory sampled every 0.5 s as (a) the summed RSS of the demo's process tree (driver, jobs, Ray daemons,
Train workers, Data actors) and (b) the rise in system memory in use (which also counts Ray's shared-memory object
store), and the 1-minute load average at its start, its end and its highest: other work on the machine shows there.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MARK = re.compile(r"^(==>|<==) \[(\d+)/(\d+)\] (.*)")


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class Sampler(threading.Thread):
    """Peaks of the process tree's RSS, the system memory rise and the load average since the last `take()`."""

    def __init__(self, root: psutil.Process):
        super().__init__(daemon=True)
        self.root, self.baseline = root, psutil.virtual_memory().used
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.peaks = {"rss": 0, "system": 0, "load": os.getloadavg()[0]}

    def run(self) -> None:
        while self.root.is_running():
            rss, system, load = tree_rss(self.root), psutil.virtual_memory().used - self.baseline, os.getloadavg()[0]
            with self.lock:
                self.peaks = {"rss": max(self.peaks["rss"], rss), "system": max(self.peaks["system"], system),
                              "load": max(self.peaks["load"], load)}
            time.sleep(0.5)

    def take(self) -> dict:
        with self.lock:
            peaks = self.peaks
            self.reset()
        return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=None, help="the demo's output folder (default: a new temporary folder)")
    parser.add_argument("--warm", action="store_true", help="keep the user's cache ($RAYTRON_CACHE) instead of a cold one")
    args = parser.parse_args()
    runs = args.runs or tempfile.mkdtemp(prefix="raytron-demo-bench-")
    env = dict(os.environ) if args.warm else {**os.environ, "RAYTRON_CACHE": str(Path(runs, "cache").absolute())}
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; outputs in {runs}; cache {env.get('RAYTRON_CACHE', '~/.cache/raytron')}",
          flush=True)
    start = time.perf_counter()
    demo = subprocess.Popen([sys.executable, "jobs/demo.py", "--runs", runs], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    sampler = Sampler(psutil.Process(demo.pid))
    sampler.start()
    rows, began, opened = [], start, None
    for line in demo.stdout:
        sys.stdout.write(line)
        mark = MARK.match(line)
        if mark and mark.group(1) == "==>":
            if opened is None:  # the shared Ray cluster's start, before the first step
                rows.append(("start Ray", time.perf_counter() - began, sampler.take(), os.getloadavg()[0]))
            opened, began, load_at_start = mark.group(4).split(": python")[0], time.perf_counter(), os.getloadavg()[0]
            sampler.take()
        elif mark:
            peaks = sampler.take()
            rows.append((f"{mark.group(2)}. {opened}", time.perf_counter() - began, {**peaks, "start": load_at_start},
                         os.getloadavg()[0]))
    code = demo.wait()
    total = time.perf_counter() - start
    print(f"\n{'step':<40}{'wall s':>8}{'tree RSS GiB':>14}{'system +GiB':>13}{'load start/end/max':>22}")
    for name, wall, peaks, load_end in rows:
        loads = f"{peaks.get('start', float('nan')):.1f}/{load_end:.1f}/{peaks['load']:.1f}"
        print(f"{name[:39]:<40}{wall:>8.1f}{peaks['rss'] / 2**30:>14.2f}{peaks['system'] / 2**30:>13.2f}{loads:>22}")
    print(f"{'make demo, in all':<40}{total:>8.1f}   ({total / 60:.1f} min; exit code {code})")
    if code:
        sys.exit(f"jobs/demo.py failed with exit code {code}")


if __name__ == "__main__":
    main()
