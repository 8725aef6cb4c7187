"""A local HTTP server that answers like NewsAPI (https://newsapi.org/docs: responses and errors).

Not a mock of our code: the real client talks HTTP to it. It serves a fixed set of articles
(with one URL repeated, as NewsAPI does across sources), enforces the key, answers 426
maximumResultsReached past `max_results`, and a 429 rateLimited with Retry-After once for a
chosen page.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API_KEY = "test-key"


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
    def __init__(self, articles: list[dict], max_results: int = 100, rate_limit_page: int | None = None):
        self.articles, self.max_results, self.rate_limit_page = articles, max_results, rate_limit_page
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parsed = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                fake.requests.append((parsed.path, params))
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
        chunk = self.articles[(page - 1) * size: page * size]
        return 200, {"status": "ok", "totalResults": len(self.articles), "articles": chunk}, {}

    def pages_served(self) -> list[int]:
        return [int(p.get("page", 1)) for _, p in self.requests]

    def close(self):
        self.server.shutdown()
