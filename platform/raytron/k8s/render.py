"""A KubeRay RayJob for one job and recipe, sized from the recipe's parallel layout (`raytron k8s render`)."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath

from raytron.config import JobConfig, load_config
from raytron.errors import RaytronError

RAY_VERSION = "2.60.0"
"""The Ray of the image (pyproject.toml pins it); KubeRay starts the cluster for this version."""
APP_DIR = "/app"
"""Where the images hold the project (configs/, jobs/, serve/): the jobs' working directory."""
DATA_MOUNT, RUNS_MOUNT = "/mnt/data", "/mnt/runs"
"""The ReadWriteMany claims of k8s/base: the data root (read) and run outputs + model store (read-write)."""
DATA_CLAIM, RUNS_CLAIM = "raytron-data", "raytron-runs"
WANDB_SECRET, S3_SECRET = "raytron-wandb", "raytron-s3"
"""Secrets: the W&B key (`api-key`, optional: without it runs log offline) and, for s3:// storage,
`access-key-id` / `secret-access-key` (required whenever a storage setting is an s3:// URI)."""
GPU_NODE_LABEL = "nvidia.com/gpu.present"
"""Set on GPU nodes by NVIDIA's GPU operator (its feature discovery); cloud GPU node pools carry it too."""
USER_ID = 1000
"""The images' non-root user (docker/Dockerfile.*)."""
CPU_POOL = {"pods": 4, "cpus": 8}
"""Beside GPU workers: CPU pods the autoscaler adds (from 0) when CPU work queues, e.g. Ray Data preprocessing or
the topic job's BERTopic/LDA sweep (a CPU a task), and removes when idle."""


@dataclass(frozen=True)
class Target:
    """What a cluster kind gives each pod."""

    image: str
    memory_gi_per_cpu: int
    gpu: bool
    extra_cpus: int
    """CPUs beyond the Ray Train workers' own, for Ray Data and the topic sweep's tasks on the same pod."""


def image_tag() -> str:
    return version("raytron")


TARGETS = {
    "cpu": Target(image=f"raytron:{image_tag()}-cpu", memory_gi_per_cpu=4, gpu=False, extra_cpus=1),
    "gpu": Target(image=f"raytron:{image_tag()}-gpu", memory_gi_per_cpu=8, gpu=True, extra_cpus=2),
}


def recipe_path(config: str) -> str:
    """The recipe as a path inside the project (the image holds the same tree at /app), or a clear error."""
    path = PurePosixPath(config)
    if path.is_absolute() or ".." in path.parts or not Path(config).is_file():
        raise RaytronError(f"--config {config}: give a recipe inside the project, relative to its root (e.g. "
                           "configs/sentiment.yaml): the cluster runs the copy baked into the image at "
                           f"{APP_DIR}; put a new recipe in configs/ and rebuild the image, or pass changes as overrides")
    return str(path)


def choose_target(cfg: JobConfig, target: str | None, config: str) -> str:
    """The cluster kind: --target, else the recipe's resources.use_gpu; never one the recipe cannot run on."""
    wanted = {True: "gpu", False: "cpu", None: None}[cfg.resources.use_gpu]
    if target is None and wanted is None:
        raise RaytronError(f"{config} leaves resources.use_gpu unset: pass --target gpu or --target cpu "
                           "(or set resources.use_gpu)")
    if target is not None and wanted is not None and target != wanted:
        raise RaytronError(f"{config} sets resources.use_gpu={cfg.resources.use_gpu}, which the {target} target "
                           f"cannot run: use --target {wanted} or override resources.use_gpu")
    return target or wanted


