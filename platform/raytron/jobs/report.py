"""One self-contained HTML page from the latest runs of all three tasks: `python jobs/report.py [--runs runs] [--out FILE]`.

Each metric beside its published anchor, the plots (confusion matrix, ROUGE, topics over time), the tuned
recipes against the hand-set ones, cost (device-hours, tokens/s) and provenance (config, data, commit).
A task without a run is shown as missing, with the command that makes it. Opens without network.
"""

import argparse
import logging
from pathlib import Path

from raytron.errors import RaytronError, exit_on_user_error

TASKS = ("sentiment", "summarization", "topics")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="folder of the runs (run.output_dir; default: %(default)s)")
    parser.add_argument("--configs", default="configs", help="the hand-set recipes (default: %(default)s)")
    parser.add_argument("--tuned", default=None, help="tuned recipes of jobs/tune.py (tune.tuned_dir; default: "
                        "<configs>/tuned)")
    parser.add_argument("--out", default=None, help="the HTML file (default: <runs>/report.html)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runs_root, configs = Path(args.runs).absolute(), Path(args.configs)
    tuned = Path(args.tuned) if args.tuned else configs / "tuned"
    if not runs_root.is_dir():
        raise RaytronError(f"--runs {args.runs}: no such folder; run a job first (make demo) or give run.output_dir")
    from raytron.report.page import render
    from raytron.report.runs import read_run, tuning

    runs = {task: read_run(runs_root, task) for task in TASKS}
    for run in runs.values():
        logging.getLogger("raytron.report").info("%s: %s%s", run.task, run.folder or "no run",
                                                  "".join(f"; missing {line}" for line in run.missing))
    out = Path(args.out) if args.out else runs_root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(render(runs, {task: tuning(configs, tuned, task) for task in TASKS}, runs_root, configs, tuned))
    partial.replace(out)
    print(f"report: {out.absolute()} (open it in a browser; it needs no network)")
    return 0
