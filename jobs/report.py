"""`python jobs/report.py [--runs runs] [--out FILE]`: runs raytron.jobs.report (one HTML page of the latest runs)."""

from raytron.jobs.report import main

if __name__ == "__main__":
    raise SystemExit(main())
