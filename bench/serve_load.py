"""Load test of the Serve app on 127.0.0.1: p50/p99 latency and throughput per endpoint, the classifier batched
vs unbatched (over HTTP with and without the ingress coalescing requests, and by DeploymentHandle from the driver,
without the proxy and the ingress), and Serve's
overhead over calling the model in-process, against Serve's own floor (the same two hops in an app that does
nothing: a FastAPI ingress calling a deployment that answers at once).

    python bench/serve_load.py --sentiment-model runs/sentiment-demo/model --topic-model runs/topics-demo/topic_model
    python bench/serve_load.py --config serve/raytron-gpu.yaml --max-batch 128 --concurrency 128 ...   # on a GPU

`--ingress haproxy` runs the bench's Ray instance with `raytron.serving.ingress.HIGH_THROUGHPUT_ENV` (HAProxy on the
HTTP port, direct ingress, gRPC between deployments; serve/README.md); `proxy` (the default) with Serve's proxy
actor. Both rows of the floor are measured on the same ingress as the app's.

A config that requires a token (`auth: token`, the GPU one) gets a random one for the run, sent with every request.
`--profile DIR` samples the HTTP proxy, the ingress, classifier and Summarizer replicas with py-spy (`pip install
py-spy`; it must be allowed to ptrace them) during the batched deployment's sentiment throughput and one-in-flight
passes and Lead-3's one-in-flight pass (the first pass of each, with `--repeats`), one collapsed-stack file per process
and phase (`<phase>-<process>-<pid>.txt`, threads apart).

`--latency-only` measures only the one-in-flight rows (sentiment and Lead-3 alternating, Serve's floor) and the
in-process call, in one deployment: the overhead and its split (on the H200 about 150 s against 350 s for the whole
bench, start-up included).

Bounded: a fixed number of requests per measurement. Prints a table, each row as its measurement ends (with the
machine's load average before and after: other work on the machine shows in the figures); writes nothing else.
"""

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
REVIEW = "A wonderful, moving film with a clever script, though the second half drags a little."
ARTICLE = ("NASA delayed the launch of its new lunar rocket on Monday after engineers found a hydrogen leak. "
           "The agency said the next attempt could come within two weeks. Officials said the crew was safe.")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['RAYTRON_API_TOKEN']}"}


def load(url: str, body: dict, requests_total: int, concurrency: int) -> dict:
    """Fire `requests_total` POSTs with `concurrency` in flight; latency percentiles and throughput. An asyncio
    client (aiohttp, which Serve itself depends on): 128 blocking clients on threads would cost the client's own
    GIL contention in every figure."""
    return asyncio.run(_load(url, body, requests_total, concurrency))


async def _load(url: str, body: dict, requests_total: int, concurrency: int) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=auth(), connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def one() -> None:
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                await response.read()

        return await _timed(one, requests_total, concurrency)


class LoopThread:
    """An asyncio event loop running on a thread for the bench's lifetime. DeploymentHandles are made and used on
    it: under RAY_SERVE_THROUGHPUT_OPTIMIZED a handle's router runs on the loop that made it, and Serve disables its
    long-poll for controller updates (so a handle made after a redeploy finds no replica) once that loop stops."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def handle_load(loop_thread: LoopThread, deployment: str, method: str, argument, requests_total: int,
                concurrency: int) -> dict:
    """The same load sent to a deployment of the raytron app through a DeploymentHandle from this driver: the
    replica's own throughput and batching, without the HTTP proxy and the ingress, on `loop_thread`'s event loop."""
    from ray import serve

    async def measure() -> dict:
        call = getattr(serve.get_deployment_handle(deployment, app_name="raytron"), method)

        async def one() -> None:
            await call.remote(argument)

        return await _timed(one, requests_total, concurrency)

    return loop_thread.run(measure())


async def _timed(one, requests_total: int, concurrency: int) -> dict:
    """`requests_total` awaits of `one()`, `concurrency` at a time, after one warm-up round (connections open,
    batches formed once)."""
    async def client(count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await one()
            times.append(time.perf_counter() - start)
        return times

    await asyncio.gather(*(one() for _ in range(concurrency)))
    share = [requests_total // concurrency + (i < requests_total % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    latencies = sorted(t for times in await asyncio.gather(*(client(n) for n in share)) for t in times)
    elapsed = time.perf_counter() - start
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "req_per_s": requests_total / elapsed}


PROFILED = ("ProxyActor", "ServeReplica:raytron:Api", "ServeReplica:raytron:SentimentClassifier",
            "ServeReplica:raytron:Summarizer")
"""Ray's process titles (`ray::<title>`) of the processes `--profile` samples."""


