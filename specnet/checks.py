"""Checks of option values, shared by every option class and function.

Python and numpy numbers pass alike (a grid search hands over ``numpy.int64``),
bools never (``True`` is an ``int`` to Python, not a count to a user), and
:func:`python_scalars` turns numpy numbers into Python ones before they reach
a JSON file.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def is_integer(value: object) -> bool:
    """True for a Python or numpy integer, False for a bool or anything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: object) -> bool:
    """True for a finite Python or numpy real number (NaN and infinities fail), False for a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def python_scalars(value: Any) -> Any:
    """``value`` with numpy scalars (also inside dicts, lists and tuples) replaced by Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: python_scalars(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(python_scalars(item) for item in value)
    return value
