"""``python -m calibkit.cli``: the ``calibkit`` command."""

import sys

from . import main

sys.exit(main())
