"""Evaluate a trained sentiment model on the held-out IMDb test split with Ray Data batch inference."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import ray
import ray.data

from raytron.atomic import replace_dir
from raytron.config import SentimentConfig
from raytron.data.imdb import load_splits
from raytron.evaluate.classification import write_report
from raytron.inference.classifier import SentimentPredictor
from raytron.runtime import absolute_paths, connect_ray, use_gpu
from raytron.store import read_meta

log = logging.getLogger("raytron.evaluate")


def evaluate(cfg: SentimentConfig, model_dir: Path | None = None) -> dict:
    """Score the test split, write the report to `<run>/eval/` (atomically) and to W&B."""
    cfg = absolute_paths(cfg)
    model_dir = Path(model_dir or cfg.run_dir / "model").resolve()
    meta = read_meta(model_dir)
    connect_ray()
    gpu = use_gpu(cfg)
    # Tokenize exactly as the model was trained, whatever this config says.
    data_cfg = cfg.data.model_copy(update={"max_length": meta["max_length"], "head_tokens": meta["head_tokens"]})
    test = load_splits(data_cfg, model_dir / "encoder", ("test",))[0]["test"]
    log.info("scoring the test split with %s (GPU=%s)", model_dir, gpu)
    scored = test.map_batches(
        SentimentPredictor,
        fn_constructor_kwargs={"model_dir": str(model_dir)},
        batch_size=256 if gpu else 32,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.num_workers),  # the recipe's workers score too
        num_gpus=1 if gpu else 0,
        num_cpus=0.5,
    )
    frame = scored.drop_columns(["input_ids", "attention_mask"]).to_pandas()
    out_dir = cfg.run_dir / "eval"
    with replace_dir(out_dir) as staging:
        result = write_report(staging, frame, meta["labels"])
    log.info("test accuracy %.4f precision %.4f recall %.4f F1 %.4f on %d rows; report in %s",
             result["accuracy"], result["precision"], result["recall"], result["f1"], result["rows"], out_dir)
    log_to_wandb(cfg, model_dir, out_dir, result, meta["labels"])
    return result


def log_to_wandb(cfg: SentimentConfig, model_dir: Path, out_dir: Path, result: dict, labels: list[str]) -> None:
    """Test metrics, W&B's interactive confusion matrix, the most confident errors, and the evaluation artifact
    (the corpus and the model artifact as its inputs)."""
    import wandb

    from raytron.tracking import finish_run, log_evaluation, start_run

    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "evaluate", cfg.model_dump())
    run.log({f"test/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
    predictions = pd.read_parquet(out_dir / "predictions.parquet", columns=["label", "prediction"])
    run.log({"test/confusion_matrix": wandb.plot.confusion_matrix(
        y_true=predictions["label"].tolist(), preds=predictions["prediction"].tolist(), class_names=labels,
        title="IMDb test confusion matrix")})
    errors = pd.read_json(out_dir / "errors.jsonl", lines=True)
    run.log({"test/errors": wandb.Table(dataframe=errors)})
    log_evaluation(run, cfg, model_dir, out_dir)
    finish_run(run)
