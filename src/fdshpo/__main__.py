"""``python -m fdshpo`` runs the ``fdshpo`` command (the component image's entry point)."""

import sys

from .cli import main

sys.exit(main())
