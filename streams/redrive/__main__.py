"""``python -m streams.redrive``: the same as ``tidings-redrive``."""

import sys

from streams.redrive.cli import main

sys.exit(main())
