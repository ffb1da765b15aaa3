"""Training-time augmentation, applied to a whole batch on the training device.

The order in training is: log-mel ``(B, F, T)`` in absolute dB -> :func:`random_eq`
-> :func:`random_noise` -> :func:`random_warp` (speed and pitch) -> :func:`random_time_warp` -> clamp to the peak
(``features.clamp_to_peak``) -> :func:`random_gain` -> standardise -> :func:`spec_augment`
-> :func:`mixup`. Every random draw comes from the ``generator`` passed in
(a CPU ``torch.Generator``), so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_int, check_number, is_finite_number, python_fields
from .errors import ParameterError


TIME_WARP_CENTRE = 0.3
"""Where :func:`random_time_warp` bends time: a point within this fraction of the clip's
length either side of its centre (the middle 60 %)."""


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly to augment; zero turns a step off.

    gain_db : level offset, uniform in [-gain_db, +gain_db] dB per clip, of the
        clamped log-mel (see :func:`random_gain`).
    time_stretch : speed change, factor uniform in [1 - s, 1 + s].
    pitch_shift : mel-axis scaling, factor uniform in [1 - p, 1 + p], about
        the lowest band's lower edge f0 (``f_min`` plus half a band): below
        1 kHz (where the Slaney mel scale is linear) a frequency f moves to
        f0 + r (f - f0), nearly a pitch change by r (0.06 is about one
        semitone) well above f0 and less of one near it; above 1 kHz a larger
        one (a factor of 1.12 moves 2 kHz to about 2.45 kHz). See
        :func:`random_warp`.
    freq_masks, freq_mask_width : SpecAugment masks on the mel axis, each up to
        ``freq_mask_width`` bins.
    time_masks, time_mask_fraction : masks on the time axis, each up to this
        fraction of the frames.
    mixup_alpha : Beta(alpha, alpha) mixing of pairs of clips and their labels.
    noise_snr_db : (low, high) or None; adds a background-noise floor at a
        signal-to-noise ratio uniform in [low, high] dB below each clip's
        loudest mel cell, with a random spectral tilt (see :func:`random_noise`).
    eq_db : a smooth random equaliser curve over the mel bands, within
        [-eq_db, +eq_db] dB (see :func:`random_eq`), for other microphones and rooms.
    time_warp : SpecAugment's time warp: a point in the middle of the clip moves
        by up to this fraction of the clip's length (below 0.2), stretching the
        sounds on one side of it and squeezing those on the other (see
        :func:`random_time_warp`).
    """

    gain_db: float = 6.0
    time_stretch: float = 0.1
    pitch_shift: float = 0.06
    freq_masks: int = 2
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_fraction: float = 0.1
    mixup_alpha: float = 0.2
    noise_snr_db: tuple[float, float] | None = None
    eq_db: float = 0.0
    time_warp: float = 0.0

    def __post_init__(self) -> None:
        python_fields(self)
        if self.noise_snr_db is not None:
            snr = self.noise_snr_db
            if not (isinstance(snr, (tuple, list)) and len(snr) == 2 and all(map(is_finite_number, snr)) and snr[0] <= snr[1]):
                raise ParameterError(f"noise_snr_db={snr!r} must be a pair [low, high] of dB values with low <= high")
            object.__setattr__(self, "noise_snr_db", (float(snr[0]), float(snr[1])))
        for name in ("gain_db", "eq_db", "mixup_alpha", "time_mask_fraction"):
            check_number(name, getattr(self, name), minimum=0)
        for name in ("time_stretch", "pitch_shift"):
            check_number(name, getattr(self, name), minimum=0, below=0.5)
        check_number("time_warp", self.time_warp, minimum=0, below=0.5 - TIME_WARP_CENTRE)  # the point stays inside the clip
        for name in ("freq_masks", "freq_mask_width", "time_masks"):
            check_int(name, getattr(self, name), minimum=0)


NO_AUGMENT = AugmentConfig(
    gain_db=0.0, eq_db=0.0, time_stretch=0.0, pitch_shift=0.0, freq_masks=0, freq_mask_width=0,
    time_masks=0, time_mask_fraction=0.0, mixup_alpha=0.0,
)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_gain(logmel: torch.Tensor, gain_db: float, generator: torch.Generator) -> torch.Tensor:
    """Add a random per-clip offset in dB to ``logmel`` (B, F, T).

    Training applies it after the front-end's clamp: for absolute dB that is a
    loudness change; for dB relative to the peak, where loudness no longer
    shows, it moves the whole picture's level, a regulariser that was worth
    2.5-3.75 points on two ESC-10 folds (recipes/esc10/README.md).
    """
    if gain_db <= 0:
        return logmel
    gain = _uniform(logmel.shape[0], -gain_db, gain_db, generator).to(logmel.device, logmel.dtype)
    return logmel + gain.view(-1, 1, 1)


