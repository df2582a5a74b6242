"""``python -m fdshpo`` runs the ``fdshpo`` command (the component image's entry point)."""

import os
import sys

# ``python -m`` puts the working directory first on sys.path. In a checkout of this repository
# its top-level ``docker/`` folder (the Dockerfiles) would then import as a namespace package
# named ``docker`` and break kfp.local, which probes for the Docker SDK under that name.
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == os.getcwd():
    sys.path.pop(0)

from fdshpo.cli import main  # noqa: E402  (after the sys.path fix above)

sys.exit(main())
