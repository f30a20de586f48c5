"""``python -m streams`` / ``tidings``: the Faust command line of a Tidings worker.

    tidings worker -l info        run a worker (ingest and sender agents)
    tidings --help                every command

Settings come from ``TIDINGS_*`` environment variables (see ``streams/settings.py``).
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from streams.errors import ConfigurationError


def main() -> None:
    from streams.app import create_app
    from streams.settings import Settings

    try:
        app = create_app(Settings())
    except ValidationError as e:
        sys.exit(f"tidings: invalid settings (TIDINGS_* environment variables):\n{e}")
    except ConfigurationError as e:
        sys.exit(f"tidings: {e}")
    app.main()


if __name__ == "__main__":
    main()
