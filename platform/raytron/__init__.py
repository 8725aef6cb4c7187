"""raytron: fine-tune and serve Megatron-Core models on Ray."""

import warnings

# Megatron-Core warns at import that Transformer Engine and Apex are absent and it falls back to
# its torch implementations. That is the expected setup on CPU machines and on our GPU machine
# (no TE wheel there): say it once in the docs rather than six times per process.
warnings.filterwarnings("ignore", message=r".*(Transformer Engine and Apex are|Apex is) not installed.*")
