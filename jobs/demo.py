"""`python jobs/demo.py` (what `make demo` runs): runs raytron.jobs.demo, every task on a slice, a tune, the report."""

from raytron.jobs.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
