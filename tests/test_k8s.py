"""KubeRay manifests: both overlays render with kustomize and every RayJob fits the KubeRay CRD schema."""

import subprocess

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, require_tool

CRDS = REPO.parent / "shared" / "kuberay-crds"


def kubectl() -> str:
    return require_tool("kubectl", "apt-get install kubectl (it runs kustomize)")


def render(overlay: str) -> list[dict]:
    rendered = subprocess.run([kubectl(), "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                              capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def crd_schema(kind_file: str, version: str = "v1") -> dict:
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu"])
def test_overlay_renders_valid_rayjob(overlay):
    docs = render(overlay)
    jobs = [doc for doc in docs if doc["kind"] == "RayJob"]
    assert len(jobs) == 1 and jobs[0]["metadata"]["name"] == f"raytron-sentiment-{overlay}"
    jsonschema.validate(jobs[0], crd_schema("ray.io_rayjobs.yaml"))
    workers = jobs[0]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert ("nvidia.com/gpu" in workers["resources"]["limits"]) == (overlay == "gpu")


def test_schema_rejects_a_wrong_field():
    bad = yaml.safe_load((REPO / "k8s" / "base" / "rayjob-sentiment.yaml").read_text())
    bad["spec"]["shutdownAfterJobFinishes"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, crd_schema("ray.io_rayjobs.yaml"))


def test_gpu_overlay_rayservice_embeds_the_serve_config():
    services = [doc for doc in render("gpu") if doc["kind"] == "RayService"]
    assert len(services) == 1
    jsonschema.validate(services[0], crd_schema("ray.io_rayservices.yaml"))
    embedded_text = services[0]["spec"]["serveConfigV2"]
    assert embedded_text == (REPO / "serve" / "raytron-gpu.yaml").read_text()  # one source, comments included
    embedded = yaml.safe_load(embedded_text)
    assert embedded["applications"][0]["import_path"] == "raytron.serving.app:build"
    assert embedded["applications"][0]["args"].get("auth", "token") == "token"  # fails closed in the cluster


def test_gpu_overlay_requires_the_api_token_secret():
    """Every Ray container of the RayService gets RAYTRON_API_TOKEN from the raytron-api Secret, and the
    reference is not optional: a missing Secret stops the pod instead of starting an API that refuses
    to serve (or, before, served without authentication)."""
    service = next(doc for doc in render("gpu") if doc["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    containers = [c for pod in pods for c in pod["spec"]["containers"]]
    assert len(containers) == 1 + len(cluster["workerGroupSpecs"])
    for container in containers:
        token = [e for e in container.get("env", []) if e["name"] == "RAYTRON_API_TOKEN"]
        assert len(token) == 1, container["name"]
        ref = token[0]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("raytron-api", "token") and ref.get("optional", False) is False
