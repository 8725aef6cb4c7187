"""A local HTTP server that answers like NewsAPI (https://newsapi.org/docs: responses and errors).

Not a mock of our code: the real client talks HTTP to it. It serves a fixed set of articles
(with one URL repeated, as NewsAPI does across sources), filtered by `q` (words and "phrases" in
title, description or content; +must, -must-not, AND, OR, NOT; no parentheses) and `from`/`to` (ISO
dates or datetimes, inclusive; a date alone is its whole day), enforces the key, answers 426
maximumResultsReached past `max_results`, 400 parameterInvalid for a bad date, and a 429
rateLimited with Retry-After once for a chosen page. `delay_s` holds each answer back (a slow
network: time to interrupt a collector between pages).
"""

from __future__ import annotations

import json
import re
import threading
import time as clock
from datetime import datetime, time, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API_KEY = "test-key"


def _term_in(term: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE) is not None


def matches_q(article: dict, q: str) -> bool:
    """NewsAPI's `q` (https://newsapi.org/docs/endpoints/everything): alternatives split by OR, each
    needing all its terms (space or AND), none of its -terms or NOT terms; "quoted" terms are phrases."""
    text = " ".join(article.get(field) or "" for field in ("title", "description", "content"))
    tokens = re.findall(r'[+-]?"[^"]*"|\S+', q.replace("(", " ").replace(")", " "))
    alternatives, current = [], []
    for token in tokens:
        if token == "OR":
            alternatives.append(current)
            current = []
        else:
            current.append(token)
    alternatives.append(current)
    for terms in alternatives:
        ok, negate = True, False
        for token in terms:
            if token in ("AND", "NOT"):
                negate = token == "NOT"
                continue
            excluded = negate or token.startswith("-")
            word = token.lstrip("+-").strip('"')
            ok &= _term_in(word, text) != excluded
            negate = False
        if ok:
            return True
    return False


def _bound(value: str, end: bool) -> datetime:
    """An ISO `from`/`to` as a UTC datetime; a date alone covers its whole day."""
    if len(value) == 10:
        return datetime.combine(datetime.fromisoformat(value).date(), time.max if end else time.min, timezone.utc)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def make_articles(count: int) -> list[dict]:
    articles = []
    for i in range(count):
        url = f"https://example.com/story/{i if i != 7 else 6}"  # story 6 appears twice
        articles.append({"source": {"id": None, "name": f"Source {i % 3}"}, "author": "A. Writer",
                         "title": f"Headline {i}", "description": f"Description {i}", "url": url,
                         "urlToImage": None, "publishedAt": f"2026-11-{1 + i % 20:02d}T08:00:00Z",
                         "content": f"Body of story {i} about markets and weather."})
    return articles


class FakeNewsAPI:
    def __init__(self, articles: list[dict], max_results: int = 100, rate_limit_page: int | None = None,
                 delay_s: float = 0.0):
        self.articles, self.max_results, self.rate_limit_page = articles, max_results, rate_limit_page
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parsed = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                fake.requests.append((parsed.path, params))
                clock.sleep(fake.delay_s)
                status, body, headers = fake.answer(parsed.path, params, self.headers.get("X-Api-Key"))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, params: dict, key: str | None):
        error = lambda status, code, message, headers=None: (  # noqa: E731
            status, {"status": "error", "code": code, "message": message}, headers or {})
        if path not in ("/v2/everything", "/v2/top-headlines"):
            return error(404, "routeNotFound", "Unknown route")
        if not key:
            return error(401, "apiKeyMissing", "Your API key is missing.")
        if key != API_KEY:
            return error(401, "apiKeyInvalid", "Your API key is invalid or incorrect.")
        page, size = int(params.get("page", 1)), int(params.get("pageSize", 20))
        if page == self.rate_limit_page:
            self.rate_limit_page = None  # once
            return error(429, "rateLimited", "You have been rate limited.", {"Retry-After": "1"})
        if page * size > self.max_results:
            return error(426, "maximumResultsReached",
                         f"You have requested too many results. Developer accounts are limited to a max of "
                         f"{self.max_results} results.")
        try:
            lowest = _bound(params["from"], end=False) if "from" in params else None
            highest = _bound(params["to"], end=True) if "to" in params else None
        except ValueError:
            return error(400, "parameterInvalid", "The from or to parameter is not an ISO 8601 date or datetime.")
        found = [a for a in self.articles if ("q" not in params or matches_q(a, params["q"]))
                 and (lowest is None or _bound(a["publishedAt"], end=False) >= lowest)
                 and (highest is None or _bound(a["publishedAt"], end=False) <= highest)]
        chunk = found[(page - 1) * size: page * size]
        return 200, {"status": "ok", "totalResults": len(found), "articles": chunk}, {}

    def pages_served(self) -> list[int]:
        return [int(p.get("page", 1)) for _, p in self.requests]

    def close(self):
        self.server.shutdown()
