"""Tests for specnet/checks.py: the option checks every module shares."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from specnet.checks import check_known_names, is_finite_number, is_integer, python_scalars
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

    check_known_names({"width": 2}, Options, "option(s)")
    with pytest.raises(ParameterError, match=r"unknown option\(s\) depth, widht; known: height, width"):
        check_known_names({"widht": 2, "depth": 3}, Options, "option(s)")
