"""Collect dated news from NewsAPI into the data root: `NEWSAPI_KEY=... python jobs/collect_news.py --q "climate" --from 2026-11-01`.

Appends to <data root>/newsapi/articles.jsonl (deduplicated by URL), where the topic job reads it
with data.dataset=newsapi; the data root is $RAYTRON_DATA_DIR, else ../shared/data, else ./data.
Rerun the same command to resume after an interruption, a rate limit or --max-pages.
"""

import argparse
import logging
import sys
from pathlib import Path

from raytron.data.newsapi import DEFAULT_BASE_URL, CollectInterrupted, NewsAPIClient, NewsQuery, articles_path, collect
from raytron.errors import RaytronError, exit_on_user_error

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def outcome(counts: dict, out: Path) -> str:
    """The final line: what this run stored, and whether pages remain for the query."""
    line = f"done: {counts['new']} new articles from {counts['pages']} pages ({counts['duplicates']} duplicates) in {out}; "
    if counts["more"]:
        return line + (f"more pages remain ({counts['remaining']} of {counts['total']} results not fetched yet; "
                       "raise --max-pages or rerun to continue)")
    if counts["limited"]:
        return line + (f"NewsAPI's plan limit reached: no more pages for this query ({counts['total']} results "
                       "match; narrow it with --from/--to or --q)")
    return line + f"all {counts['total']} results of this query fetched"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", choices=["everything", "top-headlines"], default="everything")
    parser.add_argument("--q", default=None, help="search terms (NewsAPI syntax)")
    parser.add_argument("--from", dest="from_date", default=None, help="oldest date, ISO (everything)")
    parser.add_argument("--to", dest="to_date", default=None, help="newest date, ISO (everything)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--country", default=None, help="top-headlines: e.g. us")
    parser.add_argument("--category", default=None, help="top-headlines: business, technology, ...")
    parser.add_argument("--max-pages", type=int, default=10,
                        help="most pages (of 100 articles) fetched by this run (default: %(default)s); rerun to continue")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL)
    parser.add_argument("--out", default=None,
                        help=f"JSONL file (default: <data root>/newsapi/articles.jsonl, here {articles_path()})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.endpoint == "everything" and not args.q:
        raise RaytronError("--q is required for the everything endpoint (NewsAPI needs search terms)")
    out = Path(args.out).absolute() if args.out else articles_path()
    query = NewsQuery(endpoint=args.endpoint, q=args.q, from_date=args.from_date, to_date=args.to_date,
                      language=args.language if args.endpoint == "everything" else None, country=args.country,
                      category=args.category)
    try:
        counts = collect(NewsAPIClient(base_url=args.base_url), query, out, args.max_pages)
    except KeyboardInterrupt as stop:  # Ctrl-C: one line, no traceback; the stored pages are kept
        stored = stop.counts["new"] if isinstance(stop, CollectInterrupted) else 0
        print(f"interrupted after {stored} articles; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    print(outcome(counts, out))
    return 0
