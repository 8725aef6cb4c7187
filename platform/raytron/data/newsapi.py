"""NewsAPI collector (https://newsapi.org/docs): `/v2/everything` and `/v2/top-headlines`, paged.

The key comes from $NEWSAPI_KEY (sent as the `X-Api-Key` header). Pages are fetched until the
results run out, `max_pages` is reached, or NewsAPI answers `maximumResultsReached` (the free plan
stops at 100 results). 429 `rateLimited` waits the `Retry-After` seconds (else an exponential
backoff) and retries; 5xx retries the same way; other errors (bad key, bad parameter) stop with
NewsAPI's own message. Articles are deduplicated by URL and appended one page at a time to a JSON
Lines file (one write per page, flushed; a line torn by a crash is cut off before the next append),
next to a `.state.json` holding the next page per query: rerunning the same query resumes where it
stopped. `articles_path` is the one place that decides where that file lives by default: the
collector writes there and the topic job (data.dataset=newsapi) reads there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import requests

from raytron.data.sources import SOURCES, data_root
from raytron.errors import RaytronError
from raytron.storage import is_uri, shown

log = logging.getLogger("raytron.newsapi")
DEFAULT_BASE_URL = "https://newsapi.org"
FALLBACK_ROOT = Path("data")
"""The data root of collected news when none is set or found: ./data under the current folder."""


def articles_path(data_dir: str | None = None) -> Path:
    """Where collected news lives: `<data root>/newsapi/articles.jsonl`, the data root being
    `data_dir` (data.data_dir; it must exist), else $RAYTRON_DATA_DIR, else ../shared/data
    (`sources.data_root`), else `FALLBACK_ROOT` (./data). Absolute, so that messages name it."""
    root = data_root(data_dir)
    if root and is_uri(root):
        raise RaytronError(f"the data root {shown(root)} is a URI, but collected NewsAPI articles live in a local "
                           "folder: set data.data_dir (or $RAYTRON_DATA_DIR) to a local path for the newsapi corpus")
    return (Path(root or FALLBACK_ROOT).resolve() / SOURCES["newsapi"].local).absolute()


@dataclass(frozen=True)
class NewsQuery:
    """One NewsAPI request, without its page (parameter names as NewsAPI documents them)."""

    endpoint: Literal["everything", "top-headlines"] = "everything"
    q: str | None = None
    from_date: str | None = None
    """ISO date or datetime: oldest article (everything only)."""
    to_date: str | None = None
    """ISO date or datetime: newest article (everything only)."""
    language: str | None = "en"
    country: str | None = None
    """top-headlines only (e.g. us)."""
    category: str | None = None
    """top-headlines only (business, technology, ...)."""
    sort_by: str = "publishedAt"
    page_size: int = 100

    def params(self, page: int) -> dict[str, str | int]:
        if self.endpoint == "everything":
            fields = {"q": self.q, "from": self.from_date, "to": self.to_date, "language": self.language,
                      "sortBy": self.sort_by}
        else:
            fields = {"q": self.q, "country": self.country, "category": self.category}
        return {**{k: v for k, v in fields.items() if v}, "pageSize": self.page_size, "page": page}

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class NewsAPIClient:
    def __init__(self, api_key: str | None = None, base_url: str = DEFAULT_BASE_URL, max_retries: int = 5,
                 timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        self.api_key = api_key or os.environ.get("NEWSAPI_KEY")
        if not self.api_key:
            raise RaytronError("no NewsAPI key: set NEWSAPI_KEY (get one at https://newsapi.org/register)")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.session = requests.Session()

    def page(self, query: NewsQuery, page: int) -> dict | None:
        """One page of results, or None when NewsAPI says the plan's maximum results are reached."""
        url = f"{self.base_url}/v2/{query.endpoint}"
        for attempt in range(self.max_retries + 1):
            try:
                response = self.session.get(url, params=query.params(page), headers={"X-Api-Key": self.api_key},
                                            timeout=self.timeout_s)
            except requests.RequestException as error:
                if attempt == self.max_retries:
                    raise RaytronError(f"NewsAPI unreachable at {url}: {error}") from None
                self.sleep(2.0 ** attempt)
                continue
            body = _json(response)
            if response.status_code == 200 and body.get("status") == "ok":
                return body
            code = body.get("code", f"http{response.status_code}")
            if code == "maximumResultsReached":
                return None
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == self.max_retries:
                    break
                wait = float(response.headers.get("Retry-After") or 2.0 ** attempt)
                log.warning("NewsAPI %s (%s): waiting %.0f s before retrying page %d", response.status_code, code,
                            wait, page)
                self.sleep(wait)
                continue
            hint = " (check NEWSAPI_KEY)" if code.startswith("apiKey") else ""
            raise RaytronError(f"NewsAPI refused page {page}: {code}: {body.get('message', response.text[:200])}{hint}")
        raise RaytronError(f"NewsAPI kept failing on page {page} after {self.max_retries} retries; rerun later to resume")


