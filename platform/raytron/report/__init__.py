"""The one-page report of the latest runs of all three tasks (`python jobs/report.py`)."""
