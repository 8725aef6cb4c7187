"""Run each test module in its own pytest process (and so its own local Ray cluster), `--jobs` at a time.

One process per module because in one long session Ray 2.60's driver once hung on a GCS call after
~20 modules; several at a time because a lone module leaves cores idle during Ray and model
start-up (CI's 2-core machine, two at a time: the suite 18 min 45 s -> 16 min 49 s; each module runs
1.4-2.5x slower beside another: 2026-11-30, test_imdb_data 77 s alone against 108 s in CI, test_job_submit 100 / 162 s,
test_generate 73 / 195 s, test_serve 553 / 1,405 s; so more lanes than cores buy nothing). Modules run in the order
given (list the slowest first); each one's output is printed whole when it ends. Exit status 1 if
any module failed or ran past `--timeout`. What several modules need built (a fine-tuned run, a model store) is
built once for all of them, in a folder this run shares with its modules (conftest.built_once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed


def run_module(module: str, timeout: int) -> tuple[str, int, str, float]:
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", module],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        status, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as expired:
        status, output = 1, f"{expired.output or ''}\n{module}: still running after {timeout} s: killed\n"
    return module, status, output, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per module")
    args = parser.parse_args()
    modules = list(dict.fromkeys(args.modules))  # the slow ones named first also match tests/test_*.py
    failed = []
    with tempfile.TemporaryDirectory(prefix="raytron-test-shared-") as shared, ThreadPoolExecutor(args.jobs) as pool:
        os.environ["RAYTRON_TEST_SHARED"] = shared  # conftest.SHARED_BUILDS, inherited by the modules
        for future in as_completed([pool.submit(run_module, m, args.timeout) for m in modules]):
            module, status, output, seconds = future.result()
            print(f"== {module} ({seconds:.0f} s, {'ok' if status == 0 else 'FAILED'})\n{output}", flush=True)
            if status != 0:
                failed.append(module)
    print(f"{len(modules) - len(failed)} of {len(modules)} modules passed" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
