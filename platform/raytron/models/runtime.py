"""TransformerConfig fields every model family here shares: dtype, init device, kernels, parallel sizes."""

from __future__ import annotations

import torch
from megatron.core import parallel_state


def runtime_fields(params_dtype: torch.dtype) -> dict:
    """Fields that depend on the machine and process groups, not on the checkpoint."""
    return dict(
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        use_cpu_initialization=not torch.cuda.is_available(),
        # Fused kernels need CUDA/apex/TE; the unfused paths compute the same function.
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        apply_rope_fusion=False,
        tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
        pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
    )
