"""Model FLOPs and utilization (MFU) of a training step, counted on real tokens.

Training FLOPs per token = 6 x the parameters that multiply it (forward 2, backward 4: Kaplan et al.
2020, PaLM appendix B) + 12 x layers x attention width x context length (scores and weighted values,
the full square, as nanoGPT's `estimate_mfu` counts them). Embedding lookups are not matmuls.
"""

from __future__ import annotations

import torch

PEAK_BF16_TFLOPS = {"H200 NVL": 835.0, "H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
"""Dense bf16 peak per GPU by the name CUDA reports (NVIDIA's datasheets, without sparsity; the PCIe and NVL
parts run at lower clocks than the SXM ones). The longest key that the name contains wins."""


def layer_matmul_params(config) -> int:
    """Parameters of one transformer layer's matmuls (QKV, output projection, MLP)."""
    h, query = config.hidden_size, config.num_attention_heads * config.kv_channels
    key_value = 2 * config.num_query_groups * config.kv_channels
    mlp = h * config.ffn_hidden_size * (3 if config.gated_linear_unit else 2)
    return h * (query + key_value) + query * h + mlp


def training_flops(config, lengths: torch.Tensor, output_tokens: torch.Tensor | int = 0, vocab: int = 0) -> torch.Tensor:
    """FLOPs of a training step over rows of `lengths` real tokens, plus an output layer of `vocab`
    applied to `output_tokens` positions (float64, on the lengths' device)."""
    lengths = lengths.double()
    per_token = 6.0 * config.num_layers * layer_matmul_params(config)
    attention = 12.0 * config.num_layers * config.num_attention_heads * config.kv_channels
    return per_token * lengths.sum() + attention * (lengths**2).sum() + 6.0 * config.hidden_size * vocab * output_tokens


def peak_flops_per_device(configured_tflops: float | None, device: torch.device) -> float | None:
    """The configured peak, else the datasheet peak of this GPU; None where unknown (CPUs)."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    tflops = datasheet_peak_tflops(torch.cuda.get_device_name(device))
    return None if tflops is None else tflops * 1e12


def datasheet_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU CUDA calls `name`, None when it is not in PEAK_BF16_TFLOPS."""
    matches = [key for key in PEAK_BF16_TFLOPS if key in name]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None
