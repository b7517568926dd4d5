"""``python -m phagoflow.cli`` runs the command line (as ``python -m phagoflow`` does)."""

import sys

from phagoflow.cli import main

sys.exit(main())
