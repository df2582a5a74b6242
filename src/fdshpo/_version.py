"""The package version; pyproject.toml reads it from here, the image tag derives from it."""

__version__ = "0.1.0"
