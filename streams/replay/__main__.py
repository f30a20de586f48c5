import sys

from streams.replay.cli import main

sys.exit(main())
