"""Megatron-Core models built from pretrained Hugging Face checkpoints, one folder per family."""
