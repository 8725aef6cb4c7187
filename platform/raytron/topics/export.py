"""The run's BERTopic model as a self-contained model folder (safetensors, its encoder beside it),
published to the model store when `run.store` is set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from raytron.config import TopicsConfig
from raytron.registry import publish_run_model
from raytron.store import write_model_folder
from raytron.topics.models import quiet_bertopic


def save_topic_model(cfg: TopicsConfig, model, encoder: Path, documents: int, table: pd.DataFrame,
                     topic_count: str = "") -> dict:
    """`<run>/topic_model/` (atomically): `bertopic/` (safetensors + c-TF-IDF, no pickle), `encoder/`
    (the embeddings' encoder travels with the topics fitted on them) and `raytron.json` (with `topic_count`,
    how the count was chosen); returns the meta."""
    info = model.get_topic_info()

    def fill(staging: Path) -> None:
        quiet_bertopic()  # no "without explicitly defining an embedding model" warning: the encoder is beside it
        model.save(staging / "bertopic", serialization="safetensors", save_ctfidf=True, save_embedding_model=False)
        shutil.copytree(encoder, staging / "encoder")

    meta = {"task": "topics", "encoder": "encoder", "encoder_source": str(encoder), "max_length": cfg.data.max_length,
            "dataset": cfg.data.dataset, "documents": documents, "topics": int((info["Topic"] != -1).sum()),
            "topic_count": topic_count, "comparison": table.to_dict("records") if len(table) else [], "tuned": cfg.tune.applied,
            "config": cfg.model_dump()}
    folder = write_model_folder(cfg.run_dir / "topic_model", fill, meta)
    publish_run_model(cfg, folder, "topics")
    return meta
