"""The one exception hierarchy of specnet.

Every error a user can cause (a bad file, a bad value, a bad model file, a bad
dataset) is a :class:`SpecnetError`. Messages name the file or value that is
wrong and say what would be right; the CLI prints them as one line on stderr.
"""

from __future__ import annotations


class SpecnetError(Exception):
    """Base class of every error specnet raises on purpose."""


class ParameterError(SpecnetError, ValueError):
    """A parameter value is out of range or of the wrong kind."""


class AudioError(SpecnetError):
    """An audio file cannot be read or holds unusable samples."""


class ImageError(SpecnetError):
    """An image file cannot be read."""


class ModelFileError(SpecnetError):
    """A model or checkpoint file is missing, malformed or unsafe to load."""


class DataError(SpecnetError):
    """A dataset (class folders, manifest, folds) cannot be used as given."""


class TrainingError(SpecnetError):
    """Training cannot go on: its loss or gradients stopped being finite numbers."""
