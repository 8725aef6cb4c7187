"""Trained-model folders, written atomically (a temporary folder renamed into place).

Sentiment (`<run>/model/`): `encoder/` (an HF BERT folder any transformers user can load),
`head.safetensors`, `raytron.json`. Summarization: `decoder/` (an HF Llama folder) plus `raytron.json`. Topics:
`encoder/` (the SimCSE-tuned HF BERT folder) plus `raytron.json`.
`raytron.json` holds the task, what inference needs (labels, lengths), metrics and provenance.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from raytron.atomic import replace_dir
from raytron.models.bert.state_dict_adapter import mcore_to_hf as bert_to_hf
from raytron.models.hf_folder import write_hf_folder

META = "raytron.json"


def git_commit() -> str | None:
    """The source commit, for provenance (None outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_model_folder(folder: Path, fill: Callable[[Path], None], meta: dict) -> Path:
    """`fill(staging)` writes the files, then `raytron.json`; the folder appears only when complete."""
    with replace_dir(folder) as staging:
        fill(staging)
        (staging / META).write_text(json.dumps({**meta, "commit": git_commit()}, indent=2, default=str))
    return Path(folder)


def write_classifier(folder: Path, hf_config: dict, tokenizer_dir: Path, bert_full: dict, head: dict, meta: dict) -> Path:
    def fill(staging: Path) -> None:
        write_hf_folder(staging / "encoder", hf_config, bert_to_hf(hf_config, bert_full), tokenizer_dir)
        save_file({k: v.float().contiguous() for k, v in head.items()}, staging / "head.safetensors")

    return write_model_folder(folder, fill, meta)


def write_encoder(folder: Path, hf_config: dict, tokenizer_dir: Path, bert_full: dict, meta: dict) -> Path:
    def fill(staging: Path) -> None:
        write_hf_folder(staging / "encoder", hf_config, bert_to_hf(hf_config, bert_full), tokenizer_dir)

    return write_model_folder(folder, fill, meta)


def write_decoder(folder: Path, hf_config: dict, tokenizer_dir: Path, hf_weights: dict, meta: dict) -> Path:
    def fill(staging: Path) -> None:
        write_hf_folder(staging / "decoder", hf_config, hf_weights, tokenizer_dir)

    return write_model_folder(folder, fill, meta)


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a trained raytron model ({META} missing): train one with jobs/finetune.py")
    return json.loads(path.read_text())


def read_head(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "head.safetensors")
