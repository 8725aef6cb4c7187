"""User-facing errors and the wrapper that turns them into one clear message and an exit code."""

from __future__ import annotations

import functools
import logging
import sys


class RaytronError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


def exit_on_user_error(main):
    """Run a job's `main`; a user error prints `error: ...` and exits 2 instead of a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (RaytronError, FileNotFoundError) as error:
            logging.getLogger("raytron").debug("user error", exc_info=True)
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
