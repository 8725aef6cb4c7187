"""Evaluate a fine-tuned model on the held-out test split: `python jobs/evaluate.py --config configs/<task>.yaml`.

sentiment: accuracy, precision, recall, F1, confusion matrix, error analysis.
summarization: the ROUGE table of Lead-3, extractive, zero-shot and fine-tuned decoder.
topics: evaluated by the topic job itself (NPMI, diversity against LDA): `python jobs/topics.py --config ...`.
"""

from raytron.cli import parse_job
from raytron.errors import RaytronError, exit_on_user_error
from raytron.storage import synced_run


def evaluator(task: str, config: str):
    """The task's evaluate(cfg, model_dir); a topics config is sent to the topic job."""
    if task == "topics":
        raise RaytronError(f"topic models are evaluated by the topic job (NPMI and diversity against LDA): "
                           f"use python jobs/topics.py --config {config}")
    from raytron.evaluate import sentiment, summarization

    return {"sentiment": sentiment.evaluate, "summarization": summarization.evaluate}[task]


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(__doc__, ("--model", {"default": None, "help": "model folder (default: <run dir>/model)"}),
                          argv=argv)
    with synced_run(cfg, only=("model/", "extractive/")):  # a run stored at a URI: pulled here, outputs pushed back
        evaluator(cfg.task, args.config)(cfg, args.model)
    print(f"done: report in {cfg.run_dir / 'eval'}")
    return 0
