"""`python jobs/preprocess.py ...` (and `ray job submit -- python jobs/preprocess.py ...`): runs raytron.jobs.preprocess."""

from raytron.jobs.preprocess import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
