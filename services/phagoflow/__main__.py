"""``python -m phagoflow`` runs the command line."""

import sys

from phagoflow.cli import main

sys.exit(main())
