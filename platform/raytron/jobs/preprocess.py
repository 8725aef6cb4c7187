"""Preprocess a corpus once into parquet shards: `python jobs/preprocess.py --config configs/sentiment.yaml --out data/imdb-prepared`.

Then train from them with `data.prepared_dir=data/imdb-prepared` (same max_length and head_tokens).
"""

from raytron.cli import parse_job
from raytron.data.imdb import encode_splits, read_raw_splits, write_prepared
from raytron.errors import exit_on_user_error
from raytron.models.pretrained import resolve_pretrained
from raytron.runtime import absolute_paths, connect_ray


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(__doc__, ("--out", {"required": True, "help": "folder for the parquet shards"}), argv=argv)
    cfg = absolute_paths(cfg)
    connect_ray()
    encoded = encode_splits(read_raw_splits(cfg.data), cfg.data, resolve_pretrained(cfg.model.pretrained))
    out = write_prepared(encoded, cfg.data, args.out)
    print(f"wrote {out} (train with data.prepared_dir={out})")
    return 0
