"""``python -m streams`` / ``tidings``: the Faust command line of a Tidings worker.

    tidings worker                run a worker (ingest and sender agents)
    tidings --help                every command

Settings come from ``TIDINGS_*`` environment variables (see ``streams/settings.py``); the worker
logs at ``TIDINGS_LOG_LEVEL`` unless the command line names a level (``-l``/``--loglevel``).
"""

from __future__ import annotations

import sys

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


def main() -> None:
    from streams.app import create_app
    from streams.settings import Settings

    try:
        settings = Settings()
        app = create_app(settings)
    except ValidationError as e:
        sys.exit(f"tidings: invalid settings (TIDINGS_* environment variables):\n{e}")
    except ConfigurationError as e:
        sys.exit(f"tidings: {e}")
    sys.argv = with_log_level(sys.argv, settings.log_level)
    app.main()


if __name__ == "__main__":
    main()
