"""ASHA that survives `Tuner.restore`: Tune saves trial and searcher state, not the scheduler's rungs."""

from __future__ import annotations

import logging
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler

log = logging.getLogger("raytron.tune")


class ResumableASHA(ASHAScheduler):
    """ASHA whose state (its rungs) is saved to `state_file` after every decision and read
    back on first use after a restore: without it, a resumed search would forget the finished trials' epochs and
    stop fewer trials."""

    def __init__(self, state_file: str | Path, **asha):
        super().__init__(**asha)
        self.state_file = str(state_file)
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded and Path(self.state_file).is_file():
            self.restore(self.state_file)
            recorded = {trial for bracket in self._brackets for _, results in bracket._rungs for trial in results}
            log.info("ASHA: rungs of %d earlier trial(s) restored from %s", len(recorded), self.state_file)
        self._loaded = True

    def _save(self) -> None:
        Path(self.state_file).parent.mkdir(parents=True, exist_ok=True)
        partial = f"{self.state_file}.partial"
        self.save(partial)
        Path(partial).replace(self.state_file)

    def on_trial_add(self, tune_controller, trial):
        self._load()
        if trial.trial_id not in self._trial_info:  # a restored trial keeps its bracket
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._load()
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        self._load()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

