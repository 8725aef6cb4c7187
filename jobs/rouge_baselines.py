"""`python jobs/rouge_baselines.py ...` (and `ray job submit -- python jobs/rouge_baselines.py ...`): runs raytron.jobs.rouge_baselines."""

from raytron.jobs.rouge_baselines import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