@contextlib.contextmanager
def profiled(folder: Path | None, phase: str):
    """py-spy samples every PROFILED process on the machine while the block runs (nothing when `folder` is None;
    run the bench where no other Ray instance serves); a title not found stops the bench, a py-spy that fails is
    printed with its message."""
    if folder is None:
        yield
        return
    import psutil

    folder.mkdir(parents=True, exist_ok=True)
    running = list(psutil.process_iter(["cmdline"]))
    targets = {title: [proc for proc in running if (proc.info["cmdline"] or [""])[:1] == [f"ray::{title}"]]
               for title in PROFILED}
    if missing := [f"ray::{title}" for title, procs in targets.items() if not procs]:
        raise SystemExit(f"--profile: no process titled {missing} is running")
    spies = [(subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--rate", "200", "--threads",
                                "--nonblocking", "--format", "raw",
                                "--output", str(folder / f"{phase}-{title.split(':')[-1]}-{proc.pid}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), proc.pid)
             for title, procs in targets.items() for proc in procs]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for spy, _ in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        failed = []
        for spy, pid in spies:
            try:
                _, stderr = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, stderr = spy.communicate()
            if spy.returncode != 0:
                failed.append(f"pid {pid}: exit {spy.returncode}: {stderr.strip()[-300:]}")
        if failed:  # the figures stand without the profile
            print(f"--profile ({phase}): py-spy failed (it needs ptrace permission: root or CAP_SYS_PTRACE):\n"
                  + "\n".join(failed), flush=True)


def floor_app(concurrency: int, ingress_replicas: int):
    """Serve's floor on this machine: raytron's topology (proxy -> `ingress_replicas` FastAPI ingress replicas, as
    the config's Api -> one handle call -> 1 model replica) with no work at any hop, so its latency and throughput
    are what Serve alone costs."""
    from fastapi import FastAPI
    from pydantic import BaseModel
    from ray import serve

    api = FastAPI()

    class Texts(BaseModel):
        texts: str | list[str]

    @serve.deployment(max_ongoing_requests=2 * concurrency, ray_actor_options={"num_cpus": 0})
    class Answer:
        async def classify(self, texts):
            return [{"label": "positive"} for _ in texts]

    @serve.deployment(num_replicas=ingress_replicas, max_ongoing_requests=512, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Ingress:
        def __init__(self, model):
            self.model = model

        @api.post("/v1/sentiment")
        async def sentiment(self, body: Texts) -> dict:
            texts = [body.texts] if isinstance(body.texts, str) else body.texts  # one text is a list of one
            return {"results": await self.model.classify.remote(texts)}

    return Ingress.bind(Answer.bind())


def p50_ms(call, repeats: int, warm_up: int) -> float:
    """Median wall time of `call()` in ms over `repeats` calls, the first `warm_up` left out."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[warm_up:])


def direct_classifier_ms(model_dir: Path, cuda_graphs: bool, batch: int, threads: int,
                         repeats: int = 30) -> tuple[dict[int, float], float]:
    """p50 ms of encoding + scoring 1 and `batch` reviews in-process (what a replica does per batch, minus Serve), as
    the config runs it (with `cuda_graphs`, from CUDA graphs; on `threads` torch threads, as the replica has them):
    the model's own batching gain, apart from Serve's; and the review's positive probability in-process (what the
    served answer must equal)."""
    import torch

    from raytron.data.imdb import ReviewEncoder
    from raytron.inference.classifier import SentimentPredictor
    from raytron.store import read_meta

    meta = read_meta(model_dir)
    encoder = ReviewEncoder(str(model_dir / "encoder"), meta["max_length"], meta["head_tokens"])
    predictor = SentimentPredictor(model_dir)
    rows = {n: [REVIEW] * n for n in (1, batch)}
    if cuda_graphs:
        predictor.capture_cuda_graphs(encoder.texts(rows[1]), max_rows=batch)
    torch.set_num_threads(threads)
    times = {n: p50_ms(lambda texts=texts: predictor(encoder.texts(texts)), repeats, warm_up=5) for n, texts in rows.items()}
    return times, float(predictor(encoder.texts(rows[1]))["prob_positive"][0])


def lead3_in_process_ms(repeats: int = 200) -> float:
    """p50 ms of Lead-3 on the bench's article in-process (sentence splitting, no model)."""
    from raytron.evaluate.rouge import lead3

    return p50_ms(lambda: lead3(ARTICLE), repeats, warm_up=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentiment-model", default=str(REPO / "runs" / "sentiment-demo" / "model"))
    parser.add_argument("--topic-model", default=str(REPO / "runs" / "topics-demo" / "topic_model"))
    parser.add_argument("--config", default=str(REPO / "serve" / "raytron.yaml"), help="the Serve config to deploy")
    parser.add_argument("--max-batch", type=int, default=32, help="the classifier's batch, measured against 1")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--profile", type=Path, help="a folder for py-spy profiles (sentiment, Lead-3)")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="proxy",
                        help="Serve's HTTP ingress: its proxy actor, or HAProxy in the high-throughput mode")
    parser.add_argument("--batch-wait-s", type=float, help="the classifier's batch_wait_timeout_s (default: the config's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each sentiment throughput pass, and each pass at one in flight (sentiment and "
                             "Lead-3 alternating, then the floor), this many times (odd); each row is the median pass")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the rows at one in flight (sentiment, Lead-3, Serve's floor) and the in-process "
                             "call: the overhead and its split, without the throughput passes")
    args = parser.parse_args()
    if args.repeats < 1 or args.repeats % 2 == 0:
        parser.error(f"--repeats must be odd (1, 3, 5, ...): each row is the median pass, not {args.repeats}")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy on PATH: pip install py-spy")
    from raytron.serving.ingress import HIGH_THROUGHPUT_ENV

    for name in HIGH_THROUGHPUT_ENV:  # before Ray starts (Serve's processes read them then); the shell's own go
        os.environ.pop(name, None)
    if args.ingress == "haproxy":
        os.environ.update(HIGH_THROUGHPUT_ENV)

    import ray
    from ray import serve

    from raytron.registry import publish
    from raytron.serving.app import from_config_file

    store = tempfile.mkdtemp(prefix="raytron-bench-store-")
    publish(args.sentiment_model, store, "sentiment")
    publish(args.topic_model, store, "topics")
    os.environ.setdefault("RAYTRON_API_TOKEN", secrets.token_hex(16))  # the replicas inherit it
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")  # its own instance, never a cluster found here
    load_before = os.getloadavg()

    def measured(name: str, concurrency: int, result: dict) -> dict:
        """One table row, printed as soon as it is measured (a bench cut short still shows its rows); returns `result`."""
        print(f"{name:<72} {concurrency:>9} {result['p50_ms']:>9.1f} {result['p99_ms']:>9.1f} "
              f"{result['req_per_s']:>8.1f}", flush=True)
        return result

    def median_pass(name: str, concurrency: int, runs: list[dict], key: str) -> dict:
        """The row of the median of `runs` (passes of one measurement) by `key`, then each pass's `key` when there
        are several; returns that pass."""
        median = measured(name, concurrency, sorted(runs, key=lambda run: run[key])[len(runs) // 2])
        if len(runs) > 1:
            print(f"  {key} of the {len(runs)} passes (the row is the median): "
                  + ", ".join(f"{run[key]:.1f}" for run in runs), flush=True)
        return median

    print(f"\ningress: {args.ingress}" + (" (HIGH_THROUGHPUT_ENV)" if args.ingress == "haproxy" else " (Serve's proxy actor)"))
    print(f"\n{'endpoint':<72} {'in flight':>9} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8}", flush=True)
    deployments = yaml.safe_load(Path(args.config).read_text())["applications"][0]["deployments"]
    classifier = next(d for d in deployments if d["name"] == "SentimentClassifier")
    api = next((d for d in deployments if d["name"] == "Api"), {})  # not configured: Serve's default, one replica
    ingress_replicas = api.get("num_replicas") or api.get("autoscaling_config", {}).get("min_replicas", 1)
    configured = classifier["user_config"]
    # Ray starts an actor with OMP_NUM_THREADS = its num_cpus, rounded down, at least 1 (Serve's default: 1 CPU)
    replica_threads = max(math.floor(classifier.get("ray_actor_options", {}).get("num_cpus", 1)), 1)
    if args.batch_wait_s is not None:
        configured = {**configured, "batch_wait_timeout_s": args.batch_wait_s}
    print(f"classifier: {configured}; Api: {ingress_replicas} replica(s)")
    handle_loop = LoopThread()
    by_http, by_handle = {}, {}  # req/s of the classifier per max_batch_size
    passes = [(args.max_batch, True), (args.max_batch, False), (1, False)]  # (classifier batch, ingress coalescing)
    throughput = not args.latency_only
    if not throughput:
        passes = passes[:1]
    for batch, coalesce in passes:  # the config's own batch wait, one replica: batching alone compared
        first = (batch, coalesce) == passes[0]
        overrides = {"SentimentClassifier": {"user_config": {**configured, "max_batch_size": batch},
                                             "autoscaling_config": None}}
        if not coalesce:  # every request its own classifier call
            overrides["Api"] = {"user_config": {"coalesce": False}}
        # the bench store has no summarization model (it measures Lead-3 and extractive): allow the
        # pretrained decoder explicitly, as the app requires
        application, _ = from_config_file(args.config, overrides, store=store, summarization_fallback="pretrained")
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(application, name="raytron", route_prefix="/")
        base = f"http://127.0.0.1:{args.port}"
        runs = []
        for i in range(args.repeats if throughput else 0):
            with profiled(args.profile if first and i == 0 else None, f"batch{batch}"):
                runs.append(load(f"{base}/v1/sentiment", {"texts": REVIEW}, args.requests, args.concurrency))
        if first:  # the answer to compare with the model in-process
            served = requests.post(f"{base}/v1/sentiment", json={"texts": REVIEW}, headers=auth(),
                                   timeout=60).json()["results"][0]["positive_probability"]
        if throughput:
            formed = requests.get(f"{base}/v1/models", headers=auth(), timeout=60).json()["sentiment"]["batching"]
            by_http[batch, coalesce] = median_pass(
                f"POST /v1/sentiment (batch {batch}, {'coalesced' if coalesce else 'one call per request'}: largest "
                f"{formed['largest_batch']}, {formed['items'] / formed['requests']:.1f} texts/call)", args.concurrency,
                runs, "req_per_s")["req_per_s"]
        if not coalesce:  # a handle's calls never pass the ingress
            by_handle[batch] = measured(
                f"SentimentClassifier.classify by DeploymentHandle (max_batch_size={batch})", args.concurrency,
                handle_load(handle_loop, "SentimentClassifier", "classify", [REVIEW], args.requests, args.concurrency),
            )["req_per_s"]
        if first:  # the two alternate, so that a machine's drift between passes reaches both
            alone: dict[str, list[dict]] = {"sentiment": [], "lead3": []}
            for i in range(args.repeats):
                with profiled(args.profile if i == 0 else None, "one-in-flight"):
                    alone["sentiment"].append(load(f"{base}/v1/sentiment", {"texts": REVIEW}, args.requests // 4, 1))
                with profiled(args.profile if i == 0 else None, "lead3-one-in-flight"):
                    alone["lead3"].append(load(f"{base}/v1/summarize", {"text": ARTICLE, "technique": "lead-3"},
                                               args.requests // 4, 1))
            one_in_flight = median_pass("POST /v1/sentiment, 1 in flight", 1, alone["sentiment"], "p50_ms")["p50_ms"]
            lead3_http = median_pass("POST /v1/summarize lead-3, 1 in flight", 1, alone["lead3"], "p50_ms")["p50_ms"]
        if first and throughput:
            measured("POST /v1/topics", args.concurrency, load(f"{base}/v1/topics", {"texts": ARTICLE},
                                                              args.requests, args.concurrency))
            measured("POST /v1/summarize lead-3", args.concurrency, load(
                f"{base}/v1/summarize", {"text": ARTICLE, "technique": "lead-3"}, args.requests, args.concurrency))
            extractive = requests.get(f"{base}/v1/models", headers=auth(), timeout=60).json()["summarization"]["extractive"]
            measured(f"POST /v1/summarize extractive ({extractive['scorer'].split(',')[0]})", 8, load(
                f"{base}/v1/summarize", {"text": ARTICLE, "technique": "extractive"}, args.requests // 4, 8))
        serve.delete("raytron")
    serve.run(floor_app(args.concurrency, ingress_replicas), name="floor", route_prefix="/floor")
    floor = f"http://127.0.0.1:{args.port}/floor/v1/sentiment"
    if throughput:
        floor_rate = measured("Serve's floor: POST to an ingress that calls a deployment, no work", args.concurrency,
                              load(floor, {"texts": REVIEW}, args.requests, args.concurrency))["req_per_s"]
    floor_one = median_pass("Serve's floor, 1 in flight", 1, [load(floor, {"texts": REVIEW}, args.requests // 4, 1)
                                                               for _ in range(args.repeats)], "p50_ms")["p50_ms"]
    serve.delete("floor")
    direct, positive = direct_classifier_ms(Path(args.sentiment_model), bool(configured.get("cuda_graphs")), args.max_batch,
                                            replica_threads)
    print(f"\n{os.cpu_count()} CPUs; load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    if throughput:
        unbatched = by_http[1, False]
        print(f"\nclassifier throughput, batched / unbatched: {by_http[args.max_batch, True] / unbatched:.1f}x over "
              f"HTTP with the ingress coalescing, {by_http[args.max_batch, False] / unbatched:.1f}x without; "
              f"{by_handle[args.max_batch] / by_handle[1]:.1f}x by DeploymentHandle (one call per request, no ingress)")
    print(f"the review's positive probability: served {served:.4f}, in-process {positive:.4f}")
    print(f"in-process, {replica_threads} torch thread(s) as the replica: 1 review {direct[1]:.1f} ms, "
          f"{args.max_batch} reviews {direct[args.max_batch]:.1f} ms: "
          f"batching gain {args.max_batch * direct[1] / direct[args.max_batch]:.1f}x in reviews/s (Serve's ceiling)")
    print(f"Serve overhead at 1 in flight: HTTP p50 {one_in_flight:.1f} ms - in-process p50 {direct[1]:.1f} ms "
          f"= {one_in_flight - direct[1]:.1f} ms")
    lead3_ms = lead3_in_process_ms()
    print(f"of which the path every call takes (ingress -> Api -> a model replica), from Lead-3 at 1 in flight: HTTP p50 "
          f"{lead3_http:.1f} ms - in-process {lead3_ms:.2f} ms = {lead3_http - lead3_ms:.1f} ms; the classifier's "
          f"batching and its replica add {one_in_flight - direct[1] - (lead3_http - lead3_ms):.1f} ms")
    print(f"Serve's floor (the same two hops, no work): {floor_one:.1f} ms at 1 in flight"
          + (f", {floor_rate:.1f} req/s at {args.concurrency} in flight" if throughput else "")
          + f"; raytron's path above it at 1 in flight: {lead3_http - lead3_ms - floor_one:.1f} ms (Lead-3), "
          f"{one_in_flight - direct[1] - floor_one:.1f} ms (sentiment)")
    serve.shutdown()


if __name__ == "__main__":
    main()
