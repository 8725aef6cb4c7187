"""The jobs: one module per job, each with `main(argv) -> int` (run by jobs/<name>.py and `raytron <name>`)."""
