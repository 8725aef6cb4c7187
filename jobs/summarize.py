"""`python jobs/summarize.py ...` (and `ray job submit -- python jobs/summarize.py ...`): runs raytron.jobs.summarize."""

from raytron.jobs.summarize import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
