"""Tests for specnet/checks.py: the option checks every module shares."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from specnet.checks import (
    check_int, check_known_names, check_number, is_finite_number, is_integer, python_fields, python_scalars,
)
from specnet.errors import ParameterError


@pytest.mark.parametrize("value", [3, 0, -2, np.int64(3), np.uint8(7), np.int32(-1)])
def test_integers_pass(value):
    assert is_integer(value) and is_finite_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, np.float32(2), "3", None, [3]])
def test_non_integers_fail(value):
    assert not is_integer(value)


@pytest.mark.parametrize("value", [0.5, -1e300, np.float32(2.5), np.float64(0.0), 7])
def test_finite_numbers_pass(value):
    assert is_finite_number(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -np.inf, np.float32("nan"), False, "1.0", None, 1j, 10**400])
def test_non_finite_or_non_numbers_fail(value):
    assert not is_finite_number(value)


def test_python_scalars_reach_json_inside_containers():
    value = {"a": np.int64(2), "b": [np.float32(0.5), (np.bool_(True), "x")], "c": None, "d": np.array([1, 2])}
    plain = python_scalars(value)
    assert plain == {"a": 2, "b": [0.5, (True, "x")], "c": None, "d": [1, 2]}
    assert (type(plain["a"]), type(plain["b"][0]), type(plain["b"][1][0]), type(plain["d"][0])) == (int, float, bool, int)
    assert json.loads(json.dumps(plain)) == {"a": 2, "b": [0.5, [True, "x"]], "c": None, "d": [1, 2]}


def test_unknown_names_are_listed_with_the_known_ones():
    @dataclasses.dataclass
    class Options:
        width: int = 1
        height: int = 1

    check_known_names({"width": 2}, Options, "option")
    with pytest.raises(ParameterError, match=r"^unknown options depth, widht; known: height, width$"):
        check_known_names({"widht": 2, "depth": 3}, Options, "option")
    with pytest.raises(ParameterError, match=r"^unknown option widht; known: height, width$"):
        check_known_names({"widht": 2}, Options, "option")


def test_check_int_returns_a_python_int_or_names_the_value():
    assert check_int("n", np.int64(3), minimum=1) == 3 and type(check_int("n", np.int64(3), minimum=1)) is int
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(ParameterError, match=rf"^n={bad!r} must be an integer >= 1$"):
            check_int("n", bad, minimum=1)


def test_check_number_bounds():
    check_number("x", 0, minimum=0)
    check_number("x", np.float32(0.25), minimum=0, below=0.5)
    with pytest.raises(ParameterError, match=r"^x=0\.5 must be a finite number in \[0, 0\.5\)$"):
        check_number("x", 0.5, minimum=0, below=0.5)
    for bad in (-1, float("inf"), "1", True):
        with pytest.raises(ParameterError, match=r"must be a finite number >= 0$"):
            check_number("x", bad, minimum=0)


def test_python_fields_reach_frozen_dataclasses():
    @dataclasses.dataclass(frozen=True)
    class Options:
        width: Any = 1
        sizes: Any = ()

    options = Options(width=np.int64(2), sizes=(np.float32(0.5),))
    python_fields(options)
    assert (type(options.width), type(options.sizes[0])) == (int, float)
