"""Tune a task's hyperparameters with Ray Tune: `python jobs/tune.py --config configs/<task>.yaml [key=value ...]`.

The search space is the recipe's `tune:` section; the best trial's values are written to the tuned recipe
(configs/tuned/<recipe>.yaml), which the other jobs apply. Rerunning the same command resumes an interrupted search.
"""

from raytron.cli import parse_job
from raytron.errors import exit_on_user_error
from raytron.tune.tasks import tune_task


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(__doc__, argv=argv, tuned=False)
    outcome = tune_task(cfg, args.config)
    done = sum(1 for row in outcome.trials if row["done"] or row["error"])
    if not outcome.finished:
        print(f"interrupted: {done} of {cfg.tune.num_samples} trials ended; rerun the same command to resume the "
              f"search in {outcome.folder}")
        return 130
    if outcome.tuned_file is None:
        print(f"error: no trial of the search in {outcome.folder} reported {outcome.metric}", flush=True)
        return 1
    hand_set = f" (hand-set {outcome.baseline[outcome.metric]:.4f})" if outcome.baseline else ""
    print(f"done: best {outcome.metric} {outcome.best[outcome.metric]:.4f}{hand_set} in trial {outcome.best['trial']} "
          f"of {len(outcome.trials)}, {sum(r['stopped_early'] for r in outcome.trials)} stopped early by ASHA; tuned "
          f"recipe {outcome.tuned_file}")
    return 0
