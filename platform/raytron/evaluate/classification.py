"""Sentiment evaluation: scikit-learn metrics, confusion-matrix PNG, error analysis."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support  # noqa: E402

LENGTH_BUCKETS = [0, 100, 200, 400, 800, np.inf]


def metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Accuracy and binary precision/recall/F1 of the positive class, plus the confusion matrix."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="binary", zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "rows": int(len(labels)),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]).tolist(),
    }


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 3.5), dpi=120)
    values = np.asarray(matrix)
    ax.imshow(values, cmap="Blues")
    for (i, j), count in np.ndenumerate(values):
        ax.text(j, i, f"{count:,}", ha="center", va="center", color="white" if count > values.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("IMDb test confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def error_analysis(frame: pd.DataFrame, labels: list[str], top_k: int = 25) -> tuple[dict, pd.DataFrame]:
    """Accuracy by review length and by VADER's agreement; the `top_k` most confident errors."""
    frame = frame.assign(
        correct=frame["prediction"] == frame["label"],
        confidence=np.where(frame["prediction"] == 1, frame["prob_positive"], 1 - frame["prob_positive"]),
        length_bucket=pd.cut(frame["num_words"], LENGTH_BUCKETS, right=False).astype(str),
        vader_agrees=(frame["vader_compound"] >= 0).astype(int) == frame["label"],
    )
    by_length = frame.groupby("length_bucket", observed=True)["correct"].agg(["mean", "size"])
    summary = {
        "accuracy_by_words": {k: {"accuracy": float(r["mean"]), "rows": int(r["size"])} for k, r in by_length.iterrows()},
        "vader_alone_accuracy": float(frame["vader_agrees"].mean()),
        "accuracy_where_vader_disagrees": float(frame.loc[~frame["vader_agrees"], "correct"].mean()),
    }
    errors = frame[~frame["correct"]].sort_values("confidence", ascending=False).head(top_k)
    errors = errors.assign(
        true=[labels[i] for i in errors["label"]], predicted=[labels[i] for i in errors["prediction"]]
    )[["id", "true", "predicted", "confidence", "num_words", "vader_compound", "text"]]
    return summary, errors.reset_index(drop=True)


def write_report(out_dir: Path, frame: pd.DataFrame, labels: list[str]) -> dict:
    """metrics.json, confusion_matrix.png, errors.jsonl + errors.md, predictions.parquet under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = metrics(frame["label"].to_numpy(), frame["prediction"].to_numpy())
    result["analysis"], errors = error_analysis(frame, labels)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    plot_confusion(result["confusion_matrix"], labels, out_dir / "confusion_matrix.png")
    errors.to_json(out_dir / "errors.jsonl", orient="records", lines=True)
    lines = ["# Most confident errors", ""]
    for row in errors.itertuples():
        lines += [f"## {row.id}: true {row.true}, predicted {row.predicted} ({row.confidence:.3f})",
                  f"{row.num_words:.0f} words, VADER {row.vader_compound:+.2f}", "", row.text[:1500], ""]
    (out_dir / "errors.md").write_text("\n".join(lines))
    frame.drop(columns=["input_ids", "attention_mask"], errors="ignore").to_parquet(out_dir / "predictions.parquet")
    return result
