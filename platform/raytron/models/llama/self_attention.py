"""Megatron-Core's SelfAttention with its QKV split and rotary embedding as one op (`raytron.models.kernels.rope`),
swapped into the Llama layer spec's `self_attention.module` by `model.kernels=fused`."""

from __future__ import annotations

from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.identity_op import IdentityOp

from raytron.errors import RaytronError
from raytron.models.kernels.rope import rope_qkv


class FusedRopeSelfAttention(SelfAttention):
    """SelfAttention whose QKV split and RoPE are `rope_qkv`, for a plain batch of sequences. With Megatron's
    inference context (a KV cache: its keys are positioned from the cache's offset) or packed sequences, it is
    SelfAttention's own forward."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        unsupported = {
            "rotary_interleaved": config.rotary_interleaved,
            "multi_latent_attention": config.multi_latent_attention,
            "attention_output_gate": config.attention_output_gate,
            "apply_rope_fusion (Transformer Engine's)": config.apply_rope_fusion,
            "no_rope_freq": bool(config.no_rope_freq),
            "context_parallel_size > 1": config.context_parallel_size > 1,
            "num_query_groups < tensor_model_parallel_size": config.num_query_groups < self.world_size,
            "q/k layernorm": not all(norm is None or isinstance(norm, IdentityOp)
                                     for norm in (self.q_layernorm, self.k_layernorm)),
            "recomputed core attention": self.checkpoint_core_attention,
            "YaRN scaling": hasattr(config, "yarn_rotary_scaling_factor"),
            "activation offloading": self.offload_qkv_linear or self.offload_core_attention or self.offload_attn_proj,
            "a head_dim / 2 that is not a power of two (the Triton kernels' block)":
                self.hidden_size_per_attention_head // 2 & (self.hidden_size_per_attention_head // 2 - 1),
        }
        if named := [name for name, on in unsupported.items() if on]:
            raise RaytronError(f"model.kernels=fused does not support {', '.join(named)}: set model.kernels=megatron")

    def forward(self, hidden_states, attention_mask, key_value_states=None, inference_context=None,
                rotary_pos_emb=None, *args, attention_bias=None, packed_seq_params=None, **kwargs):
        freqs = rotary_pos_emb[0] if isinstance(rotary_pos_emb, tuple) else rotary_pos_emb
        plain = (inference_context is None and kwargs.get("inference_params") is None and packed_seq_params is None
                 and key_value_states is None and not args and freqs is not None
                 and freqs.shape[-1] == self.hidden_size_per_attention_head  # rotary_percent 1
                 and freqs[0].numel() == freqs.shape[-1]  # one angle row per position (no mRoPE)
                 and (not isinstance(rotary_pos_emb, tuple) or rotary_pos_emb[1] is rotary_pos_emb[0]))
        if not plain:
            return super().forward(hidden_states, attention_mask, key_value_states, inference_context,
                                   rotary_pos_emb, *args, attention_bias=attention_bias,
                                   packed_seq_params=packed_seq_params, **kwargs)
        mixed, _ = self.linear_qkv(hidden_states)
        groups = self.num_query_groups_per_partition
        half = freqs.shape[-1] // 2  # Megatron's embedding is the angles twice along d
        query, key, value = rope_qkv(mixed, freqs.reshape(freqs.shape[0], -1)[:, :half], groups,
                                     self.num_attention_heads_per_partition // groups)
        context = self.core_attention(query, key, value, attention_mask, attn_mask_type=self.attn_mask_type,
                                      attention_bias=attention_bias, packed_seq_params=None)
        return self.linear_proj(context)