def worker_pods(cfg: JobConfig, gpus_per_pod: int | None) -> tuple[int, int]:
    """GPU pods and GPUs a pod for the recipe's TP x PP x DP workers (default: one tensor-parallel group a
    pod); a tensor-parallel group must share a pod (NVLink)."""
    workers, tp = cfg.resources.num_workers, cfg.parallel.tensor
    gpus_per_pod = gpus_per_pod or tp
    if gpus_per_pod < 1:
        raise RaytronError(f"--gpus-per-pod {gpus_per_pod}: must be at least 1")
    if workers % gpus_per_pod:
        raise RaytronError(f"resources.num_workers={workers} does not fill pods of {gpus_per_pod} GPUs: use "
                           f"--gpus-per-pod dividing {workers}")
    if gpus_per_pod % tp:
        raise RaytronError(f"parallel.tensor={tp} does not fit a worker pod of {gpus_per_pod} GPUs: a tensor-parallel "
                           f"group must share one node; use --gpus-per-pod {tp * math.ceil(gpus_per_pod / tp)} "
                           f"or parallel.tensor dividing {gpus_per_pod}")
    return workers // gpus_per_pod, gpus_per_pod


def storage_overrides(overrides: list[str]) -> list[str]:
    """Run outputs, the model store and tuned recipes on the shared claim, unless the overrides point them
    elsewhere (s3://): a tune RayJob's tuned recipe is then applied by the fine-tune RayJobs after it."""
    given = {item.partition("=")[0] for item in overrides}
    defaults = {"run.output_dir": RUNS_MOUNT, "run.store": f"{RUNS_MOUNT}/model-store", "tune.tuned_dir": f"{RUNS_MOUNT}/tuned"}
    return [f"{key}={value}" for key, value in defaults.items() if key not in given]


def environment(cfg: JobConfig) -> list[dict]:
    """Every Ray container's env: the data root, the W&B key (online when present), s3 credentials when used."""
    env = [{"name": "RAYTRON_DATA_DIR", "value": DATA_MOUNT},
           {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": WANDB_SECRET, "key": "api-key",
                                                                     "optional": True}}}]
    locations = [cfg.run.output_dir, cfg.run.store or "", getattr(cfg.data, "data_dir", None) or ""]
    if any(location.startswith("s3://") for location in locations):
        env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key, "optional": False}}}
                for name, key in (("AWS_ACCESS_KEY_ID", "access-key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-access-key"))]
    return env


def container(name: str, image: str, cpus: int, memory_gi: int, gpus: int, env: list[dict]) -> dict:
    resources = {"cpu": str(cpus), "memory": f"{memory_gi}Gi", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "workingDir": APP_DIR, "env": env,
        "resources": {"requests": resources, "limits": resources},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
                         {"name": "runs", "mountPath": RUNS_MOUNT},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def pod(main: dict, gpu: bool) -> dict:
    """A Ray pod: non-root, the shared claims, a memory-backed /dev/shm (Ray's object store, NCCL)."""
    spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID},
        "containers": [main],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM, "readOnly": True}},
                    {"name": "runs", "persistentVolumeClaim": {"claimName": RUNS_CLAIM}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["nodeSelector"] = {GPU_NODE_LABEL: "true"}
    return {"spec": spec}


def cluster_spec(cfg: JobConfig, target: Target, image: str, gpus_per_pod: int | None) -> dict:
    """Head (schedules nothing: num-cpus 0) + the recipe's worker group (+ the CPU pool beside GPUs), in-tree
    autoscaling on."""
    env = environment(cfg)
    head = container("ray-head", image, 2, 8, 0, env)
    if target.gpu:
        pods, per_pod = worker_pods(cfg, gpus_per_pod)
    else:  # one Ray Train worker a pod; tensor-parallel groups talk over gloo, across pods if need be
        pods, per_pod = cfg.resources.num_workers, 1
    cpus = math.ceil(cfg.resources.cpus_per_worker * per_pod) + target.extra_cpus
    worker = container("ray-worker", image, cpus, cpus * target.memory_gi_per_cpu, per_pod if target.gpu else 0, env)
    groups = [{"groupName": "gpu" if target.gpu else "cpu", "replicas": pods, "minReplicas": 0, "maxReplicas": pods,
               "rayStartParams": {}, "template": pod(worker, target.gpu)}]
    if target.gpu:
        cpu_worker = container("ray-worker", image, CPU_POOL["cpus"], CPU_POOL["cpus"] * 4, 0, env)
        groups.append({"groupName": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": CPU_POOL["pods"],
                       "rayStartParams": {}, "template": pod(cpu_worker, gpu=False)})
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"idleTimeoutSeconds": 120, "upscalingMode": "Default",
                              "securityContext": {"allowPrivilegeEscalation": False}},
        "authOptions": {"mode": "token"},  # Ray 2.60's token auth; KubeRay makes the Secret and the submitter uses it
        "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": pod(head, gpu=False)},
        # replicas start at the recipe's size (Ray Train asks for all its workers at once); idle pods scale in
        "workerGroupSpecs": groups,
    }