#: Control points of :func:`random_eq`'s curve, spread evenly from the lowest
#: to the highest mel band: enough for a tilt and a bump or a notch.
EQ_POINTS = 5


def random_eq(logmel: torch.Tensor, eq_db: float, generator: torch.Generator) -> torch.Tensor:
    """Add a smooth random equaliser curve to ``logmel`` (B, F, T) in dB, per clip.

    The curve runs linearly between :data:`EQ_POINTS` gains uniform in
    ``[-eq_db, +eq_db]`` dB: a microphone's or a room's frequency response,
    which shifts each band of a log spectrum by a constant.
    """
    if eq_db <= 0:
        return logmel
    batch, n_mels, _ = logmel.shape
    points = _uniform(batch * EQ_POINTS, -eq_db, eq_db, generator).view(batch, 1, EQ_POINTS)
    curve = F.interpolate(points, size=n_mels, mode="linear", align_corners=True)  # (B, 1, F)
    return logmel + curve.transpose(1, 2).to(logmel.device, logmel.dtype)


#: Most dB by which :func:`random_noise`'s floor rises or falls from the lowest
#: to the highest mel band (pink-ish to blue-ish noise).
NOISE_TILT_DB = 10.0
#: Spread (standard deviation, dB) of that floor from cell to cell: the
#: fluctuation of a noise recording's power.
NOISE_JITTER_DB = 1.3


def random_noise(
    logmel: torch.Tensor, snr_db: tuple[float, float] | None, generator: torch.Generator
) -> torch.Tensor:
    """Add a background-noise floor, in power, to ``logmel`` (B, F, T) in dB.

    Per clip, the floor sits ``snr`` dB (uniform in ``snr_db``) below the
    clip's loudest cell, tilted by up to :data:`NOISE_TILT_DB` from the lowest
    to the highest mel band, and fluctuates per cell by a log-normal factor
    (:data:`NOISE_JITTER_DB`), like the power of a noise recording.
    Models trained with it stop relying on one recording room's noise.
    """
    if snr_db is None:
        return logmel
    batch, n_mels, n_frames = logmel.shape
    snr = _uniform(batch, snr_db[0], snr_db[1], generator)
    tilt = _uniform(batch, -NOISE_TILT_DB, NOISE_TILT_DB, generator)
    bands = torch.linspace(-0.5, 0.5, n_mels)
    floor_db = (-snr).view(-1, 1, 1) + (tilt.view(-1, 1) * bands).unsqueeze(2)  # (B, F, 1)
    jitter_db = NOISE_JITTER_DB * torch.randn(batch, n_mels, n_frames, generator=generator)
    noise_db = logmel.amax(dim=(1, 2), keepdim=True) + (floor_db + jitter_db).to(logmel.device, logmel.dtype)
    to_nepers = np.log(10.0) / 10.0
    return torch.logaddexp(logmel * to_nepers, noise_db * to_nepers) / to_nepers


