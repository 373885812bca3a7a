"""``python -m ssd.export``: see :mod:`ssd.export.cli`."""

import sys

from .cli import main

sys.exit(main())
