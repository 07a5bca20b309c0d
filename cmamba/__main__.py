"""``python -m cmamba``: the same as the ``cmamba`` console script."""

import sys

from cmamba.cli import main

sys.exit(main())
