"""Sentence embeddings of a corpus: a Ray Data pool of Megatron-Core encoders, cached per encoder."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray.data

from raytron.config import TopicsConfig
from raytron.data.news import blocks
from raytron.errors import RaytronError
from raytron.inference.embedder import SentenceEmbedder
from raytron.models.pretrained import resolve_pretrained

log = logging.getLogger("raytron.topics")


def encoder_folders(cfg: TopicsConfig) -> dict[str, Path]:
    """The encoders the sweep compares: the pretrained one, and the run's contrastively tuned one
    (`<run>/model/encoder`, from jobs/finetune.py) when it exists."""
    folders = {"pretrained": resolve_pretrained(cfg.model.pretrained)}
    tuned = cfg.run_dir / "model" / "encoder"
    if (tuned / "config.json").is_file():
        folders["fine-tuned"] = tuned
    else:
        log.warning("no fine-tuned encoder at %s (jobs/finetune.py --config ...): comparing the pretrained one only", tuned)
    return folders


def main_encoder(cfg: TopicsConfig, folders: dict[str, Path]) -> tuple[str, Path]:
    """The name and folder of the run's model's encoder: `topics.encoder` if given, else the
    fine-tuned one, else the pretrained one."""
    folder = Path(cfg.topics.encoder) if cfg.topics.encoder else folders.get("fine-tuned", folders["pretrained"])
    if not (folder / "config.json").is_file():
        raise RaytronError(f"topics.encoder: no encoder at {folder.absolute()} (no config.json there); give a Hugging "
                           "Face BERT folder, e.g. <run>/model/encoder from jobs/finetune.py, or leave it unset")
    return next((name for name, f in folders.items() if f == folder), "given"), folder


def embed(docs: pd.DataFrame, encoder_dir: Path, cfg: TopicsConfig, gpu: bool) -> np.ndarray:
    """Unit-length sentence embeddings of every document, in order, from a Ray Data actor pool of
    `resources.num_workers` encoders (a GPU each, or on CPU the worker's cores as threads).

    Documents go shortest first (batches pad to their longest) in blocks of one batch each (Ray
    Data's progress moves batch by batch, and the pool's actors share the work)."""
    rows = pd.DataFrame({"row": np.arange(len(docs)), "text": docs["text"].to_numpy()})
    rows = rows.iloc[np.argsort(rows["text"].str.len().to_numpy(), kind="stable")]
    # Ray prints "[... E ...] core_worker.cc: Actor with class name: 'MapWorker(MapBatches(SentenceEmbedder))'
    # ... has constructor arguments in the object store and max_restarts > 0" once per pool: Ray Data gives
    # its actor pools max_restarts=-1 and passes each actor its own object-store refs (data context, map
    # transformer), which the operator holds for the pool's lifetime, so a restart would find them. It is
    # C++ log output (no Python logger or warning to filter), and max_restarts=0 would trade the pool's
    # fault tolerance for the silence: left as is.
    embedded = ray.data.from_pandas(blocks(rows, -(-len(rows) // cfg.topics.embed_batch_size))).map_batches(
        SentenceEmbedder, fn_constructor_kwargs={"encoder_dir": str(encoder_dir), "max_length": cfg.data.max_length},
        batch_size=cfg.topics.embed_batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.resources.num_workers),
        num_gpus=1 if gpu else 0, num_cpus=0.5 if gpu else cfg.resources.cpus_per_worker,
    ).select_columns(["row", "embedding"]).to_pandas().sort_values("row")["embedding"]
    return np.stack(embedded.to_list()).astype(np.float32)


def embeddings_key(docs: pd.DataFrame, encoder_dir: Path, max_length: int) -> str:
    """Fingerprint of what embeddings depend on: the documents' ids, the encoder's weights, the token limit."""
    digest = hashlib.sha1(json.dumps([max_length, docs["id"].astype(str).tolist()]).encode())
    for weights in sorted(Path(encoder_dir).glob("*.safetensors")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]


def cached_embed(docs: pd.DataFrame, name: str, encoder_dir: Path, cfg: TopicsConfig, gpu: bool) -> np.ndarray:
    """`embed`, kept in `<run>/embeddings/<name>.npz` with its `embeddings_key`: a rerun (a resumed
    sweep, a refit) with the same documents, weights and token limit reuses them."""
    path = cfg.run_dir / "embeddings" / f"{name}.npz"
    key = embeddings_key(docs, encoder_dir, cfg.data.max_length)
    if path.is_file():
        try:
            with np.load(path) as stored:
                if str(stored["key"]) == key:
                    log.info("%s embeddings reused from %s", name, path)
                    return stored["embeddings"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # unreadable: computed again
            log.warning("%s is unreadable (%s): embedding again", path, error)
    log.info("embedding %d documents with the %s encoder %s (GPU=%s)", len(docs), name, encoder_dir, gpu)
    vectors = embed(docs, encoder_dir, cfg, gpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{name}.partial.npz")
    np.savez(partial, embeddings=vectors, key=key)
    partial.replace(path)
    return vectors
