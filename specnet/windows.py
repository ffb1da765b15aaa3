"""Cutting clips into fixed-length windows, the same way in validation and inference."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np

from .checks import check_int

#: A decoded input or window whose loudest sample is below this (-90 dBFS, one step of 16-bit
#: audio) is silence: the front-end would only magnify rounding noise, so a silent input's
#: labels are warned about and a silent window is left out of its clip's mean.
SILENT_PEAK = 10 ** (-90 / 20)

#: An input whose loudest sample is below this (-75 dBFS, about six steps of 16-bit audio) is
#: used, but warned about: dB relative to its peak shows its rounding and dither noise as
#: loudly as a recording's sound, and the model names what that noise resembles.
QUIET_PEAK = 10 ** (-75 / 20)

#: An input whose loudest sample is above this (+6 dBFS) is used, but warned about: samples
#: are floats within ±1, and a peak far beyond that is most often integer samples given as
#: floats, whose level the silence checks (and a model trained on absolute dB) misread.
LOUD_PEAK = 2.0

#: Most samples one chunk of :class:`Windows` copies at a time (4 MB of float32).
CHUNK_SAMPLES = 2**20


def default_hop(window: int) -> int:
    """Samples between windows of ``window`` samples when no hop is given: half a window, as
    validation and ``classify`` both cut clips (the same count for an odd ``window`` too)."""
    return max(1, window // 2)


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of windows covering ``num_samples`` samples.

    One window for a clip no longer than ``window``; otherwise windows every
    ``hop`` (>= 1) samples, the last one ending exactly at the clip's end so no
    sample is left out. Returns the int64 start samples ``(n,)``, ascending.
    """
    check_int("hop", hop, minimum=1)
    if num_samples <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_samples - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < num_samples:
        starts = np.append(starts, num_samples - window)
    return starts


def fit_length(samples: np.ndarray, length: int, *, offset: int | None = None) -> np.ndarray:
    """Crop or zero-pad ``samples`` (n,) to ``length``.

    A longer clip is cut at ``offset`` (default: centred); a shorter clip is
    placed at ``offset`` inside zeros (default: centred); ``offset`` lies in
    ``[0, |n - length|]``.
    """
    n = samples.shape[-1]
    if offset is not None:
        check_int("offset", offset, minimum=0, maximum=abs(n - length))
    if n == length:
        return samples
    if n > length:
        start = (n - length) // 2 if offset is None else offset
        return samples[start : start + length]
    out = np.zeros(length, dtype=samples.dtype)
    start = (length - n) // 2 if offset is None else offset
    out[start : start + n] = samples
    return out


class Windows:
    """The windows of one clip, placed as :func:`window_starts` places them (a clip no longer
    than a window gives one zero-padded, centred window): ``len(self)`` rows of ``length``
    samples, starting at ``starts`` ``(n,)``, over a clip of ``num_samples``.

    Indexing copies only the rows asked for (a slice, a boolean mask or indices give a copy
    ``(k, length)``; an int one row ``(length,)``, a view not to write to), so a short hop, with many windows
    each overlapping the next, costs no memory beyond the clip's own samples.
    """

    def __init__(self, samples: np.ndarray, window: int, hop: int) -> None:
        self.length = window
        self.num_samples = samples.shape[-1]  # the clip's
        self.starts = window_starts(samples.shape[-1], window, hop)
        if samples.shape[-1] <= window:  # one window (most clips): a row of its own, without a strided view's overhead
            self._rows = fit_length(samples, window)[None, :]
        else:
            self._rows = np.lib.stride_tricks.sliding_window_view(samples, window)

    def __len__(self) -> int:
        return len(self.starts)

    def leave_gaps(self) -> bool:
        """Whether the windows skip samples between them (a hop longer than the window)."""
        return leaves_gaps(self.starts, self.length)

    def __getitem__(self, index) -> np.ndarray:
        return self._rows[self.starts[index]]

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, the next rows (k <= rows, length))`` in order, each a copy."""
        for first in range(0, len(self), rows):
            yield first, self[first : first + rows]

    def peaks(self) -> np.ndarray:
        """``(n,)``: each window's loudest absolute sample (at most :data:`CHUNK_SAMPLES` copied at a time)."""
        return np.concatenate([window_peaks(rows) for _, rows in self.chunks(max(1, CHUNK_SAMPLES // self.length))])


def loudest_sample(samples: np.ndarray) -> float:
    """The largest absolute sample of ``samples`` (any shape; 0 for none)."""
    return float(np.abs(samples).max(initial=0.0))


def window_peaks(windows: np.ndarray) -> np.ndarray:
    """``(n,)``: the loudest absolute sample of each of ``windows`` ``(n, samples)`` (0 for none)."""
    return np.abs(windows).max(axis=1, initial=0.0)


def is_silence(peak: float | np.ndarray) -> bool | np.ndarray:
    """Whether a peak (or each of an array of them) is below :data:`SILENT_PEAK` (NaN too)."""
    return ~(np.asarray(peak) >= SILENT_PEAK)


def leaves_gaps(starts: np.ndarray, length: int) -> bool:
    """Whether windows of ``length`` samples starting at ``starts`` (in order) skip samples
    between them, as a hop longer than the window does in a long enough clip."""
    return bool(np.any(np.diff(starts) > length))


def warn_about_level(peak: float, name: str, *, silent: str, quiet: str, gaps: bool = False) -> None:
    """Warn when an input's loudest sample ``peak`` (absolute value) is below :data:`SILENT_PEAK`
    or below :data:`QUIET_PEAK`, where ``silent`` and ``quiet`` say what that means for the
    caller's output, or above :data:`LOUD_PEAK`. With ``gaps``, ``peak`` is the loudest sample
    of windows that skip audio between them, and the warning says it is about them, not the
    whole input."""
    where, why = (" in its windows", "; a hop longer than the window skips the audio between them") if gaps else ("", "")
    if is_silence(peak):
        logging.getLogger("specnet").warning("%s: silent%s (no sample above -90 dBFS%s): %s", name, where, why, silent)
    elif peak < QUIET_PEAK:
        logging.getLogger("specnet").warning("%s: nearly silent%s (loudest sample %.0f dBFS%s): %s",
                                             name, where, 20 * math.log10(peak), why, quiet)
    elif peak > LOUD_PEAK:
        logging.getLogger("specnet").warning("%s: samples reach %.3g%s, beyond full scale (±1): integer samples given as floats? "
                                             "Divide 16-bit ones by 32768; levels and silence are measured against ±1",
                                             name, peak, where)


def silent_windows(windows: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: which of ``windows`` ``(n, samples)`` hold no sample above :data:`SILENT_PEAK`."""
    return is_silence(window_peaks(windows))


def clip_mean(rows: np.ndarray, silent: np.ndarray | None) -> np.ndarray:
    """Mean of per-window ``rows`` ``(n, D)`` over the windows that are not ``silent`` ``(n,)``;
    over all of them when every window is silent (or ``silent`` is None, for images)."""
    if silent is not None and silent.any() and not silent.all():
        rows = rows[~silent]
    return rows[0] if len(rows) == 1 else rows.mean(0)  # NumPy: ~10x less overhead than torch per input
