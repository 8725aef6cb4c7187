"""KubeRay manifests: both overlays render with kustomize and every RayJob fits the KubeRay CRD schema."""

import shutil
import subprocess

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

CRDS = REPO.parent / "shared" / "kuberay-crds"


def crd_schema(kind_file: str, version: str = "v1") -> dict:
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu"])
def test_overlay_renders_valid_rayjob(overlay):
    rendered = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                              capture_output=True, text=True, check=True).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
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


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_gpu_overlay_rayservice_embeds_the_serve_config():
    rendered = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / "gpu")],
                              capture_output=True, text=True, check=True).stdout
    services = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "RayService"]
    assert len(services) == 1
    jsonschema.validate(services[0], crd_schema("ray.io_rayservices.yaml"))
    embedded = yaml.safe_load(services[0]["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((REPO / "serve" / "raytron-gpu.yaml").read_text())  # one source
    assert embedded["applications"][0]["import_path"] == "raytron.serving.app:build"
