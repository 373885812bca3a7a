"""``python -m ssd.weights``."""

import sys

from .cli import main

sys.exit(main())
