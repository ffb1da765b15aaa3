"""The log-mel front-end: waveforms in, spectrogram "images" out.

Each transform is a thin ``nn.Module`` configured by :class:`FeatureConfig`
(defined in :mod:`specnet.featureconfig`, which needs no torch).
The constructor validates the parameters and builds the window and the mel
filterbank once as buffers, so ``.to(device)`` moves them; ``forward`` takes
``(..., time)`` and returns ``(..., n_mels, frames)`` for any batch shape.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterable

import torch
import torchaudio.functional as AF
from torch import nn

from .errors import ParameterError
from .featureconfig import FeatureConfig

log = logging.getLogger("specnet")


class MelSpectrogram(nn.Module):
    """Mel spectrogram, ``(..., time)`` float -> ``(..., n_mels, frames)``.

    Matches ``librosa.feature.melspectrogram`` (Slaney mel scale and norm)
    when both get the same ``center`` and ``pad_mode``.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FeatureConfig()
        self.register_buffer(
            "window", torch.hann_window(config.window_length, periodic=True), persistent=False
        )
        with warnings.catch_warnings():  # torchaudio's own warning names none of our options: ours below
            warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
            filterbank = AF.melscale_fbanks(
                n_freqs=config.n_fft // 2 + 1,
                f_min=config.f_min,
                f_max=config.max_frequency,
                n_mels=config.n_mels,
                sample_rate=config.sample_rate,
                norm="slaney",
                mel_scale="slaney",
            )  # (n_freqs, n_mels)
        empty = int((filterbank.amax(dim=0) == 0).sum())
        if empty:
            log.warning(
                "n_mels=%d with n_fft=%d: %d mel bands are narrower than one FFT bin and stay empty; "
                "use fewer mel bands or a larger n_fft", config.n_mels, config.n_fft, empty,
            )
        if config.preemphasis:
            filterbank = filterbank * preemphasis_response(config).unsqueeze(1)
        self.register_buffer("filterbank", filterbank.T.contiguous(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        batch_shape = waveform.shape[:-1]
        if waveform.dim() == 0 or waveform.shape[-1] == 0:
            raise ParameterError("cannot compute a spectrogram of 0 samples")
        flat = waveform.reshape(-1, waveform.shape[-1])
        pad_mode = cfg.pad_mode
        if cfg.center and pad_mode in ("reflect", "circular") and flat.shape[-1] <= cfg.n_fft // 2:
            # Reflect and circular padding need more samples than the pad: centre
            # tiny clips in zeros instead, which keeps the frame count num_frames().
            pad_mode = "constant"
        if not cfg.center and flat.shape[-1] < cfg.n_fft:
            raise ParameterError(
                f"a clip of {flat.shape[-1]} samples is shorter than n_fft={cfg.n_fft}; "
                "use center=True or a longer clip"
            )
        # Frame-batching on CPU: the spectra of a whole batch (64 x 5 s: ~100 MB of frames
        # and complex bins) spill out of the caches; chunks of ~2**19 bins stay in them,
        # 2.5-3x faster, and the transient memory stays ~10 MB. Same values either way.
        # Batches under 2**21 bins (32 x 1 s at 8 kHz) gained nothing and stay whole.
        # A row over 2**21 bins (a recording over ~40 s) goes in pieces of its frames on
        # any device: whole, an hour's spectrum would take gigabytes.
        bins = max(1, cfg.num_frames(flat.shape[-1]) * (cfg.n_fft // 2 + 1))
        step = max(1, (1 << 19) // bins)
        if bins > (1 << 21):
            mel = torch.stack([self._mel_in_pieces(row, pad_mode) for row in flat])
        elif flat.device.type == "cpu" and flat.shape[0] * bins > (1 << 21):
            mel = torch.cat([self._mel(part, pad_mode) for part in flat.split(step)])
        else:
            mel = self._mel(flat, pad_mode)
        return mel.reshape(*batch_shape, *mel.shape[-2:])

    def _mel_in_pieces(self, row: torch.Tensor, pad_mode: str) -> torch.Tensor:
        """``(time,)`` -> ``(n_mels, frames)`` as :meth:`_mel` gives it, ~2**19 bins at a time:
        the row is padded once, as ``torch.stft(center=True)`` pads it, and each piece of
        frames is the uncentred STFT of the samples under them."""
        cfg = self.config
        if cfg.center:
            pad = cfg.n_fft // 2
            row = nn.functional.pad(row.float()[None, None], (pad, pad), mode=pad_mode)[0, 0]
        frames = (row.shape[-1] - cfg.n_fft) // cfg.hop_length + 1
        per_piece = max(1, (1 << 19) // (cfg.n_fft // 2 + 1))
        pieces = []
        for first in range(0, frames, per_piece):
            last = min(first + per_piece, frames) - 1
            samples = row[first * cfg.hop_length : last * cfg.hop_length + cfg.n_fft]
            pieces.append(self._mel(samples[None], pad_mode, center=False)[0])
        return torch.cat(pieces, dim=-1)

    def _mel(self, flat: torch.Tensor, pad_mode: str, *, center: bool | None = None) -> torch.Tensor:
        """``(B, time)`` -> ``(B, n_mels, frames)`` mel power (or magnitude); ``center``
        overrides the config's (for samples already padded)."""
        cfg = self.config
        stft = torch.stft(
            flat.float(),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.window_length,
            window=self.window,
            center=cfg.center if center is None else center,
            pad_mode=pad_mode,
            return_complex=True,
        )  # (B, n_freqs, frames) complex
        # re^2 + im^2 on the real and imaginary views: same values as
        # view_as_real(stft).square().sum(-1), but 5-7x faster on CPU (a reduction over a
        # last axis of 2 is slow), and several times faster than abs().square().
        power = stft.real.square() + stft.imag.square()
        if cfg.power == 1.0:
            power = power.sqrt()
        # In float32 under a caller's autocast too: a full-scale tone's bins reach 65,536 with
        # n_fft=1024, past float16's largest number, and its peak-relative dB would be inf - inf.
        kind = flat.device.type
        with torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext():
            return torch.matmul(self.filterbank, power)  # (B, n_mels, frames)


def preemphasis_response(config: FeatureConfig) -> torch.Tensor:
    """``(n_fft // 2 + 1,)`` gain of the pre-emphasis filter at each FFT bin, on
    power (``|1 - a e^{-iw}|^2``) or on magnitude (its square root) as ``config.power`` is."""
    omega = torch.linspace(0, torch.pi, config.n_fft // 2 + 1, dtype=torch.float64)
    a = config.preemphasis
    gain = 1 - 2 * a * torch.cos(omega) + a * a
    return (gain if config.power == 2.0 else gain.sqrt()).float()


def power_to_db(mel: torch.Tensor, *, log_floor: float) -> torch.Tensor:
    """``10 * log10(max(mel, log_floor))``: mel power ``(..., n_mels, frames)`` in absolute dB."""
    return 10.0 * torch.log10(torch.clamp(mel, min=log_floor))


def clamp_to_peak(db: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """As ``config`` asks, make dB ``(..., n_mels, frames)`` relative to each
    clip's loudest cell (``ref_peak``) and clamp it ``top_db`` below that peak."""
    if config.ref_peak or config.top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        if config.top_db is not None:
            db = torch.maximum(db, peak - config.top_db)
        if config.ref_peak:
            db = db - peak
    return db


def mel_to_db(mel: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Mel power ``(..., n_mels, frames)`` to the front-end's dB: :func:`power_to_db`,
    then :func:`clamp_to_peak`."""
    return clamp_to_peak(power_to_db(mel, log_floor=config.log_floor), config)


class LogMelSpectrogram(MelSpectrogram):
    """Log-mel in dB (see :func:`mel_to_db`), ``(..., n_mels, frames)``."""

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return clamp_to_peak(self.absolute_db(waveform), self.config)

    def absolute_db(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel in absolute dB, before :func:`clamp_to_peak`: training augments
        here, so a loudness or EQ change moves the peak and the floor follows it."""
        return power_to_db(super().forward(waveform), log_floor=self.config.log_floor)


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics measured on the training data.

    For spectrograms the statistics are per mel bin, shape ``(1, n_mels, 1)``;
    for images per channel, ``(channels, 1, 1)``. Inputs are ``(B, C, H, W)``.
    The statistics are buffers, so they are saved in the model file.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor], *, min_std: float = 1e-3) -> None:
        """Measure mean and std over ``batches`` of images ``(B, C, H, W)``.

        Sums are kept in float64, so the statistics of a whole dataset can be
        gathered batch by batch without holding it in memory.
        """
        keep = [i + 1 for i, size in enumerate(self.mean.shape) if size > 1]
        total = total_sq = None
        count = 0
        for images in batches:
            dims = [d for d in range(images.dim()) if d not in keep]
            x = images.detach().double()
            part, part_sq = x.sum(dim=dims, keepdim=True)[0], x.square().sum(dim=dims, keepdim=True)[0]
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
            count += x.numel() // max(1, part.numel())
        if total is None or count < 2:
            raise ParameterError("cannot measure normalisation statistics from fewer than 2 values")
        mean = total / count
        var = (total_sq / count - mean.square()).clamp(min=0) * count / (count - 1)
        self.mean.copy_(mean.reshape(self.mean.shape).float())
        self.std.copy_(var.sqrt().reshape(self.std.shape).float().clamp(min=min_std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
