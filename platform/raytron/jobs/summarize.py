"""Summarize new articles: `python jobs/summarize.py --config configs/summarization.yaml [--file FILE ...] [key=value ...]`.

Reads each FILE (plain text, one article per file) (--file, repeatable) or, without --file, one article from stdin.
--technique abstractive (the fine-tuned decoder in <run>/model, or --model), extractive (the
scorer fitted by jobs/evaluate.py, or centroid similarity when none is fitted) or lead-3.
Writes JSON lines {"source", "technique", "summary"} to stdout or --out (written atomically).
"""

import json
import sys
from pathlib import Path

from raytron.cli import parse_job
from raytron.config import SummarizationConfig
from raytron.errors import RaytronError, exit_on_user_error
from raytron.models.pretrained import resolve_pretrained

MAX_ARTICLE_CHARS = 200_000
"""Longer inputs are almost certainly not one news article (the prompt keeps ~4k characters anyway)."""


def read_articles(files: list[str]) -> list[tuple[str, str]]:
    sources = [(name, Path(name)) for name in files] or [("<stdin>", None)]
    articles = []
    for name, path in sources:
        if path is not None and not path.is_file():
            raise RaytronError(f"{name}: no such file (give text files, or pipe one article on stdin)")
        text = path.read_text(errors="replace") if path is not None else sys.stdin.read()
        if not text.strip():
            raise RaytronError(f"{name} is empty: nothing to summarize")
        if len(text) > MAX_ARTICLE_CHARS:
            raise RaytronError(f"{name} has {len(text):,} characters; the limit is {MAX_ARTICLE_CHARS:,} for one article")
        articles.append((name, text))
    return articles


def summarizer(cfg: SummarizationConfig, technique: str, model: str | None):
    """A function from articles to summaries for the chosen technique."""
    if technique == "lead-3":
        from raytron.evaluate.rouge import lead3

        return lambda articles: [lead3(a) for a in articles]
    if technique == "extractive":
        from raytron.inference.extractive import SCORER_FILE, ExtractiveSummarizer

        scorer = cfg.run_dir / "extractive"
        return ExtractiveSummarizer(resolve_pretrained(cfg.extractive.encoder),
                                    scorer if (scorer / SCORER_FILE).is_file() else None,
                                    cfg.extractive.sentences, cfg.extractive.max_sentence_tokens).summarize
    from raytron.inference.abstractive import AbstractiveSummarizer

    decoder = Path(model) if model else cfg.run_dir / "model" / "decoder"
    if not (decoder / "config.json").is_file():
        raise RaytronError(f"no decoder at {decoder}: fine-tune one (jobs/finetune.py --config ...), pass --model "
                           f"DIR, or use model.pretrained's zero-shot decoder with --model {resolve_pretrained(cfg.model.pretrained)}")
    return AbstractiveSummarizer(decoder, cfg.generation, max_length=cfg.data.max_length,
                                 kernels=cfg.model.kernels).summarize


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job(
        __doc__,
        ("--technique", {"choices": ["abstractive", "extractive", "lead-3"], "default": "abstractive"}),
        ("--model", {"default": None, "help": "decoder HF folder (default: <run dir>/model/decoder)"}),
        ("--out", {"default": None, "help": "JSON-lines output file (default: stdout)"}),
        ("--file", {"action": "append", "default": [], "help": "an article text file; repeat for more (default: stdin)"}),
        argv=argv,
    )
    if cfg.task != "summarization":
        raise RaytronError(f"{args.config} is a {cfg.task} config; use a summarization recipe (configs/summarization.yaml)")
    articles = read_articles(args.file)
    summaries = summarizer(cfg, args.technique, args.model)([text for _, text in articles])
    lines = "".join(json.dumps({"source": name, "technique": args.technique, "summary": summary}) + "\n"
                    for (name, _), summary in zip(articles, summaries, strict=True))
    if args.out:
        partial = Path(args.out).with_suffix(".partial")
        partial.write_text(lines)
        partial.rename(args.out)
    else:
        sys.stdout.write(lines)
    return 0
