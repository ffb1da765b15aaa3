"""Tests for specnet/windows.py: window starts, cutting and fitting clips to a length."""

from __future__ import annotations

import numpy as np
import pytest

import specnet.windows as windows_module
from specnet.errors import ParameterError
from specnet.windows import Windows, fit_length, window_starts


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


def test_windows_values_equal_slices():
    samples = np.arange(1030, dtype=np.float32) * 0.5
    windows = Windows(samples, 200, 150)
    assert windows.starts.tolist() == [0, 150, 300, 450, 600, 750, 830] and len(windows) == 7
    rows = windows[:]
    assert rows.shape == (7, 200) and rows.dtype == np.float32
    for i, start in enumerate(windows.starts):
        np.testing.assert_array_equal(rows[i], samples[start : start + 200])
        np.testing.assert_array_equal(windows[i], samples[start : start + 200])
    np.testing.assert_array_equal(windows[np.array([False, True] * 3 + [True])], rows[[1, 3, 5, 6]])
    np.testing.assert_array_equal(windows.peaks(), np.abs(rows).max(axis=1))


def test_windows_short_clip_is_one_centred_padded_window():
    samples = np.arange(1, 7, dtype=np.float32)  # 6 samples
    windows = Windows(samples, 10, 5)
    assert windows.starts.tolist() == [0]
    np.testing.assert_array_equal(windows[:], [[0, 0, 1, 2, 3, 4, 5, 6, 0, 0]])


def test_windows_copy_only_the_rows_asked_for_and_come_in_chunks(monkeypatch):
    monkeypatch.setattr(windows_module, "CHUNK_SAMPLES", 1000)  # peaks() two windows at a time
    samples = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    windows = Windows(samples, 400, 1)  # a one-sample hop: 99,601 windows, 160 MB if copied at once
    assert len(windows) == 99_601
    rows = windows[5:7]
    assert rows.shape == (2, 400) and rows.flags.writeable  # a copy of two rows (the clip's view is read-only)
    chunks = list(windows.chunks(3))
    assert [first for first, _ in chunks[:3]] == [0, 3, 6] and [len(rows) for _, rows in chunks[-2:]] == [3, 1]
    np.testing.assert_array_equal(chunks[10][1], windows[30:33])
    peaks = windows.peaks()
    assert peaks.shape == (99_601,)
    np.testing.assert_array_equal(peaks[[0, 5000, 99_600]], [np.abs(samples[s : s + 400]).max() for s in (0, 5000, 99_600)])


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
    # An offset past the room there is gave a shorter crop, an empty one, or numpy's broadcasting error.
    for length, offset, room in ((3, 3, 2), (3, -1, 2), (7, 3, 2)):
        with pytest.raises(ParameterError, match=rf"offset={offset} must be an integer in \[0, {room}\]"):
            fit_length(samples, length, offset=offset)


def test_window_starts_needs_a_hop_of_one_sample_or_more():
    with pytest.raises(ParameterError, match=r"hop=0 must be an integer >= 1"):  # was a ZeroDivisionError
        window_starts(10, 4, 0)


def test_only_a_hop_past_the_window_leaves_gaps():
    assert not windows_module.leaves_gaps(np.array([0, 100, 200]), 100)  # windows end to end
    assert windows_module.leaves_gaps(np.array([0, 101]), 100)
    assert not windows_module.leaves_gaps(np.array([0]), 100)


def test_nearly_silent_starts_at_minus_75_dbfs(caplog):
    # Silent below -90 dBFS, nearly silent below -75 dBFS, heard above.
    for dbfs, says in ((-95, "silent"), (-78, "nearly silent"), (-72, None)):
        caplog.clear()
        windows_module.warn_about_level(10 ** (dbfs / 20), "x.wav", silent="S", quiet="Q")
        messages = [r.getMessage() for r in caplog.records]
        if says is None:
            assert messages == []
        else:
            assert len(messages) == 1 and messages[0].startswith(f"x.wav: {says} ")


def test_samples_beyond_twice_full_scale_are_warned_about(caplog):
    # +6 dBFS and below: a float file's overs, said nothing of; above: most often integers given as floats.
    for peak, says in ((1.0, False), (2.0, False), (2.01, True), (32767.0, True)):
        caplog.clear()
        windows_module.warn_about_level(peak, "x.wav", silent="S", quiet="Q", gaps=True)
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ([f"x.wav: samples reach {peak:.3g} in its windows, beyond full scale (±1): integer samples "
                             "given as floats? Divide 16-bit ones by 32768; levels and silence are measured against ±1"]
                            if says else [])