def _json(response: requests.Response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {}


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON Lines file appended to by a job (none if it is missing). A torn last line (a
    crash mid-write: no newline at its end) is skipped with a counted warning; an unreadable line
    before it means a damaged file, an error that names it."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    rows = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as error:  # not JSON, or not UTF-8
            raise RaytronError(f"{path}: line {number} is not JSON ({error}); the file is damaged: remove that line "
                               f"and rerun") from None
    if tail.strip():
        try:  # whole, only its newline missing
            rows.append(json.loads(tail))
        except ValueError:
            log.warning("%s: 1 torn last line (%d bytes, a crash mid-write) skipped; %d rows read", path, len(tail),
                        len(rows))
    return rows


def read_articles(path: Path) -> list[dict]:
    """Stored articles (`read_jsonl`: a torn last line skipped, a damaged file an error)."""
    return read_jsonl(path)


def drop_torn_tail(path: Path) -> None:
    """Before appending: cut a torn last line off `path` (or end a whole one with its newline), so that
    the next article starts a line of its own instead of gluing onto the torn one."""
    if not path.is_file():
        return
    with open(path, "r+b") as file:
        data = file.read()
        if not data or data.endswith(b"\n"):
            return
        tail = data[data.rfind(b"\n") + 1:]
        try:
            json.loads(tail)
            file.write(b"\n")
        except ValueError:
            log.warning("%s: cutting a torn last line (%d bytes) before appending", path, len(tail))
            file.truncate(len(data) - len(tail))
        file.flush()
        os.fsync(file.fileno())


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it: a page's articles, the counts and the
    state file change together or not at all (a no-op off the main thread, where Python delivers no signals, and
    where SIGINT is ignored, as in a job started in the background)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


class CollectInterrupted(KeyboardInterrupt):
    """Ctrl-C during `collect`: what this run had stored by then (whole pages; the state file names the
    next page, so rerunning the same query resumes)."""

    def __init__(self, counts: dict):
        super().__init__(f"interrupted after {counts['new']} articles")
        self.counts = counts


def collect(client: NewsAPIClient, query: NewsQuery, out: Path, max_pages: int = 10) -> dict[str, int | bool]:
    """Fetch pages (resuming at the stored next page), append new URLs to `out`. Returns counts: pages,
    new, duplicates, total (NewsAPI's totalResults, as last seen), more (pages remain for this query:
    `max_pages` stopped it) and remaining (results not fetched yet), limited (NewsAPI's plan limit
    ended it). Ctrl-C raises `CollectInterrupted` with the counts so far."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".state.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    progress = state.get(query.key(), {"next_page": 1, "done": False})
    drop_torn_tail(out)
    seen = {row["url"] for row in read_articles(out)}
    counts = {"pages": 0, "new": 0, "duplicates": 0}
    try:
        while not progress["done"] and counts["pages"] < max_pages:
            page = progress["next_page"]
            body = client.page(query, page)
            articles = (body or {}).get("articles", [])
            fresh = []
            for article in articles:
                if not article.get("url") or article["url"] in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(article["url"])
                fresh.append({**article, "query": asdict(query)})
            with interrupts_held():  # the page is stored whole, with its counts and state, or not at all
                if fresh:
                    with open(out, "a") as sink:
                        sink.write("".join(json.dumps(a) + "\n" for a in fresh))
                        sink.flush()
                        os.fsync(sink.fileno())
                    counts["new"] += len(fresh)
                counts["pages"] += 1
                # the plan limit answers no totalResults: keep the last one seen
                total = body.get("totalResults", 0) if body is not None else progress.get("total", 0)
                progress = {"next_page": page + 1, "done": body is None or not articles or page * query.page_size >= total,
                            "total": total, "limited": body is None}
                state[query.key()] = progress
                partial = state_path.with_name(state_path.name + ".partial")
                partial.write_text(json.dumps(state, indent=1))
                partial.rename(state_path)
            log.info("page %d: %d articles, %d new (%d of %d results fetched so far)%s", page, len(articles),
                     len(fresh), min(page * query.page_size, total), total,
                     "; plan limit reached" if body is None else "")
    except KeyboardInterrupt as stop:  # a page is stored whole or fetched again (its URLs deduplicated)
        raise CollectInterrupted(counts) from stop
    total = progress.get("total", 0)
    return {**counts, "total": total, "more": not progress["done"], "limited": bool(progress.get("limited")),
            "remaining": max(0, total - (progress["next_page"] - 1) * query.page_size) if not progress["done"] else 0}
