"""Error hierarchy shared by every step.

One root, :class:`RoadLandcoverError`, so callers (the Processing provider, the CLI) can turn every
expected failure into a clean message in one place. Each subclass also inherits the builtin it
resembles, in the style of rasterio's errors, so ``except ValueError`` in user scripts still works.
Messages say what was wrong *and* what to do about it.
"""

from __future__ import annotations


class RoadLandcoverError(Exception):
    """Root of every error that core raises on purpose."""


class ConfigError(RoadLandcoverError, ValueError):
    """A parameter value is invalid (out of range, inconsistent with another, wrong type)."""


class RasterReadError(RoadLandcoverError, OSError):
    """A raster cannot be opened or read, or its content does not fit the request."""


class VectorReadError(RoadLandcoverError, OSError):
    """A vector layer cannot be opened or read."""


class LabelError(RoadLandcoverError, ValueError):
    """Labels are unusable: empty, outside the raster, missing class field, bad class values."""


class OutputError(RoadLandcoverError, OSError):
    """An output cannot be written (folder not writable, exists and overwrite not allowed, disk full)."""


class ModelPackageError(RoadLandcoverError, ValueError):
    """A model package is missing, corrupt, unsafe, or does not fit the data."""


class DependencyError(RoadLandcoverError, ImportError):
    """A Python package that the step needs is missing or too old."""


class CanceledError(RoadLandcoverError):
    """The user canceled the step. Partial outputs have been removed."""
