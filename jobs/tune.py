"""`python jobs/tune.py ...` (and `ray job submit -- python jobs/tune.py ...`): runs raytron.jobs.tune."""

from raytron.jobs.tune import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
