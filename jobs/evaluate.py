"""`python jobs/evaluate.py ...` (and `ray job submit -- python jobs/evaluate.py ...`): runs raytron.jobs.evaluate."""

from raytron.jobs.evaluate import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
