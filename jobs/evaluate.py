"""Evaluate a fine-tuned model on the held-out test split: `python jobs/evaluate.py --config configs/sentiment.yaml`."""

import argparse
import logging

from raytron.config import load_config
from raytron.errors import exit_on_user_error
from raytron.evaluate.sentiment import evaluate


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="the YAML recipe the model was trained with")
    parser.add_argument("--model", default=None, help="model folder (default: <run dir>/model)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.test_rows=1000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = evaluate(load_config(args.config, args.overrides), args.model)
    print(f"test accuracy {result['accuracy']:.4f} precision {result['precision']:.4f} "
          f"recall {result['recall']:.4f} F1 {result['f1']:.4f} ({result['rows']} rows)")


if __name__ == "__main__":
    main()
