"""The `raytron` command: jobs as on a laptop, `k8s apply|status|logs` against an API server on 127.0.0.1, `submit` to Ray."""

import os
import pkgutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import raytron.jobs
from raytron.k8s.render import rayjob
from tests.conftest import REPO
from tests.kube_api_server import TOKEN, KubeAPIServer
from tests.test_job_submit import head_node  # noqa: F401  (the fixture: `ray start --head` with token auth)

RAYTRON = str(Path(sys.executable).with_name("raytron"))


def cli(*args, env=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([RAYTRON, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_every_job_module_is_a_command():
    """`raytron --help` names each module of raytron.jobs (tune and report included once present), and
    `raytron JOB` is `python jobs/JOB.py`: the same output and exit status."""
    modules = [m.name for m in pkgutil.iter_modules(raytron.jobs.__path__)]
    assert {"finetune", "evaluate", "topics", "summarize", "collect_news"} <= set(modules)
    usage = cli("--help").stdout.replace("\n", " ").replace("- ", "-")
    for module in modules:
        assert module.replace("_", "-") in usage, module
    ours = cli("evaluate", "--config", "configs/topics.yaml")
    theirs = subprocess.run([sys.executable, "jobs/evaluate.py", "--config", "configs/topics.yaml"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr) and ours.returncode == 2
    article = "Rain fell on Paris. The river rose. Boats stayed home. Shops closed early."
    summary = cli("summarize", "--config", "configs/summarization.yaml", "--technique", "lead-3", input=article)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert yaml.safe_load(summary.stdout)["summary"] == "Rain fell on Paris.\nThe river rose.\nBoats stayed home."
    help_text = cli("collect-news", "--help")
    assert help_text.returncode == 0 and "--max-pages" in help_text.stdout


def test_unknown_job_is_a_clear_error():
    done = cli("finetunes", "--config", "configs/sentiment.yaml")
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown job 'finetunes'; the jobs are: collect-news, ")
    assert ", finetune, " in done.stderr and ", evaluate, " in done.stderr


def test_an_unreachable_ray_address_is_a_clear_error_at_once(monkeypatch):
    """RAY_ADDRESS naming a port where no Ray listens: the job stops with one message naming the address and what
    to do (ray.init alone retries the GCS for minutes); ray:// is checked too, the forms Ray resolves itself are not,
    and a head that starts listening within the check's window is found."""
    import threading

    from raytron import runtime
    from raytron.errors import RaytronError
    from raytron.runtime import check_ray_address

    with socket.socket() as sock:  # a port bound but never listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        done = cli("finetune", "--config", "configs/sentiment.yaml", env={"RAY_ADDRESS": address}, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"\nerror: RAY_ADDRESS={address}: no Ray cluster answers at {address}" in f"\n{done.stderr}", done.stderr[-2000:]
        assert "unset RAY_ADDRESS" in done.stderr and "Traceback" not in done.stderr
        monkeypatch.setattr(runtime, "RAY_REACH_TIMEOUT_S", 3)
        with pytest.raises(RaytronError, match="no Ray cluster answers"):
            check_ray_address(f"ray://{address}")
        late = threading.Timer(1.0, sock.listen)  # the "head" comes up a second after the job starts
        late.start()
        check_ray_address(address)  # no error: it asked again until the port answered
        late.join()
    for resolved_by_ray in ("auto", "local", "", "http://127.0.0.1:1"):
        assert check_ray_address(resolved_by_ray) is None


@pytest.fixture
def kube(tmp_path):
    with KubeAPIServer() as server:
        yield server, {"KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig"))}


def test_apply_sends_exactly_the_rendered_objects(kube):
    server, env = kube
    args = ["finetune", "--config", "configs/summarization-gpu.yaml", "--target", "gpu", "train.epochs=1"]
    rendered = yaml.safe_load(cli("k8s", "render", *args).stdout)
    assert rendered == rayjob("finetune", "configs/summarization-gpu.yaml", ["train.epochs=1"], target="gpu")
    done = cli("k8s", "apply", *args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "RayJob/raytron-finetune-summarization applied\n"
    sent = [r for r in server.requests if r["method"] != "GET"]
    assert [(r["method"], r["path"]) for r in sent] == [
        ("PATCH", "/apis/ray.io/v1/namespaces/raytron/rayjobs/raytron-finetune-summarization")]
    assert yaml.safe_load(sent[0]["body"]) == rendered  # the object itself, nothing added or lost
    assert sent[0]["query"] == {"fieldManager": ["raytron"], "force": ["true"]}
    assert all(r["headers"]["authorization"] == f"Bearer {TOKEN}" for r in server.requests)


def test_apply_a_rendered_overlay(kube, tmp_path):
    """`raytron k8s apply -f`: every object of the GPU overlay, in order, core kinds on /api/v1."""
    server, env = kube
    from tests.test_k8s import render_overlay

    objects = render_overlay("gpu")
    manifest = tmp_path / "gpu.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    done = cli("k8s", "apply", "-f", str(manifest), "--namespace", "ml", env=env)
    assert done.returncode == 0, done.stderr
    sent = [r for r in server.requests if r["method"] == "PATCH"]
    assert [yaml.safe_load(r["body"]) for r in sent] == objects
    assert sent[0]["path"].startswith("/api/v1/namespaces/ml/") and "/apis/ray.io/v1/namespaces/ml/rayservices/" in sent[-1]["path"]


def test_apply_errors(tmp_path):
    """No kubeconfig; a cluster without the KubeRay CRDs (nothing is sent); an unknown job; a file that is not YAML."""
    done = cli("k8s", "apply", "finetune", "--config", "configs/sentiment-gpu.yaml",
                   env={"KUBECONFIG": str(tmp_path / "missing"), "KUBERNETES_SERVICE_HOST": ""})
    assert done.returncode == 2 and done.stderr.startswith("error: no usable kubeconfig") and "KUBECONFIG" in done.stderr
    with KubeAPIServer(kuberay=False) as server:
        env = {"KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig"))}
        done = cli("k8s", "apply", "finetune", "--config", "configs/sentiment-gpu.yaml", env=env)
        assert done.returncode == 2 and "no KubeRay CRDs for rayjobs" in done.stderr and "helm install" in done.stderr
        assert [r["method"] for r in server.requests] == ["GET"]
    done = cli("k8s", "render", "tunez", "--config", "configs/sentiment-gpu.yaml")
    assert done.returncode == 2 and done.stderr.startswith("error: unknown job 'tunez'")
    done = cli("k8s", "apply", "-f", "-", input="kind: [RayJob\n")
    assert done.returncode == 2 and done.stderr.startswith("error: - is not YAML")


def test_status_and_logs(kube):
    server, env = kube
    path = "/apis/ray.io/v1/namespaces/raytron/rayjobs/raytron-finetune-sentiment"
    server.objects[path] = {"kind": "RayJob", "metadata": {"name": "raytron-finetune-sentiment"},
                            "status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}}
    done = cli("k8s", "status", "raytron-finetune-sentiment", env=env)
    assert done.returncode == 0 and yaml.safe_load(done.stdout) == {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    missing = cli("k8s", "status", "nope", env=env)
    assert missing.returncode == 2 and 'rayjobs "nope" not found' in missing.stderr
    server.add_pod("raytron", "old", {"job-name": "raytron-finetune-sentiment"}, "first try\n", "2026-11-29T06:00:00Z")
    server.add_pod("raytron", "new", {"job-name": "raytron-finetune-sentiment"}, "epoch 1 val/accuracy 0.8\n",
                   "2026-11-29T07:00:00Z")
    server.add_pod("raytron", "other", {"job-name": "something-else"}, "not this\n", "2026-11-29T08:00:00Z")
    logs = cli("k8s", "logs", "raytron-finetune-sentiment", env=env)
    assert logs.returncode == 0 and logs.stdout == "epoch 1 val/accuracy 0.8\n"
    none = cli("k8s", "logs", "raytron-evaluate-sentiment", env=env)
    assert none.returncode == 2 and "no submitter pod for RayJob raytron-evaluate-sentiment" in none.stderr


@pytest.mark.slow
def test_submit_runs_a_job_on_a_ray_cluster(head_node):  # noqa: F811
    env, _, address = head_node
    command = ["submit", "summarize", "--config", "configs/summarization.yaml", "--address", address,
               "--technique", "lead-3", "--file", "tests/fixtures/article.txt"]
    for _ in range(12):  # the head's job agent comes up a few seconds after `ray start` returns
        done = subprocess.run([RAYTRON, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, *rest = done.stdout.splitlines()
    assert first.startswith("submitted raysubmit_") and first.endswith(
        "python jobs/summarize.py --config configs/summarization.yaml --technique lead-3 --file tests/fixtures/article.txt")
    job_id = first.split()[1].rstrip(":")
    summaries = [yaml.safe_load(line) for line in rest if line.startswith('{"source"')]
    assert summaries == [{"source": "tests/fixtures/article.txt", "technique": "lead-3",
                          "summary": "The storm reached the coast at dawn.\nFerries were cancelled.\nSchools closed."}]
    assert rest[-1] == f"job {job_id} succeeded"
    bad = subprocess.run([RAYTRON, "submit", "finetune", "--config", "configs/sentiment.yaml", "--address", address,
                          "train.lrr=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "train.lrr: unknown key" in bad.stderr  # checked here, before submitting
