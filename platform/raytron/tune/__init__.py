"""Ray Tune hyperparameter search over the Ray Train + Megatron-Core trainer and the topic model (`jobs/tune.py`)."""