def random_warp(
    logmel: torch.Tensor, *, time_stretch: float, pitch_shift: float, generator: torch.Generator
) -> torch.Tensor:
    """Stretch time and scale the mel axis of ``logmel`` (B, F, T), per clip.

    Time is resampled about the clip's centre (a speed change), the mel axis
    about its bottom edge, the lowest band's lower edge (a pitch change, see
    :class:`AugmentConfig`); both by linear interpolation. Keeps ``logmel``'s
    shape, dtype and device; an empty batch is returned as it is.
    Scaling the mel axis is not scaling every frequency by one factor: the
    mel scale is logarithmic above 1 kHz, so the upper formants move further
    than the lower ones. A warp that moves every frequency by the same factor
    was tried on the FSDD recipe and did no better in three runs
    (recipes/fsdd/README.md).
    """
    batch = logmel.shape[0]
    if (time_stretch <= 0 and pitch_shift <= 0) or batch == 0:
        return logmel
    speed = _uniform(batch, 1 - time_stretch, 1 + time_stretch, generator)
    pitch = _uniform(batch, 1 - pitch_shift, 1 + pitch_shift, generator)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = speed  # x: time, in [-1, 1] about the centre
    theta[:, 1, 1] = 1 / pitch  # y: mel bins; scale about y = -1 (the lowest band)
    theta[:, 1, 2] = 1 / pitch - 1
    images = logmel.unsqueeze(1)  # (B, 1, F, T)
    grid = F.affine_grid(theta.to(logmel.device, logmel.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False).squeeze(1)


def _bend(x: torch.Tensor, point: torch.Tensor, moved_to: torch.Tensor) -> torch.Tensor:
    """Where each output coordinate ``x`` (B, N) in [-1, 1] reads from, when the input's
    ``point`` (B,) is moved to ``moved_to`` (B,) and both halves are stretched linearly to fit."""
    point, moved_to = point.view(-1, 1), moved_to.view(-1, 1)
    before = -1 + (x + 1) * (point + 1) / (moved_to + 1)
    after = point + (x - moved_to) * (1 - point) / (1 - moved_to)
    return torch.where(x <= moved_to, before, after)


def random_time_warp(logmel: torch.Tensor, time_warp: float, generator: torch.Generator) -> torch.Tensor:
    """Bend the time axis of ``logmel`` (B, F, T) piecewise-linearly, per clip (SpecAugment's
    time warp, Park et al. 2019).

    A point uniform in the middle 60 % of the clip moves by up to ``time_warp`` of the
    clip's length (``time_warp = 0.1``: 8 frames of 81), the frames before it stretched or
    squeezed to fill the gap and those after it the other way: one sound of a word lasts
    longer and the next shorter, as speakers differ, where :func:`random_warp` changes the
    speed of all of them alike. The ends stay where they are; linear interpolation.
    On the FSDD recipe's unseen speakers it did no better over two seeds
    (recipes/fsdd/README.md), so no recipe uses it.
    """
    if time_warp <= 0:
        return logmel
    batch, n_mels, n_frames = logmel.shape
    # Frame centres in grid_sample's [-1, 1] coordinates (align_corners=False); 2 = the clip's length.
    frames = torch.linspace(-1 + 1 / n_frames, 1 - 1 / n_frames, n_frames).expand(batch, -1)
    bands = torch.linspace(-1 + 1 / n_mels, 1 - 1 / n_mels, n_mels)
    point = _uniform(batch, -2 * TIME_WARP_CENTRE, 2 * TIME_WARP_CENTRE, generator)
    shift = _uniform(batch, -2 * time_warp, 2 * time_warp, generator)
    source = _bend(frames, point, point + shift)  # (B, T)
    grid = torch.stack(
        [source.unsqueeze(1).expand(-1, n_mels, -1), bands.view(1, -1, 1).expand(batch, -1, n_frames)], dim=-1
    )  # (B, F, T, 2): x = time, y = mel band (unchanged)
    warped = F.grid_sample(
        logmel.unsqueeze(1), grid.to(logmel.device, logmel.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    return warped.squeeze(1)


def _mask(lengths: int, count: int, max_width: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A boolean ``(B, lengths)`` mask of ``count`` random bands up to ``max_width`` wide."""
    mask = torch.zeros(batch, lengths, dtype=torch.bool)
    max_width = min(max_width, lengths)
    if count == 0 or max_width == 0:
        return mask
    positions = torch.arange(lengths)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
        start = (torch.rand(batch, 1, generator=generator) * (lengths - width + 1)).long()
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """SpecAugment frequency and time masks on standardised ``images`` (B, C, F, T).

    Masked cells are set to 0, the training mean after standardisation.
    """
    batch, _, n_freq, n_time = images.shape
    freq = _mask(n_freq, config.freq_masks, config.freq_mask_width, batch, generator)
    time = _mask(n_time, config.time_masks, int(config.time_mask_fraction * n_time), batch, generator)
    keep = ~(freq.unsqueeze(2) | time.unsqueeze(1))  # (B, F, T)
    return images * keep.unsqueeze(1).to(images.device, images.dtype)


def mixup(
    images: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip with a random partner: ``lam * a + (1 - lam) * b``.

    images : (B, C, F, T); targets : (B, K) class probabilities.
    ``lam`` is drawn per clip from Beta(alpha, alpha) and folded to >= 0.5 so
    the first clip stays the main one.
    """
    if alpha <= 0:
        return images, targets
    batch = images.shape[0]
    # torch's Beta sampler takes no generator: seed NumPy's from ours instead.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=batch)).float()
    lam = torch.maximum(lam, 1 - lam)
    partner = torch.randperm(batch, generator=generator)
    lam_images = lam.view(-1, 1, 1, 1).to(images.device, images.dtype)
    lam_targets = lam.view(-1, 1).to(targets.device, targets.dtype)
    mixed_images = lam_images * images + (1 - lam_images) * images[partner.to(images.device)]
    mixed_targets = lam_targets * targets + (1 - lam_targets) * targets[partner.to(targets.device)]
    return mixed_images, mixed_targets
