"""Llama-architecture decoders in Megatron-Core: GGUF/HF loading, GPTModel builder, HF state-dict adapter."""
