"""Evaluate a fine-tuned model on the held-out test split: `python jobs/evaluate.py --config configs/sentiment.yaml`."""

from raytron.cli import parse_job
from raytron.errors import exit_on_user_error
from raytron.evaluate.sentiment import evaluate


@exit_on_user_error
def main() -> None:
    args, cfg = parse_job(__doc__, ("--model", {"default": None, "help": "model folder (default: <run dir>/model)"}))
    result = evaluate(cfg, args.model)
    print(f"test accuracy {result['accuracy']:.4f} precision {result['precision']:.4f} "
          f"recall {result['recall']:.4f} F1 {result['f1']:.4f} ({result['rows']} rows)")


if __name__ == "__main__":
    main()
