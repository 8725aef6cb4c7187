"""Fine-tune a pretrained encoder on a task: `python jobs/finetune.py --config configs/sentiment.yaml [key=value ...]`."""

from raytron.cli import parse_job
from raytron.errors import exit_on_user_error
from raytron.train.launcher import finetune


@exit_on_user_error
def main() -> None:
    _, cfg = parse_job(__doc__)
    result = finetune(cfg)
    print(f"done: best validation accuracy {result.metrics.get('val/accuracy')}; model in {cfg.run_dir / 'model'}")


if __name__ == "__main__":
    main()
