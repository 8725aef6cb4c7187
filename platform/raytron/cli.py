"""The shared command line of every job: `--config RECIPE [extra flags] [key.path=value ...]`."""

from __future__ import annotations

import argparse
import logging

from raytron.config import JobConfig, load_config


def parse_job(doc: str, *extra: tuple[str, dict], argv: list[str] | None = None,
              tuned: bool = True) -> tuple[argparse.Namespace, JobConfig]:
    """Parse the job's arguments (`argv`, else the command line), set up logging, and load the validated config
    (with the recipe's tuned values unless `tuned` is false: `raytron.tune.recipe`)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/sentiment.yaml or configs/summarization.yaml")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-5 data.train_rows=1000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return args, load_config(args.config, args.overrides, tuned=tuned)
