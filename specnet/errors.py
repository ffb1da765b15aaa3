"""The one exception hierarchy of specnet.

Every error a user can cause (a bad file, a bad value, a bad model file, a bad
dataset) is a :class:`SpecnetError`. Messages name the file or value that is
wrong and say what would be right; the CLI prints them as one line on stderr.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def counted(n: int, noun: str) -> str:
    """``1 file``, ``2 files``: a count and its noun, for messages."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, or its type's name if it has none (a bare
    ``assert``): how a message quotes an error from another library."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def listed(names: Sequence[str], noun: str, plural: str = "") -> str:
    """``class b``, ``classes a, b``: a noun, made plural for more than one name, and the names."""
    return f"{noun if len(names) == 1 else plural or noun + 's'} {', '.join(names)}"


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


class Given:
    """A value an option was given, as a message names it: ``hop=3 s`` in the Python API's words
    (``str``; a ``quoted`` value as Python writes it, ``device='cuda'``), ``--hop 3 s`` in the
    command line's (:meth:`said`)."""

    def __init__(self, option: str, value: str, *, quoted: bool = False) -> None:
        self.option, self.value, self.quoted = option, value, quoted

    def __str__(self) -> str:
        return f"{self.option}={self.value!r}" if self.quoted else f"{self.option}={self.value}"

    def __repr__(self) -> str:
        return f"Given({self.option!r}, {self.value!r}, quoted={self.quoted})"

    def said(self, flag: Callable[[str], str | None]) -> str:
        """This value under ``flag(option)`` (``"--hop"``), or as ``str`` gives it when that is None."""
        name = flag(self.option)
        return str(self) if name is None else f"{name} {self.value}"


class GivenValueError(ParameterError):
    """A ParameterError about values options were given: ``template`` with a ``%s`` for each of
    ``given`` (:class:`Given`), so that the command line can name its flags (:meth:`said`)."""

    def __init__(self, template: str, *given: Given) -> None:
        self.template, self.given = template, given
        super().__init__(template % given)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its parts (the default would pass the finished message back as a template),
        # with its attributes (notes) as they are.
        return type(self), (self.template, *self.given), self.__dict__

    def said(self, flag: Callable[[str], str | None]) -> str:
        """The message with each given value said by :meth:`Given.said`."""
        return self.template % tuple(value.said(flag) for value in self.given)
