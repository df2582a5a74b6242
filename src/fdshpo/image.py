"""The component image's name: one name and tag, the tag from the package version.

``FDSHPO_IMAGE`` overrides the whole reference (e.g. a private registry mirror).
"""

from __future__ import annotations

import os

from . import __version__

IMAGE_REPOSITORY = "ghcr.io/fdshpo/fdshpo"


def component_image(gpu: bool = True) -> str:
    """``ghcr.io/fdshpo/fdshpo:<version>`` (GPU) or ``...:<version>-cpu``, unless overridden."""
    override = os.environ.get("FDSHPO_IMAGE")
    if override:
        return override
    return f"{IMAGE_REPOSITORY}:{__version__}" + ("" if gpu else "-cpu")
