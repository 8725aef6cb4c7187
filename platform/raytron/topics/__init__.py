"""Topic modeling: BERTopic on raytron's Megatron-Core embeddings, LDA, and their evaluation."""
