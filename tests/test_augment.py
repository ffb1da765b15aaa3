"""Tests for specnet/augment.py: gain, warp, SpecAugment masks and mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specnet.augment import (
    NO_AUGMENT,
    AugmentConfig,
    mixup,
    random_eq,
    random_gain,
    random_noise,
    random_time_warp,
    random_warp,
    spec_augment,
)
from specnet.errors import ParameterError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logmel(batch: int = 4, n_mels: int = 32, frames: int = 50, seed: int = 0) -> torch.Tensor:
    """(B, F, T) values in a dB-like range, no zeros."""
    return torch.rand(batch, n_mels, frames, generator=_gen(seed)) * -80 - 1


def _pipeline(config: AugmentConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training order on a fixed batch, every draw from one generator (the
    front-end's clamp, which draws nothing, left out)."""
    gen = _gen(seed)
    x = random_eq(_logmel(), config.eq_db, gen)
    x = random_noise(x, config.noise_snr_db, gen)
    x = random_warp(x, time_stretch=config.time_stretch, pitch_shift=config.pitch_shift, generator=gen)
    x = random_time_warp(x, config.time_warp, gen)
    x = random_gain(x, config.gain_db, gen)
    images = spec_augment(x.unsqueeze(1), config, gen)
    targets = torch.eye(4)[torch.tensor([0, 1, 2, 3])]
    return mixup(images, targets, config.mixup_alpha, gen)


def test_same_seed_same_result_different_seed_different():
    config = AugmentConfig(eq_db=6.0, noise_snr_db=(10.0, 40.0), time_warp=0.1)
    a_images, a_targets = _pipeline(config, seed=1)
    b_images, b_targets = _pipeline(config, seed=1)
    assert torch.equal(a_images, b_images) and torch.equal(a_targets, b_targets)
    c_images, _ = _pipeline(config, seed=2)
    assert not torch.equal(a_images, c_images)


def test_no_augment_is_identity_and_draws_nothing():
    x = _logmel()
    images, targets = _pipeline(NO_AUGMENT, seed=0)
    assert torch.equal(images, x.unsqueeze(1))
    assert torch.equal(targets, torch.eye(4))
    # Switched-off steps leave the generator alone, so turning one off does not
    # change the draws of the others.
    gen = _gen(0)
    state = gen.get_state()
    random_gain(x, NO_AUGMENT.gain_db, gen)
    random_eq(x, NO_AUGMENT.eq_db, gen)
    random_noise(x, NO_AUGMENT.noise_snr_db, gen)
    random_warp(x, time_stretch=0.0, pitch_shift=0.0, generator=gen)
    random_time_warp(x, NO_AUGMENT.time_warp, gen)
    spec_augment(x.unsqueeze(1), NO_AUGMENT, gen)
    mixup(x.unsqueeze(1), torch.eye(4), NO_AUGMENT.mixup_alpha, gen)
    assert torch.equal(gen.get_state(), state)


