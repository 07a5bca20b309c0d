import sys

from cmamba.cli import main

sys.exit(main())
