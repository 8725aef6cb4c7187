"""`python jobs/finetune.py ...` (and `ray job submit -- python jobs/finetune.py ...`): runs raytron.jobs.finetune."""

from raytron.jobs.finetune import main

# the guard: process pools (dist_checkpointing, multiprocessing spawn) re-import this file as a module
if __name__ == "__main__":
    raise SystemExit(main())
