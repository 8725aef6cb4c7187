"""Topic modeling: `python jobs/topics.py --config configs/topics.yaml [key=value ...]`.

Embeds the corpus with the Megatron-Core encoder (and the run's contrastively tuned one, when
jobs/finetune.py made it), compares BERTopic and LDA (NPMI, diversity) over topic counts and seeds,
and saves the run's BERTopic model with its keywords, topics over time and interactive plots.
"""

import json

from raytron.cli import parse_job
from raytron.errors import RaytronError, exit_on_user_error
from raytron.storage import synced_run


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(__doc__, argv=argv)
    if cfg.task != "topics":
        raise RaytronError(f"{args.config} is a {cfg.task} config; use a topics recipe (configs/topics.yaml)")
    from raytron.topics.pipeline import run

    with synced_run(cfg, only=("model/", "topics-sweep.jsonl", "embeddings/")):  # a run stored at a URI: pulled here, outputs pushed back
        result = run(cfg)
    print(json.dumps({"documents": result["documents"], "topics": result["topics"], "plots": result["plots"]}))
    print(f"done: outputs in {cfg.run_dir / 'topics'}, model in {cfg.run_dir / 'topic_model'}")
    return 0
