"""Collect dated news from NewsAPI into the data root: `NEWSAPI_KEY=... python jobs/collect_news.py --q "climate" --from 2026-11-01`.

Appends to <data root>/newsapi/articles.jsonl (deduplicated by URL); rerun the same command to
resume after an interruption or a rate limit. Topic-model them with data.dataset=newsapi.
"""

import argparse
import logging
from pathlib import Path

from raytron.data.newsapi import DEFAULT_BASE_URL, NewsAPIClient, NewsQuery, collect
from raytron.data.sources import SOURCES, data_root
from raytron.errors import RaytronError, exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", choices=["everything", "top-headlines"], default="everything")
    parser.add_argument("--q", default=None, help="search terms (NewsAPI syntax)")
    parser.add_argument("--from", dest="from_date", default=None, help="oldest date, ISO (everything)")
    parser.add_argument("--to", dest="to_date", default=None, help="newest date, ISO (everything)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--country", default=None, help="top-headlines: e.g. us")
    parser.add_argument("--category", default=None, help="top-headlines: business, technology, ...")
    parser.add_argument("--max-pages", type=int, default=10)
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL)
    parser.add_argument("--out", default=None, help="JSONL file (default: <data root>/newsapi/articles.jsonl)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.endpoint == "everything" and not args.q:
        raise RaytronError("--q is required for the everything endpoint (NewsAPI needs search terms)")
    root = data_root(None)
    out = Path(args.out) if args.out else (root or Path("data")) / SOURCES["newsapi"].local
    query = NewsQuery(endpoint=args.endpoint, q=args.q, from_date=args.from_date, to_date=args.to_date,
                      language=args.language if args.endpoint == "everything" else None, country=args.country,
                      category=args.category)
    counts = collect(NewsAPIClient(base_url=args.base_url), query, out, args.max_pages)
    print(f"done: {counts['new']} new articles from {counts['pages']} pages ({counts['duplicates']} duplicates) in {out}")


if __name__ == "__main__":
    main()
