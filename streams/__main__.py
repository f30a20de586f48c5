"""``python -m streams`` / ``tidings``: the Faust command line of a Tidings worker.

    tidings worker                run a worker (ingest and sender agents)
    tidings --help                every command

Settings come from ``TIDINGS_*`` environment variables (see ``streams/settings.py``); the worker
logs at ``TIDINGS_LOG_LEVEL`` unless the command line names a level (``-l``/``--loglevel``).

Exit codes: 0 after a stop, 75 (``EXIT_HELD``, EX_TEMPFAIL) when a dependency failed (the broker,
the disk: restart the worker and every record not acknowledged comes back), 1 for anything else,
a bug. Faust exits 1 after every crash; ``held_exit`` gives crashes caused by a dependency their 75.
With ``TIDINGS_TERMINATION_LOG`` set, a worker that stops itself writes why there (``guard.record_termination``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import ValidationError

from streams.errors import ConfigurationError

# Settings.log_level's names, as Faust's -l spells them.
FAUST_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


def with_log_level(argv: list[str], level: str) -> list[str]:
    """``argv`` with ``-l level`` after ``worker`` when it names no level of its own (Faust's default is WARN)."""
    if argv[1:2] != ["worker"]:
        return argv
    if any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") or (a.startswith("-l") and len(a) > 2)
           for a in argv[2:]):
        return argv
    return [*argv[:2], "-l", FAUST_LEVELS[level], *argv[2:]]


def held_exit(run: Callable[[], object]) -> None:
    """Run the worker's command line; exit 75 instead of 1 when the crash came from a dependency.

    mode's worker re-raises the exception that crashed it after the graceful stop, and its
    ``exiting`` turns that into ``sys.exit(1)``: the crash is the exit's ``__context__``. A Kafka
    error there (the broker went away under Faust's recovery, its assignor, a table's flush) is a
    dependency's failure like the ones the guard holds, and a supervisor (or the fault tests)
    should restart the worker, not report a bug.
    """
    from streams.runtime.guard import EXIT_HELD, INFRASTRUCTURE, error_types, record_termination

    try:
        run()
    except SystemExit as e:
        if e.code in (0, None) or e.__context__ is None:
            raise
        crash = e.__context__
        code = EXIT_HELD if isinstance(crash, INFRASTRUCTURE) else e.code
        record_termination(f"crashed (exit {code}): {error_types(crash)}\n")
        if code != e.code:
            raise SystemExit(code) from crash
        raise


def main() -> None:
    from streams.app import create_app
    from streams.runtime import guard
    from streams.settings import Settings

    try:
        settings = Settings()
        app = create_app(settings)
    except ValidationError as e:
        sys.exit(f"tidings: invalid settings (TIDINGS_* environment variables):\n{e}")
    except ConfigurationError as e:
        sys.exit(f"tidings: {e}")
    sys.argv = with_log_level(sys.argv, settings.log_level)
    guard.termination_log = settings.termination_log
    held_exit(app.main)


if __name__ == "__main__":
    main()
