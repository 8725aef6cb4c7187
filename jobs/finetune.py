"""Fine-tune a pretrained encoder on a task: `python jobs/finetune.py --config configs/sentiment.yaml [key=value ...]`."""

import argparse
import logging

from raytron.config import load_config
from raytron.errors import exit_on_user_error
from raytron.train.launcher import finetune


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/sentiment.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-5 resources.num_workers=2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    result = finetune(cfg)
    print(f"done: best validation accuracy {result.metrics.get('val/accuracy')}; model in {cfg.run_dir / 'model'}")


if __name__ == "__main__":
    main()