def rayjob(job: str, config: str, overrides: list[str], target: str | None = None, image: str | None = None,
           gpus_per_pod: int | None = None) -> dict:
    """The RayJob running `python jobs/<job>.py --config <config> [overrides]` on a cluster sized for the recipe."""
    config = recipe_path(config)
    overrides = [*overrides, *storage_overrides(overrides)]
    cfg = load_config(config, overrides)
    chosen = choose_target(cfg, target, config)
    overrides.append(f"resources.use_gpu={str(chosen == 'gpu').lower()}")
    kind = TARGETS[chosen]
    command = shlex.join(["python", f"jobs/{job}.py", "--config", config, *overrides])
    name = f"raytron-{job.replace('_', '-')}-{cfg.task}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "raytron", "app.kubernetes.io/component": job,
                                              "raytron.dev/task": cfg.task}},
        "spec": {
            "entrypoint": f"cd {APP_DIR} && {command}",  # the same command as on a laptop, from the project root
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "backoffLimit": 1,  # a retry resumes from the last checkpoint on the shared storage
            "rayClusterSpec": cluster_spec(cfg, kind, image or kind.image, gpus_per_pod),
        },
    }


OVERLAY_JOBS = {
    "cpu": [("finetune", "configs/sentiment.yaml"), ("evaluate", "configs/sentiment.yaml"),
            ("finetune", "configs/summarization.yaml"), ("evaluate", "configs/summarization.yaml"),
            ("finetune", "configs/topics.yaml"), ("topics", "configs/topics.yaml"),
            ("tune", "configs/sentiment.yaml"), ("tune", "configs/summarization.yaml"), ("tune", "configs/topics.yaml")],
    "gpu": [("finetune", "configs/sentiment-gpu.yaml"), ("evaluate", "configs/sentiment-gpu.yaml"),
            ("finetune", "configs/summarization-gpu.yaml"), ("evaluate", "configs/summarization-gpu.yaml"),
            ("finetune", "configs/topics-gpu.yaml"), ("topics", "configs/topics-gpu.yaml"),
            ("tune", "configs/sentiment-gpu.yaml"), ("tune", "configs/topics-gpu.yaml")],
}
"""The RayJobs of each overlay (k8s/overlays/<cpu-dev|gpu>/jobs.yaml): the three fine-tunes (the topics one
tunes the encoder), the evaluations, the topic job, the hyperparameter searches of the recipes that have a
`tune:` section; each publishes to the model store the RayService reads."""
SUSPENDED = ("evaluate", "topics", "tune")
"""Created suspended in the overlays: the evaluations and the topic job read a fine-tune's model (resume them
once it succeeded); a search is optional (resume it, then rerun the fine-tune: it applies the tuned recipe)."""


def overlay_jobs(target: str) -> list[dict]:
    jobs = [rayjob(job, config, [], target=target) for job, config in OVERLAY_JOBS[target]]
    for (job, _), manifest in zip(OVERLAY_JOBS[target], jobs, strict=True):
        if job in SUSPENDED:
            manifest["spec"]["suspend"] = True
    return jobs
