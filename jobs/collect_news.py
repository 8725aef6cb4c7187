"""`python jobs/collect_news.py ...` (and `ray job submit -- python jobs/collect_news.py ...`): runs raytron.jobs.collect_news."""

from raytron.jobs.collect_news import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
