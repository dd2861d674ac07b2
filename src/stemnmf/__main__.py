"""``python -m stemnmf`` runs the command line."""

import sys

from stemnmf.cli import main

sys.exit(main())
