"""``python -m trio_runner`` runs the command line."""

import sys

from trio_runner.cli import main

sys.exit(main())
