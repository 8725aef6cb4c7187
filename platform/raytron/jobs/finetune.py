"""Fine-tune a pretrained model on a task: `python jobs/finetune.py --config configs/<task>.yaml [key=value ...]`."""

from raytron.cli import parse_job
from raytron.errors import exit_on_user_error
from raytron.train.launcher import finetune


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(__doc__, argv=argv)
    result = finetune(cfg)
    if result.metrics is None:  # resumed a finished run: Ray Train got no report
        print(f"done: the run had already finished (run.resume=false trains again); best model in {cfg.run_dir / 'model'}")
        return 0
    validation = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith("val/"))
    print(f"done: last validation {validation}; best model in {cfg.run_dir / 'model'}")
    return 0
