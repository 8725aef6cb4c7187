"""Preprocess a recipe's corpus once: `python jobs/preprocess.py --config configs/sentiment.yaml`.

Tokenizes the training splits (train, val) into the tokenized-split cache ($RAYTRON_CACHE/data), which later
fine-tunes, Ray Tune trials and evaluations with the same data, tokenizer and settings read instead of
tokenizing again (`raytron.data.cache`; a rerun logs a cache hit). IMDb can also be written to a folder of its
own, all three splits: `--out data/imdb-prepared`, then train with `data.prepared_dir=data/imdb-prepared`
(same max_length and head_tokens).
"""

import logging

from raytron.cli import parse_job
from raytron.data.imdb import encode_splits, read_raw_splits, write_prepared
from raytron.errors import RaytronError, exit_on_user_error
from raytron.models.pretrained import resolve_pretrained
from raytron.runtime import absolute_paths, connect_ray
from raytron.storage import shown
from raytron.train.tasks import load_task_splits

log = logging.getLogger("raytron.preprocess")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(__doc__, ("--out", {"help": "IMDb only: a folder for all three splits' parquet shards "
                                                      "(data.prepared_dir); default: the tokenized-split cache"}),
                          argv=argv)
    if args.out and cfg.task != "sentiment":
        raise RaytronError(f"--out writes IMDb's prepared splits; {cfg.task} recipes preprocess into the cache "
                           "(leave --out away)")
    cfg = absolute_paths(cfg)
    connect_ray()
    log.info("preprocessing %s from %s", cfg.data.dataset, shown(cfg.data.data_dir or "the Hugging Face Hub"))
    if args.out:
        encoded = encode_splits(read_raw_splits(cfg.data), cfg.data, resolve_pretrained(cfg.model.pretrained))
        out = write_prepared(encoded, cfg.data, args.out)
        print(f"wrote {out} (train with data.prepared_dir={out})")
        return 0
    _, rows = load_task_splits(cfg)
    print(f"{cfg.data.dataset}: {', '.join(f'{split} {count} rows' for split, count in rows.items())} in the "
          "tokenized-split cache")
    return 0
