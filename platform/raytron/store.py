"""Trained-model folders: the HF encoder, the task head and metadata, written atomically.

Layout of `<run>/model/`: `encoder/` (an HF BERT folder any transformers user can load),
`head.safetensors`, `raytron.json` (task, labels, features, max_length, metrics, provenance).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from raytron.models.bert.state_dict_adapter import mcore_to_hf, write_hf_folder

META = "raytron.json"


def git_commit() -> str | None:
    """The source commit, for provenance (None outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_classifier(folder: Path, hf_config: dict, tokenizer_dir: Path, bert_full: dict, head: dict, meta: dict) -> Path:
    """Write the folder under a temporary name and rename it into place: never half-written."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_hf_folder(staging / "encoder", hf_config, mcore_to_hf(hf_config, bert_full), tokenizer_dir)
    save_file({k: v.float().contiguous() for k, v in head.items()}, staging / "head.safetensors")
    (staging / META).write_text(json.dumps({**meta, "commit": git_commit()}, indent=2, default=str))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a trained raytron model ({META} missing): train one with jobs/finetune.py")
    return json.loads(path.read_text())


def read_head(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "head.safetensors")
