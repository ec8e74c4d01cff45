"""``python -m corolla`` runs the command line."""

import sys

from corolla.cli import main

sys.exit(main())
