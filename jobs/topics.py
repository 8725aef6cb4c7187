"""`python jobs/topics.py ...` (and `ray job submit -- python jobs/topics.py ...`): runs raytron.jobs.topics."""

from raytron.jobs.topics import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
