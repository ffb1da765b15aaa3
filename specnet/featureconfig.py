"""The settings of the log-mel front-end (:class:`FeatureConfig`) and their limits, without torch,
so that a model file's settings are checked as loading checks them where torch is not imported
(``specnet models`` lists the bundled models at once)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .checks import check_bool, check_int, check_known_names, is_finite_number, is_integer, python_fields
from .errors import ParameterError

PAD_MODES = ("reflect", "constant", "replicate", "circular")

# Upper limits, so that a damaged or crafted model file cannot make the front-end
# allocate gigabytes or run for hours: the window and the filterbank are built
# from these numbers before any audio is seen. Each is far above real use.
MAX_SAMPLE_RATE = 768_000  # Hz: the fastest audio interfaces and ultrasonic (bat) recorders
MAX_N_FFT = 65_536  # samples: 85 ms even at MAX_SAMPLE_RATE, 4 s at 16 kHz
# Not n_fft // 2 + 1: more bands than FFT bins is allowed (the empty ones are
# logged), so the mel limit is a fixed count, 8x the 128 of music front-ends.
MAX_N_MELS = 1024


@dataclass(frozen=True)
class FeatureConfig:
    """Every setting of the log-mel front-end, with the PANNs 16 kHz defaults.

    sample_rate : int in [1, 768000], Hz. Audio is resampled to this rate before features.
    n_fft : int in [1, 65536], samples per FFT.
    win_length : int in (0, n_fft], or None for ``n_fft``. Hann window length.
    hop_length : int in [1, n_fft], samples between frames (160 = 10 ms at 16 kHz).
    n_mels : int in [1, 1024], mel bands (Slaney scale, Slaney area normalisation).
    f_min, f_max : Hz, 0 <= f_min < f_max <= sample_rate / 2; f_max None means
        sample_rate / 2.
    power : 1.0 (magnitude) or 2.0 (power).
    preemphasis : in [0, 1); the first-order high-pass ``y[n] = x[n] - a x[n-1]``
        of speech front-ends (``librosa.effects.preemphasis``), applied as its
        frequency response folded into the mel filterbank, so it costs nothing:
        0.97 lifts 4 kHz by about 27 dB against 100 Hz at 8 kHz (29 dB at 16 kHz), which keeps a quiet
        fricative (the /s/ of "six") above a ``top_db`` floor set by a vowel.
    center : pad so frame t is centred on sample t * hop_length.
    pad_mode : padding used when centring ("reflect", "constant", ...).
    log_floor : > 0, power floor before ``10 * log10``.
    ref_peak : give dB relative to each clip's loudest cell (librosa's
        ``power_to_db(ref=np.max)``), so a clip's level does not matter.
    top_db : > 0 or None; clamp dB to at most this far below the clip's peak,
        which hides differences in the recordings' noise floors.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int | None = None
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float | None = 8000.0
    power: float = 2.0
    preemphasis: float = 0.0
    center: bool = True
    pad_mode: str = "reflect"
    log_floor: float = 1e-10
    ref_peak: bool = False
    top_db: float | None = None

    def __post_init__(self) -> None:
        python_fields(self)
        for name, maximum in (("sample_rate", MAX_SAMPLE_RATE), ("n_fft", MAX_N_FFT), ("n_mels", MAX_N_MELS)):
            check_int(name, getattr(self, name), minimum=1, maximum=maximum)
        check_int("hop_length", self.hop_length, minimum=1)
        if self.hop_length > self.n_fft:
            raise ParameterError(
                f"hop_length={self.hop_length!r} must be an integer in [1, n_fft={self.n_fft}]: "
                "a longer hop skips the audio between frames"
            )
        if self.win_length is not None and not (is_integer(self.win_length) and 0 < self.win_length <= self.n_fft):
            raise ParameterError(
                f"win_length={self.win_length!r} must be an integer in (0, n_fft={self.n_fft}]"
            )
        if not is_finite_number(self.f_min):
            raise ParameterError(f"f_min={self.f_min!r} must be a number of Hz")
        for name in ("f_max", "top_db"):
            value = getattr(self, name)
            if value is not None and not is_finite_number(value):
                raise ParameterError(f"{name}={value!r} must be a number or None")
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max:
            top = "" if self.f_max is not None else f" (half the sample rate of {self.sample_rate} Hz)"
            raise ParameterError(f"f_min={self.f_min} must be >= 0 and below f_max={f_max:g}{top}")
        if f_max > nyquist:
            raise ParameterError(
                f"f_max={f_max} must be <= sample_rate / 2 = {nyquist:g} Hz"
            )
        if not (is_finite_number(self.power) and self.power in (1.0, 2.0)):
            raise ParameterError(f"power={self.power!r} must be 1.0 or 2.0")
        if not (is_finite_number(self.preemphasis) and 0 <= self.preemphasis < 1):
            raise ParameterError(f"preemphasis={self.preemphasis!r} must be a number in [0, 1)")
        for name in ("center", "ref_peak"):
            check_bool(name, getattr(self, name))
        if self.pad_mode not in PAD_MODES:
            raise ParameterError(f"pad_mode={self.pad_mode!r} must be one of {', '.join(PAD_MODES)}")
        if not (is_finite_number(self.log_floor) and self.log_floor > 0):
            raise ParameterError(f"log_floor={self.log_floor!r} must be positive")
        if self.top_db is not None and not self.top_db > 0:
            raise ParameterError(f"top_db={self.top_db!r} must be positive or None")

    @property
    def window_length(self) -> int:
        """The Hann window length in samples (``win_length`` or ``n_fft``)."""
        return self.win_length or self.n_fft

    @property
    def min_clip_samples(self) -> int:
        """The shortest clip worth a spectrogram, in samples: one Hann window (``n_fft`` without
        ``center``, where MelSpectrogram refuses fewer)."""
        return self.window_length if self.center else self.n_fft

    @property
    def max_frequency(self) -> float:
        """The top edge of the mel filterbank in Hz."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    def num_frames(self, num_samples: int) -> int:
        """Frames the front-end makes from ``num_samples`` samples."""
        if self.center:  # n_fft // 2 samples padded at each end: one fewer frame for an odd n_fft
            return (num_samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length + 1
        return max(0, (num_samples - self.n_fft) // self.hop_length + 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FeatureConfig":
        """Build from a dict, refusing names this version does not know."""
        check_known_names(values, cls, "feature setting")
        return cls(**values)
