"""BERT encoders in Megatron-Core: post-LN layer spec, model builder, HF state-dict adapter."""
