"""``python -m inspector``: the same command line as the ``inspector`` script."""

import sys

from inspector.cli import main

sys.exit(main())
