"""The Serve application on the local Ray cluster, with models from a real model store: every
endpoint, composition (topics -> embedder), bad input, the bearer token, and the page in Chromium."""

import shutil
import socket
import time

import pytest
import requests

from raytron.config import load_config
from raytron.registry import publish, resolve, versions
from tests.conftest import REPO

pytestmark = pytest.mark.slow
ARTICLE = ("NASA delayed the launch of its new lunar rocket on Monday after engineers found a hydrogen leak. "
           "The agency said the next attempt could come within two weeks. Officials said the crew was safe. "
           "The rocket is the most powerful the agency has built.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(sentiment_run, tmp_path_factory):
    from raytron.topics.pipeline import run

    root = str(tmp_path_factory.mktemp("store"))
    _, run_dir, _ = sentiment_run
    assert publish(run_dir / "model", root, "sentiment") == "v0001"
    topics = load_config(REPO / "configs" / "topics.yaml", [
        f"run.output_dir={tmp_path_factory.mktemp('topics')}", f"run.store={root}", "data.rows=150",
        "topics.topic_counts=[]", "topics.main_topics=4", "topics.min_cluster_size=5"])
    run(topics)
    return root


def test_store_versions_and_atomicity(store, sentiment_run, tmp_path):
    _, run_dir, _ = sentiment_run
    assert versions(store, "topics") == ["v0001"]
    assert publish(run_dir / "model", store, "sentiment") == "v0002"
    assert resolve(store, "sentiment")[1] == "v0002" and resolve(store, "sentiment", "v0001")[1] == "v0001"
    (tmp_path / "half").mkdir()
    with pytest.raises(Exception, match="not a finished raytron model"):
        publish(tmp_path / "half", store, "sentiment")
    partial = f"{store}/sentiment/.v0003.partial"  # what a crashed publish leaves: never visible
    shutil.copytree(run_dir / "model", partial)
    assert versions(store, "sentiment") == ["v0001", "v0002"]
    with pytest.raises(Exception, match="has no version 'v0009'.*v0001, v0002"):
        resolve(store, "sentiment", "v0009")


@pytest.fixture(scope="module")
def app(ray_cluster, store):
    from ray import serve

    from raytron.serving.app import from_config_file

    application, _ = from_config_file(REPO / "serve" / "raytron.yaml", store=store, max_body_bytes=20_000,
                                      generation={"strategy": "greedy", "max_new_tokens": 16})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(application, name="raytron", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(2)
    yield url
    serve.shutdown()


def test_models_and_health(app, store):
    assert requests.get(f"{app}/healthz").json() == {"status": "ok"}
    models = requests.get(f"{app}/v1/models").json()
    assert models["sentiment"]["version"] == versions(store, "sentiment")[-1] and "val_accuracy" in models["sentiment"]["metrics"]
    assert models["topics"]["version"] == "v0001" and models["topics"]["topics"] >= 2
    assert models["summarization"]["version"] == "pretrained (zero-shot)"  # nothing fine-tuned in this store
    assert "/v1/summarize" in requests.get(f"{app}/openapi.json").json()["paths"]


def test_sentiment_one_and_many(app):
    one = requests.post(f"{app}/v1/sentiment", json={"texts": "A wonderful, moving film."}).json()["results"]
    many = requests.post(f"{app}/v1/sentiment", json={"texts": ["Dreadful.", "A wonderful, moving film.", "Fine."]}).json()
    assert len(one) == 1 and len(many["results"]) == 3
    for result in one + many["results"]:
        assert result["label"] in ("negative", "positive") and 0.5 <= result["probability"] <= 1.0
    assert many["results"][1] == pytest.approx(one[0])  # batching with other texts changes nothing


def test_topics_call_the_embedder(app):
    listed = requests.get(f"{app}/v1/topics").json()["topics"]
    assert listed and all(t["keywords"] for t in listed)
    results = requests.post(f"{app}/v1/topics", json={"texts": [ARTICLE, "The goalie stopped the puck."]}).json()["results"]
    ids = {t["topic"] for t in listed} | {-1}
    assert len(results) == 2 and all(r["topic"] in ids and r["keywords"] and -1 <= r["probability"] <= 1 for r in results)
    assert results[0]["keywords"] == next((t["keywords"] for t in listed if t["topic"] == results[0]["topic"]), [])


def test_summaries_of_every_technique(app):
    lead = requests.post(f"{app}/v1/summarize", json={"text": ARTICLE, "technique": "lead-3"}).json()
    assert lead["summary"].splitlines() == [
        "NASA delayed the launch of its new lunar rocket on Monday after engineers found a hydrogen leak.",
        "The agency said the next attempt could come within two weeks.", "Officials said the crew was safe."]
    extractive = requests.post(f"{app}/v1/summarize", json={"text": ARTICLE, "technique": "extractive"}).json()
    assert len(extractive["summary"].splitlines()) == 3 and all(s in ARTICLE for s in extractive["summary"].splitlines())
    abstractive = requests.post(f"{app}/v1/summarize", json={"text": ARTICLE, "max_tokens": 12}).json()
    assert abstractive["technique"] == "abstractive" and 0 < len(abstractive["summary"].split()) <= 12


@pytest.mark.parametrize("path, body, status, says", [
    ("/v1/summarize", {"text": "   "}, 422, "text"),
    ("/v1/summarize", {"text": "x", "technique": "poetry"}, 422, "technique"),
    ("/v1/summarize", {"text": 42}, 422, "text"),
    ("/v1/summarize", {"text": "x", "max_tokens": 5000}, 422, "max_tokens"),
    ("/v1/sentiment", {"texts": []}, 422, "texts"),
    ("/v1/sentiment", {"text": "typo in the key"}, 422, "text"),
    ("/v1/topics", {"texts": ["ok", ""]}, 422, "texts.1"),
    ("/v1/sentiment", {"texts": "x" * 30_000}, 413, "limit is 20000"),
])
def test_bad_input_gets_a_status_and_a_reason(app, path, body, status, says):
    response = requests.post(f"{app}{path}", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_bearer_token(monkeypatch):
    """The ingress's guard (the same middleware the deployment runs), over ASGI HTTP in-process."""
    from fastapi.testclient import TestClient

    from raytron.serving.app import TOKEN_ENV, create_api

    api = create_api()
    api.get("/v1/ping")(lambda: {"pong": True})
    client = TestClient(api)
    assert client.get("/v1/ping").json() == {"pong": True}  # no token configured: open
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    missing = client.get("/v1/ping")
    assert missing.status_code == 401 and "bearer token" in missing.json()["error"]
    assert client.get("/v1/ping", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/ping", headers={"Authorization": "Bearer s3cret"}).json() == {"pong": True}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make chromium)")
def test_web_page_in_chromium(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(app)
        page.fill("#text", ARTICLE)
        page.select_option("#technique", "lead-3")
        page.click("#summarize")
        page.wait_for_selector("section[data-kind=summary]", timeout=60_000)
        assert "NASA delayed the launch" in page.inner_text("section[data-kind=summary]")
        page.fill("#text", "A wonderful, moving film.\n---\nDreadful acting and a dull plot.")
        page.click("#sentiment")
        page.wait_for_selector("section[data-kind=sentiment]", timeout=60_000)
        text = page.inner_text("section[data-kind=sentiment]")
        assert "1." in text and "2." in text and "probability" in text
        page.click("#topics")
        page.wait_for_selector("section[data-kind=topics]", timeout=60_000)
        assert "topic" in page.inner_text("section[data-kind=topics]") and page.query_selector(".kw")
        page.fill("#text", "   ")
        page.click("#summarize")
        page.wait_for_selector("section.error", timeout=60_000)
        assert "422" in page.inner_text("section.error")
        browser.close()
