"""Time and peak memory of the README's main job (`make demo`: fine-tune + evaluate) on this machine.

Peak memory is sampled every 0.5 s as (a) the summed RSS of the job's process tree (driver, Ray
daemons, Train workers, Data actors) and (b) the rise in system memory in use, which also counts
Ray's shared-memory object store.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
STEPS = [
    ["jobs/finetune.py", "--config", "configs/sentiment.yaml", "run.resume=false"],
    ["jobs/evaluate.py", "--config", "configs/sentiment.yaml"],
]


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(argv: list[str]) -> tuple[float, int, int, int]:
    baseline = psutil.virtual_memory().used
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks = {"rss": 0, "system": 0}
    root = psutil.Process(proc.pid)

    def sample():
        while proc.poll() is None:
            peaks["rss"] = max(peaks["rss"], tree_rss(root))
            peaks["system"] = max(peaks["system"], psutil.virtual_memory().used - baseline)
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    thread.join()
    return time.perf_counter() - start, peaks["rss"], peaks["system"], code


def main() -> None:
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB")
    print(f"{'step':<22}{'wall s':>8}{'peak tree RSS GiB':>20}{'peak system +GiB':>19}")
    for argv in STEPS:
        wall, rss, system, code = measure(argv)
        if code:
            sys.exit(f"{argv[0]} failed with exit code {code}")
        print(f"{Path(argv[0]).stem:<22}{wall:>8.1f}{rss / 2**30:>20.2f}{system / 2**30:>19.2f}")


if __name__ == "__main__":
    main()
