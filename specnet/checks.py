"""Checks of option values, shared by the option classes and the functions that take numbers.

Python and numpy numbers pass alike (a grid search hands over ``numpy.int64``),
bools never (``True`` is an ``int`` to Python, not a count to a user),
:func:`check_known_names` names a misspelt option, and :func:`python_scalars`
turns numpy numbers into Python ones before they reach a JSON file.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from .errors import ParameterError


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


def check_known_names(values: dict[str, Any], options: type, what: str) -> None:
    """Raise ParameterError naming the keys of ``values`` that are not fields of the dataclass ``options``."""
    known = {f.name for f in dataclasses.fields(options)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParameterError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(sorted(known))}")


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
