"""The NewsAPI collector against a local server speaking NewsAPI's format: paging, 429, limits, dedup, resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from raytron.data.newsapi import NewsAPIClient, NewsQuery, articles_path, collect, read_articles
from raytron.errors import RaytronError
from tests.conftest import REPO
from tests.newsapi_server import API_KEY, FakeNewsAPI, make_articles


@pytest.fixture
def server():
    fake = FakeNewsAPI(make_articles(25), max_results=100, rate_limit_page=2)
    yield fake
    fake.close()


def client(server, waits=None, key=API_KEY):
    return NewsAPIClient(api_key=key, base_url=server.url, sleep=(waits.append if waits is not None else None))


def test_pages_through_everything_obeys_retry_after_and_dedups(server, tmp_path):
    waits = []
    out = tmp_path / "articles.jsonl"
    counts = collect(client(server, waits), NewsQuery(q="markets", page_size=10), out)
    assert server.pages_served() == [1, 2, 2, 3]  # page 2 was rate limited once, then retried
    assert waits == [1.0]  # the Retry-After header, not a guess
    rows = read_articles(out)
    assert len(rows) == 24 and len({r["url"] for r in rows}) == 24  # 25 served, one URL twice
    assert counts == {"pages": 3, "new": 24, "duplicates": 1, "total": 25, "more": False, "limited": False,
                      "remaining": 0}
    assert server.requests[0][1] == {"q": "markets", "language": "en", "sortBy": "publishedAt", "pageSize": "10",
                                     "page": "1"}


def test_resume_continues_at_the_next_page(server, tmp_path):
    out = tmp_path / "articles.jsonl"
    query = NewsQuery(q="markets", page_size=10)
    first = collect(client(server, []), query, out, max_pages=1)
    assert first["new"] == 9 and first["more"] and first["remaining"] == 15  # story 6 twice on page 1
    second = collect(client(server, []), query, out)
    assert server.pages_served() == [1, 2, 2, 3]  # page 1 was not fetched again
    assert second["new"] == 15 and not second["more"] and len(read_articles(out)) == 24
    assert collect(client(server, []), query, out) == {"pages": 0, "new": 0, "duplicates": 0, "total": 25,
                                                       "more": False, "limited": False, "remaining": 0}  # complete


def test_plan_limit_stops_cleanly(tmp_path):
    fake = FakeNewsAPI(make_articles(60), max_results=20)
    try:
        counts = collect(client(fake, []), NewsQuery(endpoint="top-headlines", country="us", page_size=10),
                         tmp_path / "a.jsonl")
    finally:
        fake.close()
    assert counts["new"] == 19 and fake.pages_served() == [1, 2, 3]  # 20 served, 1 duplicate; page 3: the limit
    assert counts["limited"] and not counts["more"] and counts["total"] == 60
    assert fake.requests[0][0] == "/v2/top-headlines" and fake.requests[0][1]["country"] == "us"


def test_bad_key_is_a_clear_error(server, tmp_path):
    with pytest.raises(RaytronError, match="apiKeyInvalid: Your API key is invalid.*check NEWSAPI_KEY"):
        collect(client(server, [], key="wrong"), NewsQuery(q="x"), tmp_path / "a.jsonl")


def test_torn_last_line_is_skipped_with_a_count_and_damage_is_an_error(tmp_path, caplog):
    out = tmp_path / "a.jsonl"
    out.write_text(json.dumps({"url": "u1"}) + "\n" + '{"url": "u2", "ti')
    assert read_articles(out) == [{"url": "u1"}]
    assert "1 torn last line (17 bytes, a crash mid-write) skipped; 1 rows read" in caplog.text
    out.write_text(json.dumps({"url": "u1"}) + "\n" + '{"url": "u2"}')  # whole, its newline not written yet
    assert read_articles(out) == [{"url": "u1"}, {"url": "u2"}]
    out.write_text(json.dumps({"url": "u1"}) + "\n" + '{"url": "u2", "ti{"url": "u3"}\n')  # torn, then appended to
    with pytest.raises(RaytronError, match="line 2 is not JSON.*damaged"):
        read_articles(out)


def test_newsapi_corpus_with_a_torn_last_line_loads(tmp_path, caplog):
    from raytron.data.news import read_raw

    out = tmp_path / "newsapi" / "articles.jsonl"
    out.parent.mkdir()
    out.write_text("".join(json.dumps(a) + "\n" for a in make_articles(3)) + '{"source": {"id": nu')
    raw = read_raw("newsapi", str(tmp_path))  # was a pandas ValueError
    assert list(raw["title"]) == ["Headline 0", "Headline 1", "Headline 2"]
    assert "1 torn last line" in caplog.text and "3 rows read" in caplog.text


def test_collector_cuts_a_torn_last_line_before_appending(server, tmp_path):
    out = tmp_path / "articles.jsonl"
    out.write_text(json.dumps(make_articles(1)[0]) + "\n" + '{"url": "https://example.com/torn", "ti')
    counts = collect(client(server, []), NewsQuery(q="markets", page_size=10), out)
    lines = out.read_text().splitlines()
    assert [json.loads(line)["url"] for line in lines][:2] == ["https://example.com/story/0", "https://example.com/story/1"]
    assert len(lines) == 24 and counts["new"] == 23  # story 0 was there; the torn fragment is gone, no line glued


def test_query_reaches_the_server_which_filters_like_newsapi(tmp_path):
    articles = make_articles(25)
    for article in articles[::4]:  # stories 0, 4, 8, ..., 24 (published Nov 1, 5, 9, 13, 17, 1, 5)
        article["title"] += " on climate"
    fake = FakeNewsAPI(articles)
    try:
        answer = lambda **params: fake.answer("/v2/everything", params, API_KEY)[1]  # noqa: E731
        assert answer(q="climate")["totalResults"] == 7 and answer(q="markets -climate")["totalResults"] == 18
        assert answer(q='"story 3" OR "story 4"')["totalResults"] == 2 and answer(q="climate NOT weather")["totalResults"] == 0
        assert fake.answer("/v2/everything", {"from": "last week"}, API_KEY)[1]["code"] == "parameterInvalid"
        out = tmp_path / "a.jsonl"
        counts = collect(client(fake, []), NewsQuery(q="climate", from_date="2026-11-05", to_date="2026-11-13",
                                                     page_size=10), out)
    finally:
        fake.close()
    assert fake.requests[-1][1] == {"q": "climate", "from": "2026-11-05", "to": "2026-11-13", "language": "en",
                                    "sortBy": "publishedAt", "pageSize": "10", "page": "1"}
    urls = [row["url"] for row in read_articles(out)]
    assert urls == [f"https://example.com/story/{i}" for i in (4, 8, 12, 24)] and counts["new"] == 4


def test_collect_command(server, tmp_path):
    out = tmp_path / "news.jsonl"
    env = {"NEWSAPI_KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "collect_news.py"), "--q", "markets",
                           "--base-url", server.url, "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "24 new articles" in done.stdout and len(read_articles(out)) == 24
    missing = subprocess.run([sys.executable, str(REPO / "jobs" / "collect_news.py"), "--q", "x"],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert missing.returncode == 2 and "no NewsAPI key: set NEWSAPI_KEY" in missing.stderr


def collector(*args: str, cwd, data_dir=None, **popen):
    """jobs/collect_news.py as a user runs it: its own process, only PATH, the key and (given) the data root;
    SIGINT at its default (a background CI shell may have started us with it ignored)."""
    env = {"NEWSAPI_KEY": API_KEY, "PATH": "/usr/bin:/bin", **({"RAYTRON_DATA_DIR": str(data_dir)} if data_dir else {})}
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "collect_news.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def finish(process, timeout=120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_collector_and_topic_job_agree_where_news_lives(tmp_path, monkeypatch):
    from raytron.data.news import read_raw

    work = tmp_path / "work"  # no data root anywhere: neither $RAYTRON_DATA_DIR nor ../shared/data from here
    work.mkdir()
    fake = FakeNewsAPI(make_articles(250), max_results=1000)
    try:
        code, out, err = finish(collector("--q", "markets", "--base-url", fake.url, "--max-pages", "1", cwd=work))
        assert code == 0, err[-2000:]
        where = work / "data" / "newsapi" / "articles.jsonl"
        assert out.strip() == (f"done: 99 new articles from 1 pages (1 duplicates) in {where}; more pages remain "
                               "(150 of 250 results not fetched yet; raise --max-pages or rerun to continue)")
        code, out, err = finish(collector("--q", "markets", "--base-url", fake.url, cwd=work))
        assert code == 0 and out.strip().endswith("all 250 results of this query fetched"), (out, err[-2000:])
        code, out, _ = finish(collector("--help", cwd=work))
        assert code == 0 and "(default:10)" in "".join(out.split()) and str(where) in "".join(out.split())
    finally:
        fake.close()
    monkeypatch.chdir(work)  # the topic job, run where the collector ran, reads what it wrote
    monkeypatch.delenv("RAYTRON_DATA_DIR")
    assert articles_path() == where and len(read_raw("newsapi", None)) == 249
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RaytronError, match=re.escape(f"no NewsAPI articles at {empty / 'newsapi' / 'articles.jsonl'}: ")):
        read_raw("newsapi", str(empty))
    monkeypatch.chdir(empty)
    with pytest.raises(RaytronError, match=re.escape(f"no NewsAPI articles at {empty / 'data' / 'newsapi' / 'articles.jsonl'}:")):
        read_raw("newsapi", None)


def test_ctrl_c_ends_with_one_line_and_the_rerun_resumes(tmp_path):
    fake = FakeNewsAPI(make_articles(500), max_results=1000, delay_s=1.0)  # 5 pages of 100, a second each
    stored = tmp_path / "newsapi" / "articles.jsonl"
    try:
        running = collector("--q", "markets", "--base-url", fake.url, cwd=tmp_path, data_dir=tmp_path)
        deadline = time.monotonic() + 120
        while not (stored.is_file() and stored.read_text().count("\n") == 99):  # page 1 stored, page 2 awaited
            assert running.poll() is None and time.monotonic() < deadline, finish(running)
            time.sleep(0.05)
        running.send_signal(signal.SIGINT)
        code, out, err = finish(running)
        assert code == 130 and "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == "interrupted after 99 articles; rerun the same command to resume"
        fake.delay_s = 0.0
        code, out, err = finish(collector("--q", "markets", "--base-url", fake.url, cwd=tmp_path, data_dir=tmp_path))
    finally:
        fake.close()
    assert code == 0 and "done: 400 new articles from 4 pages" in out, err[-2000:]
    assert fake.pages_served()[:2] == [1, 2] and fake.pages_served()[-4:] == [2, 3, 4, 5]  # resumed at page 2
    assert len(read_articles(stored)) == 499


def test_ctrl_c_inside_a_page_store_waits_for_the_store_to_end():
    from raytron.data.newsapi import interrupts_held

    # Ctrl-C as in a terminal (a shell that starts the tests in the background gives them SIG_IGN, which the block
    # keeps: tested below)
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stored = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came between the articles and the state file
                time.sleep(0.1)
                stored.append("state")
        assert stored == ["state"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # ignored before, during and after
    finally:
        signal.signal(signal.SIGINT, launched_with)