def _zeroed_bands(masked: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
    """Per clip: indices of fully zeroed mel rows and fully zeroed time columns of (B, F, T)."""
    zero = masked == 0
    rows = [torch.nonzero(z.all(dim=1)).flatten().tolist() for z in zero]
    cols = [torch.nonzero(z.all(dim=0)).flatten().tolist() for z in zero]
    return rows, cols


def _runs(indices: list[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in sorted ``indices``."""
    runs: list[int] = []
    for i, index in enumerate(indices):
        if i and index == indices[i - 1] + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


@pytest.mark.parametrize(("freq_masks", "width", "time_masks", "fraction"), [(1, 5, 1, 0.1), (2, 8, 2, 0.2)])
def test_spec_augment_masks_within_widths_and_counts(freq_masks, width, time_masks, fraction):
    config = AugmentConfig(freq_masks=freq_masks, freq_mask_width=width, time_masks=time_masks,
                           time_mask_fraction=fraction)
    n_mels, frames = 32, 50
    max_time = int(fraction * frames)
    images = -_logmel(batch=64, n_mels=n_mels, frames=frames).unsqueeze(1)  # all > 0
    masked = spec_augment(images, config, _gen(3))
    assert masked.shape == images.shape
    kept = masked != 0
    assert torch.equal(masked[kept], images[kept])  # unmasked cells untouched
    rows, cols = _zeroed_bands(masked[:, 0])
    saw_freq = saw_time = False
    for clip, (r, c) in enumerate(zip(rows, cols)):
        assert len(r) <= freq_masks * width and len(c) <= time_masks * max_time
        if freq_masks == 1:
            assert len(_runs(r)) <= 1 and len(_runs(c)) <= 1  # one contiguous band each
        # Only whole bands are zeroed: the count of zero cells is exactly their union.
        zeros = int((masked[clip, 0] == 0).sum())
        assert zeros == len(r) * frames + len(c) * n_mels - len(r) * len(c)
        saw_freq |= bool(r)
        saw_time |= bool(c)
    assert saw_freq and saw_time  # 64 clips: masks really happen
    widest = max(max(_runs(r), default=0) for r in rows)
    assert widest <= freq_masks * width


def test_mask_widths_are_uniform_up_to_the_axis_and_time_masks_count_frames():
    # One mask per axis, its width uniform from 0 to its most: time_mask_fraction of the frames
    # (not of the mel bands), and a freq_mask_width past the axis masks the whole axis no more
    # often than any other width.
    batch, n_mels, frames = 4000, 8, 40
    images = -_logmel(batch=batch, n_mels=n_mels, frames=frames).unsqueeze(1)  # all > 0
    freq_only = AugmentConfig(freq_masks=1, freq_mask_width=100, time_masks=0)
    time_only = AugmentConfig(freq_masks=0, time_masks=1, time_mask_fraction=0.25)  # up to 10 frames
    bands = (spec_augment(images, freq_only, _gen(12))[:, 0] == 0).all(dim=2).sum(dim=1)  # (B,) masked bands
    times = (spec_augment(images, time_only, _gen(13))[:, 0] == 0).all(dim=1).sum(dim=1)  # (B,) masked frames
    for widths, most in ((bands, n_mels), (times, 10)):
        counts = torch.bincount(widths, minlength=most + 1)
        assert len(counts) == most + 1  # never wider
        expected = batch / (most + 1)
        assert ((counts - expected).abs() < 0.25 * expected).all(), counts


def test_spec_augment_zero_width_or_count_masks_nothing():
    images = -_logmel().unsqueeze(1)
    for config in (AugmentConfig(freq_masks=0, time_masks=0),
                   AugmentConfig(freq_mask_width=0, time_mask_fraction=0.0)):
        assert torch.equal(spec_augment(images, config, _gen(0)), images)


def test_spec_augment_same_mask_on_every_channel():
    images = -_logmel(batch=8).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    masked = spec_augment(images, AugmentConfig(), _gen(5))
    assert (masked == 0).any()  # masks were drawn, so the comparison below means something
    assert torch.equal(masked[:, 0] == 0, masked[:, 2] == 0)


def test_mixup_targets_sum_to_one_and_lam_at_least_half():
    batch = 16
    images = torch.zeros(batch, 1, 2, 3) + torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1)
    targets = torch.eye(batch)  # one class per clip: the target row reveals lam and the partner
    mixed, soft = mixup(images, targets, 0.4, _gen(7))
    assert soft.shape == targets.shape and mixed.shape == images.shape
    assert torch.allclose(soft.sum(dim=1), torch.ones(batch))
    lam = soft.diagonal()
    own_only = soft.clone()
    own_only.fill_diagonal_(0)
    partner_weight = own_only.sum(dim=1)
    # The partner may be the clip itself (then the row is one-hot, weight 1).
    assert ((lam >= 0.5 - 1e-6) & (lam <= 1)).all()
    assert ((lam + partner_weight - 1).abs() < 1e-6).all()
    assert (lam < 0.999).any()  # real mixing happened
    assert lam[lam < 0.999].unique().numel() > 3  # one draw per clip, not one for the batch
    # The images are mixed with the same weights as the targets.
    classes = torch.arange(batch, dtype=torch.float32)
    expected = soft @ classes
    assert torch.allclose(mixed[:, 0, 0, 0], expected, atol=1e-5)


def test_mixup_draws_new_weights_for_every_batch():
    # One generator serves a whole run: each batch's clips get weights of their own.
    images, targets, gen = torch.zeros(16, 1, 2, 2), torch.eye(16), _gen(0)
    weights = []
    for _ in range(2):
        mixed = mixup(images, targets, 0.4, gen)[1]
        with_another = (mixed > 0).sum(dim=1) == 2  # not a clip that drew itself as its partner
        weights.append(torch.where(with_another, mixed.diagonal(), torch.nan))  # each clip's own weight
    both = ~(weights[0].isnan() | weights[1].isnan())
    assert both.sum() >= 8
    assert (weights[0][both] - weights[1][both]).abs().min() > 1e-6


def test_mixup_alpha_zero_is_identity():
    images, targets = torch.randn(4, 1, 3, 3), torch.eye(4)
    out_images, out_targets = mixup(images, targets, 0.0, _gen(0))
    assert out_images is images and out_targets is targets


def test_random_warp_without_stretch_or_shift_is_identity():
    x = _logmel()
    out = random_warp(x, time_stretch=0.0, pitch_shift=0.0, generator=_gen(0))
    assert out.shape == x.shape
    assert (out - x).abs().max() <= 1e-5


def test_random_warp_identity_factors_through_grid_sample():
    # Factors of 1 through the resampling path itself: grid_sample must not shift
    # (float32 grid coordinates leave a relative error of a few 1e-6).
    x = _logmel()
    out = random_warp(x, time_stretch=1e-12, pitch_shift=1e-12, generator=_gen(0))
    assert (out - x).abs().max() <= 1e-5 * x.abs().max()


def test_random_warp_changes_values_but_keeps_shape():
    x = _logmel(batch=3, n_mels=16, frames=40)
    out = random_warp(x, time_stretch=0.2, pitch_shift=0.1, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - x).abs().max() > 1.0
    # Bilinear interpolation with border padding never leaves the input's range.
    assert out.min() >= x.min() - 1e-4 and out.max() <= x.max() + 1e-4
    const = torch.full((2, 16, 40), -20.0)
    assert (random_warp(const, time_stretch=0.2, pitch_shift=0.1, generator=_gen(1)) + 20).abs().max() < 1e-4


def test_random_warp_time_only_keeps_each_mel_row():
    # A pure speed change must not mix mel bands: a row-constant input stays row-constant.
    rows = torch.linspace(-80, 0, 16).view(1, 16, 1).expand(2, 16, 30).contiguous()
    out = random_warp(rows, time_stretch=0.3, pitch_shift=0.0, generator=_gen(2))
    assert (out - rows).abs().max() < 1e-4


def test_time_stretch_reads_time_about_the_centre_at_one_speed_per_clip():
    # Each frame holds its own index, so the output says which input time it read: a speed r
    # reads input frame c + r (j - c) at output frame j, c the clip's centre, in every mel band.
    frames, stretch = 81, 0.2
    ramp = torch.arange(frames, dtype=torch.float32).view(1, 1, -1).expand(256, 4, -1).contiguous()
    out = random_warp(ramp, time_stretch=stretch, pitch_shift=0.0, generator=_gen(8))
    assert (out - out[:, :1]).abs().max() < 1e-4  # time only: every mel band alike
    read, centre = out[:, 0], (frames - 1) // 2
    assert (read[:, centre] - centre).abs().max() < 1e-3  # the centre stays where it is
    steps = read[:, centre - 30 : centre + 31].diff(dim=1)  # inside the clip at any speed up to 1.2
    speed = steps[:, :1]
    assert (steps - speed).abs().max() < 1e-3  # one speed per clip
    assert speed.min() >= 1 - stretch - 1e-3 and speed.max() <= 1 + stretch + 1e-3
    assert speed.min() < 1 - 0.8 * stretch and speed.max() > 1 + 0.8 * stretch  # uniform, up to the bounds


def test_random_time_warp_bends_time_within_bounds_and_keeps_the_ends():
    # Each frame holds its own index, so the output says which input time it read.
    frames = 81
    ramp = torch.arange(frames, dtype=torch.float32).view(1, 1, -1).expand(256, 4, -1).contiguous()
    out = random_time_warp(ramp, 0.1, _gen(6))
    assert out.shape == ramp.shape
    assert (out - out[:, :1]).abs().max() < 1e-4  # time only: every mel band bent alike
    read = out[:, 0]  # (B, T): the input time each output frame shows
    assert (read.diff(dim=1) > 0).all()  # still in order: stretched and squeezed, never reversed
    assert read[:, 0].max() < 1.0 and read[:, -1].min() > frames - 2.0  # the ends stay
    moved = (read - ramp[:, 0]).abs().amax(dim=1)  # per clip, in frames
    assert moved.max() <= 0.1 * frames + 1e-3  # at most time_warp of the clip's length
    assert moved.max() > 0.08 * frames and moved.min() < 0.02 * frames  # uniform moves, up to the bound
    # The bend is a point of the middle 60 % of the input: what the most-moved frame shows.
    most = (read - ramp[:, 0]).abs().argmax(dim=1)
    bent_at = read.gather(1, most.view(-1, 1)).squeeze(1) / (frames - 1)
    assert ((bent_at > 0.2 - 0.02) & (bent_at < 0.8 + 0.02)).all()
    assert bent_at.min() < 0.3 and bent_at.max() > 0.7
    assert random_time_warp(ramp, 0.0, _gen(6)) is ramp


def test_random_time_warp_is_one_bend_per_clip():
    # Stretching one side means squeezing the other: each clip's steps take one value before
    # the moved point and another after it, with one step across the bend between them.
    ramp = torch.arange(100, dtype=torch.float32).view(1, 1, -1).expand(64, 1, -1).contiguous()
    steps = random_time_warp(ramp, 0.15, _gen(7))[:, 0].diff(dim=1)[:, 1:-1]  # the ends read the border
    first, last = steps[:, :1], steps[:, -1:]
    assert (((first - 1) * (last - 1)) <= 1e-6).all()  # one side stretched (< 1), the other squeezed
    assert (first - last).abs().max() > 0.5
    off_both = ((steps - first).abs() > 1e-3) & ((steps - last).abs() > 1e-3)
    assert off_both.sum(dim=1).max() <= 1
    assert (steps >= torch.minimum(first, last) - 1e-3).all() and (steps <= torch.maximum(first, last) + 1e-3).all()


def test_random_time_warp_keeps_each_mel_band():
    # A time warp moves frames, never mel bands: a row-constant input stays as it is.
    rows = torch.linspace(-80, 0, 16).view(1, 16, 1).expand(8, 16, 30).contiguous()
    assert (random_time_warp(rows, 0.15, _gen(9)) - rows).abs().max() < 1e-4


def test_random_gain_shifts_each_clip_by_at_most_gain_db():
    x = _logmel(batch=64)
    out = random_gain(x, 6.0, _gen(4))
    shift = out - x
    per_clip = shift[:, :1, :1]
    assert (shift - per_clip).abs().max() < 1e-4  # one constant shift per clip
    assert per_clip.abs().max() <= 6.0 + 1e-5
    assert per_clip.abs().max() > 3.0 and per_clip.std() > 1.0  # really random, both signs
    assert (per_clip > 0).any() and (per_clip < 0).any()
    assert torch.equal(random_gain(x, 0.0, _gen(4)), x)


def test_random_eq_adds_one_smooth_bounded_curve_per_clip():
    x = _logmel(batch=64, n_mels=41)
    out = random_eq(x, 6.0, _gen(5))
    shift = out - x  # (B, F, T)
    curve = shift[:, :, :1]
    assert (shift - curve).abs().max() < 1e-4  # one gain per band, the same in every frame
    curve = curve.squeeze(2)  # (B, F)
    assert curve.abs().max() <= 6.0 + 1e-4
    # Linear between 5 points over 41 bands (10 bands a segment): neighbours differ by
    # at most 12 dB / 10, and the slope only changes at the control points.
    steps = curve.diff(dim=1)
    assert steps.abs().max() <= 1.2 + 1e-4
    segment_slopes = steps.view(64, 4, 10)
    assert (segment_slopes - segment_slopes[:, :, :1]).abs().max() < 1e-4
    assert curve.std(dim=1).mean() > 1.0  # not a flat gain: the bands really move apart
    assert (curve[:, 0] - curve[0, 0]).abs().max() > 3.0  # a new curve for every clip
    assert curve[:, 0].max() > 4.0 and curve[:, 0].min() < -4.0  # cuts as well as boosts, up to eq_db
    assert torch.equal(random_eq(x, 0.0, _gen(5)), x)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (dict(gain_db=-1.0), "gain_db=-1.0"),
        (dict(eq_db=-3.0), "eq_db=-3.0"),
        (dict(eq_db=float("nan")), "eq_db=nan"),
        (dict(gain_db="6"), "gain_db='6'"),
        (dict(time_stretch=0.5), "time_stretch=0.5"),
        (dict(time_warp=0.2), "time_warp=0.2"),
        (dict(time_warp=-0.05), "time_warp=-0.05"),
        (dict(pitch_shift=-0.1), "pitch_shift=-0.1"),
        (dict(freq_masks=-1), "freq_masks=-1"),
        (dict(freq_mask_width=2.5), "freq_mask_width=2.5"),
        (dict(mixup_alpha=-0.2), "mixup_alpha=-0.2"),
        (dict(noise_snr_db=(40.0, 10.0)), "noise_snr_db=(40.0, 10.0)"),
        (dict(noise_snr_db=(10.0,)), "noise_snr_db=(10.0,)"),
        (dict(noise_snr_db=10.0), "noise_snr_db=10.0"),
        (dict(gain_db=float("inf")), "gain_db=inf"),
        (dict(time_stretch="0.1"), "time_stretch='0.1'"),
        (dict(time_masks=True), "time_masks=True"),
    ],
)
def test_config_validation_names_the_value(settings, named):
    with pytest.raises(ParameterError) as err:
        AugmentConfig(**settings)
    assert named in str(err.value)


def test_config_takes_numpy_numbers():
    config = AugmentConfig(gain_db=np.int64(3), eq_db=np.float32(2.5), time_masks=np.int64(1), noise_snr_db=(np.float64(10), np.int64(20)))
    assert (config.gain_db, config.eq_db, config.time_masks, config.noise_snr_db) == (3, 2.5, 1, (10.0, 20.0))
    assert type(config.time_masks) is int


def test_a_fixed_noise_snr_is_a_range_of_one_value():
    assert AugmentConfig(noise_snr_db=[20, 20]).noise_snr_db == (20.0, 20.0)


def test_noise_floor_sits_at_the_drawn_snr_below_each_peak():
    # A silent clip (-100 dB everywhere) but one cell at 0 dB: after the noise,
    # the quiet cells read the noise floor, which is 20-30 dB below the peak
    # (+-10 dB tilt across bands, ~1.3 dB per-cell jitter).
    logmel = torch.full((64, 40, 200), -100.0)
    logmel[:, 0, 0] = 0.0
    noisy = random_noise(logmel, (20.0, 30.0), _gen(0))
    floor = noisy[:, :, 1:]
    assert noisy[:, 0, 0].sub(0.0).abs().max() < 0.5  # the peak barely moves
    band_means = floor.mean(dim=2)  # (B, F): the floor per band
    assert band_means.mean(dim=1).min() > -31 and band_means.mean(dim=1).max() < -19
    assert floor.std(dim=2).mean().item() == pytest.approx(1.3, abs=0.3)
    tilt = band_means[:, -1] - band_means[:, 0]
    assert tilt.abs().max() <= 10.5 and tilt.std() > 3  # a different tilt per clip


def test_noise_only_raises_values_and_follows_the_clip_level():
    x = _logmel(seed=3)
    loud = random_noise(x + 30, (10.0, 10.0), _gen(1))
    quiet = random_noise(x, (10.0, 10.0), _gen(1))
    assert torch.all(quiet >= x) and torch.all(loud >= x + 30)
    # The floor is relative to each clip's peak, so a louder clip gets the same picture, shifted.
    torch.testing.assert_close(loud - 30, quiet, atol=1e-4, rtol=0)


def test_every_step_keeps_the_dtype_and_passes_an_empty_batch():
    # random_gain returned float32 for a bfloat16 batch, and random_warp failed on an empty one.
    steps = {
        "gain": lambda x, g: random_gain(x, 6.0, g),
        "eq": lambda x, g: random_eq(x, 6.0, g),
        "noise": lambda x, g: random_noise(x, (20.0, 40.0), g),
        "warp": lambda x, g: random_warp(x, time_stretch=0.1, pitch_shift=0.1, generator=g),
        "time warp": lambda x, g: random_time_warp(x, 0.1, g),
    }
    for name, step in steps.items():
        for dtype in (torch.bfloat16, torch.float16):
            assert step(_logmel().to(dtype), _gen(0)).dtype == dtype, name
        empty = torch.zeros(0, 32, 50)
        assert step(empty, _gen(0)).shape == (0, 32, 50), name


def test_pitch_shift_scales_the_mel_axis_about_its_lowest_edge():
    # Each mel row holds its own index; rows are cell centres, so the edge y = -1 is row -0.5.
    n_mels = 40
    rows = torch.arange(n_mels, dtype=torch.float32).view(1, -1, 1).expand(8, -1, 5).contiguous()
    gen = _gen(11)
    warped = random_warp(rows, time_stretch=0.0, pitch_shift=0.2, generator=gen)
    pitch = _uniform_draws(8, 0.2, seed=11)
    for clip in range(8):
        k = torch.arange(n_mels, dtype=torch.float32)
        expected = ((k + 0.5) / pitch[clip] - 0.5).clamp(0, n_mels - 1)  # where each output row reads from
        torch.testing.assert_close(warped[clip, :, 2], expected, atol=1e-3, rtol=0)


def _uniform_draws(batch: int, shift: float, *, seed: int) -> torch.Tensor:
    """The pitch factors random_warp draws from a fresh generator seeded ``seed`` (speed first)."""
    gen = _gen(seed)
    torch.rand(batch, generator=gen)  # the speed factors
    return 1 - shift + 2 * shift * torch.rand(batch, generator=gen)


def test_masks_reach_the_last_band_and_the_last_frame():
    images = -_logmel(batch=256, n_mels=16, frames=20).unsqueeze(1)
    masked = spec_augment(images, AugmentConfig(freq_masks=1, freq_mask_width=4, time_masks=1, time_mask_fraction=0.2), _gen(2))
    assert (masked[:, 0, -1, :] == 0).all(dim=-1).any()  # a whole last band masked in some clip
    assert (masked[:, 0, :, -1] == 0).all(dim=-1).any()  # a whole last frame
