"""Checks of option values, shared by the option classes and the functions that take numbers.

Python and numpy numbers pass alike (a grid search hands over ``numpy.int64``),
bools never (``True`` is an ``int`` to Python, not a count to a user),
:func:`check_known_names` names a misspelt option, :func:`python_scalars`
turns numpy numbers into Python ones before they reach a JSON file, and
:func:`as_numpy` takes arrays and tensors alike.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from typing import Any

import numpy as np

from .errors import ParameterError, listed


def is_integer(value: object) -> bool:
    """True for a Python or numpy integer, False for a bool or anything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: object) -> bool:
    """True for a finite Python or numpy real number (NaN and infinities fail), False for a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a Python int beyond the float range
        return False


def check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as a Python int if it is an integer ``>= minimum`` (and ``<= maximum``), else
    raise ParameterError."""
    if not (is_integer(value) and value >= minimum and (maximum is None or value <= maximum)):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ParameterError(f"{name}={value!r} must be an integer {bounds}")
    return int(value)


def check_bool(name: str, value: object, *, none: bool = False) -> None:
    """Raise ParameterError unless ``value`` is True or False (or None, if ``none``)."""
    if not (isinstance(value, bool) or (none and value is None)):
        raise ParameterError(f"{name}={value!r} must be True or False" + (" (or None)" if none else ""))


def check_path(name: str, value: object, *, what: str, none: bool = False) -> None:
    """Raise ParameterError unless ``value`` is a str or os.PathLike (or None, if ``none``):
    ``what`` says what it names ("a folder name")."""
    if not (isinstance(value, (str, os.PathLike)) or (none and value is None)):
        raise ParameterError(f"{name}={value!r} must be {what} (str or os.PathLike)" + (", or None" if none else ""))


def as_flag(name: str, value: object) -> bool:
    """``value`` as a bool: True, False, a numpy bool, or 1 and 0 (as ``--arch-arg batch_norm=0``
    parses, and as model files written that way hold); anything else is a ParameterError."""
    if isinstance(value, (bool, np.bool_)) or (is_integer(value) and value in (0, 1)):
        return bool(value)
    raise ParameterError(f"{name}={value!r} must be True or False")


def check_number(name: str, value: object, *, minimum: float, below: float | None = None) -> None:
    """Raise ParameterError unless ``value`` is a finite number ``>= minimum`` (and ``< below``)."""
    if not (is_finite_number(value) and value >= minimum and (below is None or value < below)):
        bounds = f">= {minimum:g}" if below is None else f"in [{minimum:g}, {below:g})"
        raise ParameterError(f"{name}={value!r} must be a finite number {bounds}")


def python_fields(options: Any) -> None:
    """Turn the numpy numbers in the fields of the dataclass instance ``options`` (frozen or
    not) into Python ones: numpy numbers pass the checks, but must not reach JSON."""
    for f in dataclasses.fields(options):
        object.__setattr__(options, f.name, python_scalars(getattr(options, f.name)))


def check_known_names(values: dict[str, Any], options: type, what: str, *, tables: dict[str, type] | None = None) -> None:
    """Raise ParameterError naming the keys of ``values`` that are not fields of the dataclass
    ``options``, ``what`` they are in the singular (``"feature setting"``). A key that is a field
    of one of the dataclasses ``tables`` names (option -> dataclass) is said to go in that option."""
    known = {f.name for f in dataclasses.fields(options)}
    unknown = sorted(set(values) - known)
    if unknown:
        homes = [f"{name} goes in {table}={{{name!r}: ...}}" for name in unknown for table, kind in (tables or {}).items()
                 if name in {f.name for f in dataclasses.fields(kind)}]
        raise ParameterError(f"unknown {listed(unknown, what)}{' (' + '; '.join(homes) + ')' if homes else ''}; "
                             f"known: {', '.join(sorted(known))}")


def python_scalars(value: Any) -> Any:
    """``value`` with numpy scalars (also inside dicts, lists and tuples) replaced by
    Python ones, and numpy arrays by (nested) lists of them."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {key: python_scalars(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(python_scalars(item) for item in value)
    return value


def as_numpy(values: Any) -> np.ndarray:
    """An array, a tensor (on any device, with or without gradients) or a sequence as a numpy
    array; a tensor of a floating dtype numpy lacks (bfloat16, float8) comes as float32. A
    ragged sequence is a ParameterError."""
    torch = sys.modules.get("torch")  # not imported here: without torch loaded, nothing is a tensor
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        numpy_lacks = values.is_floating_point() and values.dtype not in (torch.float16, torch.float32, torch.float64)
        return (values.float() if numpy_lacks else values).numpy()
    try:
        return np.asarray(values)
    except ValueError as exc:  # a ragged list: rows of different lengths
        raise ParameterError(f"not an array of numbers ({str(exc).split('.')[0]})") from None
