"""Hugging Face model folders: read config + weights (checking the architecture), write them atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from raytron.atomic import replace_dir

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "chat_template.jinja",
    "generation_config.json",
)


def read_hf_folder(folder: str | Path, model_type: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and all weights (*.safetensors shards, or pytorch_model.bin) of an HF folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: config.json is missing")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != model_type:
        raise ValueError(f"{folder}: model_type is {config.get('model_type')!r}, expected {model_type!r}")
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(shard))
    if not weights and (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if not weights:
        raise FileNotFoundError(f"{folder} has no *.safetensors or pytorch_model.bin weights")
    return config, weights


def write_hf_folder(folder: str | Path, config: dict, hf: dict[str, torch.Tensor], tokenizer_from: str | Path) -> Path:
    """Write an HF folder (config, safetensors, tokenizer files) atomically: a temp dir, then rename."""
    with replace_dir(folder) as staging:
        save_file({k: v.contiguous() for k, v in hf.items()}, staging / "model.safetensors", metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_from) / name).is_file():
                shutil.copy2(Path(tokenizer_from) / name, staging / name)
    return Path(folder)
