"""raytron: fine-tune and serve Megatron-Core models on Ray."""
