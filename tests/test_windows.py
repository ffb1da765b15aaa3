"""Tests for specnet/windows.py: window starts, cutting and fitting clips to a length."""

from __future__ import annotations

import numpy as np
import pytest

from specnet.windows import cut_windows, fit_length, window_starts


@pytest.mark.parametrize(
    ("num_samples", "window", "hop", "expected"),
    [
        (100, 100, 50, [0]),
        (40, 100, 50, [0]),
        (200, 100, 50, [0, 50, 100]),
        (230, 100, 50, [0, 50, 100, 130]),  # last window moved back to end at 230
        (101, 100, 100, [0, 1]),
        (1000, 300, 1000, [0, 700]),  # hop longer than the clip still covers its end
    ],
)
def test_window_starts(num_samples, window, hop, expected):
    starts = window_starts(num_samples, window, hop)
    assert starts.dtype == np.int64
    assert starts.tolist() == expected


@pytest.mark.parametrize("num_samples", [251, 999, 1000, 1001, 16000, 16001])
@pytest.mark.parametrize(("window", "hop"), [(100, 50), (160, 160), (250, 70)])
def test_windows_cover_the_clip_and_end_at_its_end(num_samples, window, hop):
    starts = window_starts(num_samples, window, hop)
    assert starts[0] == 0
    assert starts[-1] + window == num_samples
    assert (np.diff(starts) > 0).all() and (np.diff(starts) <= hop).all()
    covered = np.zeros(num_samples, dtype=bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


@pytest.mark.parametrize("hop", [101, 150, 400])
def test_a_hop_longer_than_the_window_leaves_gaps_only_past_twice_the_window(hop):
    # What the inference warning promises: files up to 2 x window are still covered.
    window = 100
    for num_samples in range(1, 700, 7):
        covered = np.zeros(num_samples, dtype=bool)
        for start in window_starts(num_samples, window, hop):
            covered[start : start + window] = True
        assert covered.all() == (num_samples <= 2 * window), num_samples


def test_cut_windows_values_equal_slices():
    samples = np.arange(1030, dtype=np.float32) * 0.5
    windows, starts = cut_windows(samples, 200, 150)
    assert starts.tolist() == [0, 150, 300, 450, 600, 750, 830]
    assert windows.shape == (7, 200) and windows.dtype == np.float32
    for row, start in zip(windows, starts):
        np.testing.assert_array_equal(row, samples[start : start + 200])


def test_cut_windows_short_clip_is_one_centred_padded_window():
    samples = np.arange(1, 7, dtype=np.float32)  # 6 samples
    windows, starts = cut_windows(samples, 10, 5)
    assert starts.tolist() == [0]
    np.testing.assert_array_equal(windows, [[0, 0, 1, 2, 3, 4, 5, 6, 0, 0]])


def test_fit_length_pads_and_crops_centred():
    samples = np.arange(1, 6, dtype=np.int16)  # [1 2 3 4 5]
    np.testing.assert_array_equal(fit_length(samples, 9), [0, 0, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(fit_length(samples, 8), [0, 1, 2, 3, 4, 5, 0, 0])  # odd pad: extra at the end
    np.testing.assert_array_equal(fit_length(samples, 3), [2, 3, 4])
    np.testing.assert_array_equal(fit_length(samples, 2), [2, 3])
    assert fit_length(samples, 9).dtype == np.int16
    assert fit_length(samples, 5) is samples


def test_fit_length_with_offset():
    samples = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(samples, 3, offset=0), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(samples, 3, offset=2), [3, 4, 5])
    np.testing.assert_array_equal(fit_length(samples, 7, offset=0), [1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(fit_length(samples, 7, offset=2), [0, 0, 1, 2, 3, 4, 5])
