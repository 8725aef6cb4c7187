"""BERT's post-LayerNorm transformer layer as a Megatron-Core layer spec.

BERT (Devlin et al. 2019) normalizes *after* each residual add; Megatron-Core's TransformerLayer
normalizes before each sublayer and adds the un-normalized input back. The two coincide if the
residual branch starts after the input norm: then layer 0's input norm is BERT's embedding
LayerNorm, layer i's input norm is layer i-1's output LayerNorm, the pre-MLP norm is layer i's
attention-output LayerNorm, and the block's final norm is the last output LayerNorm.
(`TransformerConfig.apply_residual_connection_post_layernorm` exists in Megatron-Core 0.16.1,
but its TransformerLayer never reads it, so the behaviour lives in this spec instead.)
"""

from __future__ import annotations

from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_layer import TransformerLayer
from megatron.core.utils import make_viewless_tensor

from raytron.models.attention import Attention, with_core_attention


class PostLayerNormTransformerLayer(TransformerLayer):
    """A TransformerLayer whose residual connections take the normalized input (BERT order)."""

    def forward(self, hidden_states, attention_mask=None, rotary_pos_emb=None, **kwargs):
        normed = self.input_layernorm(hidden_states)
        attention = self.self_attention(
            normed, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb
        )
        with self.bias_dropout_add_exec_handler():
            hidden_states = self.self_attn_bda(self.training, self.config.bias_dropout_fusion)(
                attention, normed, self.hidden_dropout
            )
        normed = self.pre_mlp_layernorm(hidden_states)
        mlp = self.mlp(normed)
        with self.bias_dropout_add_exec_handler():
            output = self.mlp_bda(self.training, self.config.bias_dropout_fusion)(
                mlp, normed, self.hidden_dropout
            )
        output = make_viewless_tensor(inp=output, requires_grad=output.requires_grad, keep_graph=True)
        return output, None


def post_layernorm_bert_layer_spec(attention: Attention = "auto") -> ModuleSpec:
    """Megatron-Core's local BERT layer spec with the post-LN layer module and `attention`'s core attention."""
    return with_core_attention(ModuleSpec(
        module=PostLayerNormTransformerLayer,
        params=bert_layer_local_spec.params,
        submodules=bert_layer_local_spec.submodules,
    ), attention)
