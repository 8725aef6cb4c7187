"""Preprocess a corpus once into parquet shards: `python jobs/preprocess.py --config configs/sentiment.yaml --out data/imdb-prepared`.

Then train from them with `data.prepared_dir=data/imdb-prepared` (same max_length and head_tokens).
"""

import argparse
import logging

from raytron.config import load_config, resolve_pretrained
from raytron.data.imdb import encode_splits, read_raw_splits, write_prepared
from raytron.errors import exit_on_user_error
from raytron.train.launcher import absolute_paths, connect_ray


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/sentiment.yaml")
    parser.add_argument("--out", required=True, help="folder for the parquet shards (written atomically)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.max_length=256")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = absolute_paths(load_config(args.config, args.overrides))
    connect_ray()
    encoded = encode_splits(read_raw_splits(cfg.data), cfg.data, resolve_pretrained(cfg.model.pretrained))
    out = write_prepared(encoded, cfg.data, args.out)
    print(f"wrote {out} (train with data.prepared_dir={out})")


if __name__ == "__main__":
    main()
