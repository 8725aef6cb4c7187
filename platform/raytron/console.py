"""The `raytron` command: every job of raytron.jobs (`raytron finetune ...`), `raytron submit`, `raytron k8s ...`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import yaml

import raytron.jobs
from raytron.errors import RaytronError, exit_on_user_error

TARGETS = ["cpu", "gpu"]


def available_jobs() -> list[str]:
    """The jobs present in raytron.jobs, as commands (collect_news -> collect-news)."""
    return sorted(module.name.replace("_", "-") for module in pkgutil.iter_modules(raytron.jobs.__path__))


def job_module(name: str) -> str:
    """The module name of a job given as a command, or a clear error."""
    if name.replace("_", "-") not in available_jobs():
        raise RaytronError(f"unknown job {name!r}; the jobs are: {', '.join(available_jobs())}")
    return name.replace("-", "_")


def parser() -> argparse.ArgumentParser:
    jobs = ", ".join(available_jobs())
    top = argparse.ArgumentParser(prog="raytron", description=(
        f"Run a job here (raytron JOB --config RECIPE [key=value ...]; jobs: {jobs}), submit one to a Ray "
        "cluster, or render and run them on Kubernetes."))
    commands = top.add_subparsers(dest="command", metavar="{JOB,submit,k8s}", required=True)
    submit = commands.add_parser("submit", help="run a job on a Ray cluster (Ray's Job Submission SDK), following its log",
                                 description="Extra arguments (key=value overrides, job flags) go to the job.")
    submit.add_argument("job", help=f"one of: {jobs}")
    submit.add_argument("--config", required=True, help="recipe, relative to the project root (the working directory sent)")
    submit.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    k8s = commands.add_parser("k8s", help="KubeRay: render a RayJob for a recipe, apply it, its status and log")
    verbs = k8s.add_subparsers(dest="verb", required=True)
    render = verbs.add_parser("render", help="print the RayJob (YAML) that runs JOB on a cluster sized for the recipe")
    render.add_argument("job", nargs="?", help=f"one of: {jobs}")
    render.add_argument("--all", action="store_true", help="every RayJob of --target's overlay (k8s/overlays/*/jobs.yaml)")
    apply = verbs.add_parser("apply", help="send a rendered RayJob (JOB --config R) or a manifest file (-f) to the cluster")
    apply.add_argument("job", nargs="?", help=f"one of: {jobs}")
    apply.add_argument("-f", "--filename", help="a YAML file of objects (e.g. an overlay rendered by kustomize); - for stdin")
    for command in (render, apply):
        command.add_argument("--config", help="recipe inside the project, e.g. configs/sentiment-gpu.yaml")
        command.add_argument("--target", choices=TARGETS, help="pod kind (default: the recipe's resources.use_gpu)")
        command.add_argument("--image", help="image (default: raytron:<version>-<target>, as `make image` tags it)")
        command.add_argument("--gpus-per-pod", type=int, help="GPU workers per pod (default: parallel.tensor)")
    status = verbs.add_parser("status", help="the KubeRay status of a RayJob or RayService")
    status.add_argument("name")
    status.add_argument("--kind", choices=["RayJob", "RayService"], default="RayJob")
    logs = verbs.add_parser("logs", help="the log of a RayJob (its submitter pod)")
    logs.add_argument("name")
    for command in (apply, status, logs):
        command.add_argument("--namespace", help="default: the kubeconfig context's")
        command.add_argument("--context", help="kubeconfig context (default: the current one)")
    return top


def rendered(args, overrides: list[str]) -> list[dict]:
    """The RayJob(s) the arguments ask for."""
    from raytron.k8s.render import overlay_jobs, rayjob

    if getattr(args, "all", False):
        if not args.target or args.job or args.config or overrides:
            raise RaytronError("--all renders an overlay's jobs: give only --target cpu or --target gpu")
        return overlay_jobs(args.target)
    if not args.job or not args.config:
        raise RaytronError("give a job and its recipe, e.g. raytron k8s render finetune --config configs/sentiment.yaml")
    job = job_module(args.job)
    return [rayjob(job, args.config, overrides, target=args.target, image=args.image, gpus_per_pod=args.gpus_per_pod)]


def manifests(filename: str) -> list[dict]:
    """The objects of a YAML file (- for stdin), e.g. `kubectl kustomize` output."""
    text = sys.stdin.read() if filename == "-" else open(filename).read()
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as error:
        raise RaytronError(f"{filename} is not YAML: {error}") from None


def k8s(args, extra: list[str]) -> int:
    from raytron.k8s import cluster

    if args.verb == "render":
        print(yaml.safe_dump_all(rendered(args, extra), sort_keys=False), end="")
        return 0
    if args.verb == "apply":
        if args.filename and (args.job or args.config or extra):
            raise RaytronError("give either -f FILE or JOB --config RECIPE [key=value ...], not both")
        objects = manifests(args.filename) if args.filename else rendered(args, extra)
        for applied in cluster.apply(objects, args.namespace, args.context):
            print(f"{applied} applied")
        return 0
    if extra:
        raise RaytronError(f"unexpected arguments: {' '.join(extra)}")
    if args.verb == "status":
        print(yaml.safe_dump(cluster.status(args.name, args.kind, args.namespace, args.context), sort_keys=False), end="")
        return 0
    print(cluster.logs(args.name, args.namespace, args.context), end="")
    return 0


@exit_on_user_error
def dispatch(argv: list[str]) -> int:
    """`submit` and `k8s`."""
    args, extra = parser().parse_known_args(argv)
    if args.command == "submit":
        from raytron.submit import submit

        return submit(job_module(args.job), args.config, extra, args.address)
    return k8s(args, extra)


@exit_on_user_error
def run_job(name: str, argv: list[str]) -> int:
    """`raytron JOB ...`: the job's own main, as `python jobs/JOB.py ...` runs it."""
    return importlib.import_module(f"raytron.jobs.{job_module(name)}").main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in ("submit", "k8s"):
        return run_job(argv[0], argv[1:])
    return dispatch(argv)
