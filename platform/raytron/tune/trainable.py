"""The Tune function trainable of the Ray Train tasks: one TorchTrainer fine-tune per trial, epochs reported to Tune."""

from __future__ import annotations

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from raytron.config import TASK_CONFIGS


class EpochReport(TuneReportCallback):
    """Ray Tune's report callback for Ray Train, forwarding only the epoch-end reports (those that carry the
    validation `metric`). The loop also reports its mid-epoch checkpoints (`train.checkpoint_every`) without it;
    Tune refuses results that lack the searched metric, so those stay in Train. Tune then counts
    one `training_iteration` per epoch: ASHA's rungs are epochs."""

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics, checkpoint):
        if self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def train_trial(values: dict, job: dict, metric: str, prepared: tuple) -> None:
    """One trial (the Train driver, in Tune's trial actor): `job` (the search's base config, its run under the
    search's trials/ folder) with this trial's `values`, fine-tuned as its own Ray Train run named after the trial
    (so a restored trial resumes its Train run from its last checkpoint)."""
    from raytron.train.launcher import finetune
    from raytron.tune.space import trial_config

    cfg = trial_config(TASK_CONFIGS[job["task"]].model_validate(job), values)
    cfg.run.name = tune.get_context().get_trial_id()
    finetune(cfg, prepared, callbacks=[EpochReport(metric)])
