"""MFU's FLOP count (`raytron.train.flops`) against nanoGPT's `estimate_mfu` for SmolLM2-135M's shape, and the
datasheet peaks by GPU name."""

import pytest
import torch

from raytron.models.llama import model as llama_model
from raytron.runtime import init_megatron
from raytron.train.flops import datasheet_peak_tflops, training_flops

SMOLLM2_135M = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
                "intermediate_size": 1536, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "vocab_size": 49152,
                "tie_word_embeddings": True}


def test_flops_equal_nanogpts_count_when_every_position_is_an_output():
    """nanoGPT: 6 x parameters + 12 x layers x heads x head size x context, per token. SmolLM2's matmul parameters
    counted by hand from its config: per layer QKV 576 x (576 + 2 x 3 x 64), output 576 x 576, gated MLP
    3 x 576 x 1,536; the tied 49,152 x 576 embedding is the output layer (norms are no matmuls)."""
    init_megatron()  # Megatron's config reads the tensor-parallel size
    config = llama_model.transformer_config(SMOLLM2_135M)
    params = 30 * (576 * (576 + 2 * 3 * 64) + 576 * 576 + 3 * 576 * 1536) + 49152 * 576
    assert params == 134_479_872
    rows = torch.tensor([1024, 1024])
    expected = 2 * 1024 * (6 * params + 12 * 30 * 9 * 64 * 1024)
    assert training_flops(config, rows, output_tokens=2 * 1024, vocab=49152).item() == expected
    # real tokens only: a row of 300 costs its own square, and the output layer counts where it runs
    assert training_flops(config, torch.tensor([300]), output_tokens=20, vocab=49152).item() == \
        300 * 6 * (params - 49152 * 576) + 12 * 30 * 9 * 64 * 300**2 + 20 * 6 * 49152 * 576


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                          ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
                                          ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                          ("Tesla T4", None)])
def test_datasheet_peak_by_the_name_cuda_reports(name, tflops):
    assert datasheet_peak_tflops(name) == tflops
