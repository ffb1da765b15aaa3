"""Tests for specnet/features.py: the log-mel front-end and standardisation."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch

from specnet.errors import ParameterError
from specnet.features import LogMelSpectrogram, MelSpectrogram, Standardize, clamp_to_peak
from specnet.featureconfig import FeatureConfig


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    # torch.testing.assert_close costs ~2 s on its first call (lazy imports).
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert (actual - expected).abs().max().item() <= atol


def _signal(sr: int, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """A 440 Hz tone plus white noise, float32 (n,), reproducible by ``seed``."""
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * noise).astype(np.float32)


LIBROSA_CASES = [
    pytest.param(dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64, f_min=50.0, f_max=8000.0),
                 id="defaults-16k"),
    pytest.param(dict(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40, f_min=0.0, f_max=4000.0,
                      pad_mode="constant"), id="8k-constant"),
    pytest.param(dict(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=128, f_min=20.0, f_max=None,
                      center=False), id="22k-no-center"),
    pytest.param(dict(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=64, f_min=50.0,
                      f_max=7600.0, power=1.0), id="magnitude-win400"),
]


@pytest.mark.parametrize("settings", LIBROSA_CASES)
def test_mel_matches_librosa(settings):
    cfg = FeatureConfig(**settings)
    y = _signal(cfg.sample_rate)
    ref = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.window_length,
        window="hann", center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power, n_mels=cfg.n_mels,
        fmin=cfg.f_min, fmax=cfg.max_frequency, htk=False, norm="slaney",
    )
    out = MelSpectrogram(cfg)(torch.from_numpy(y)).numpy()
    assert out.shape == ref.shape == (cfg.n_mels, cfg.num_frames(len(y)))
    assert np.abs(out - ref).max() <= 1e-4 * ref.max()


@pytest.mark.parametrize("settings", LIBROSA_CASES)
def test_a_long_recording_in_pieces_matches_librosa(monkeypatch, settings):
    cfg = FeatureConfig(**settings)
    seconds = 1.01 * (1 << 21) / (cfg.n_fft // 2 + 1) * cfg.hop_length / cfg.sample_rate  # over 2**21 bins
    y = _signal(cfg.sample_rate, seconds)
    ref = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.window_length,
        window="hann", center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power, n_mels=cfg.n_mels,
        fmin=cfg.f_min, fmax=cfg.max_frequency, htk=False, norm="slaney",
    )
    module = MelSpectrogram(cfg)
    pieces = []
    in_pieces = module._mel_in_pieces
    monkeypatch.setattr(module, "_mel_in_pieces", lambda row, mode: pieces.append(row.shape) or in_pieces(row, mode))
    out = module(torch.from_numpy(y)).numpy()
    assert pieces == [(len(y),)]
    assert out.shape == ref.shape == (cfg.n_mels, cfg.num_frames(len(y)))
    assert np.abs(out - ref).max() <= 1e-4 * ref.max()


def test_log_mel_is_10_log10_of_clamped_mel():
    cfg = FeatureConfig()
    y = torch.from_numpy(_signal(16000))
    y[:4000] = 0.0  # silence, so the floor is actually hit
    mel = MelSpectrogram(cfg)(y)
    assert (mel < cfg.log_floor).any()
    expected = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    logmel = LogMelSpectrogram(cfg)(y)
    _assert_close(logmel, expected, 1e-5)
    assert logmel.min().item() == pytest.approx(-100.0)


def test_tone_energy_lands_in_the_right_mel_band():
    cfg = FeatureConfig()
    t = torch.arange(16000) / 16000
    mel = MelSpectrogram(cfg)(torch.sin(2 * np.pi * 1000 * t))
    band = int(mel.mean(-1).argmax())
    centres = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=cfg.f_min, fmax=cfg.max_frequency)[1:-1]
    assert abs(centres[band] - 1000) < (centres[band + 1] - centres[band - 1])


@pytest.mark.parametrize("module_cls", [MelSpectrogram, LogMelSpectrogram])
def test_batched_equals_item_by_item(module_cls):
    module = module_cls(FeatureConfig())
    waves = torch.from_numpy(np.stack([_signal(16000, 0.3, seed=s) for s in range(6)]))  # (6, T)
    single = torch.stack([module(w) for w in waves])  # (6, F, frames)
    batched = module(waves)
    assert batched.shape == (6, 64, FeatureConfig().num_frames(waves.shape[-1]))
    _assert_close(batched, single, 1e-5)
    nested = module(waves.reshape(2, 3, -1))  # (B1, B2, T)
    assert nested.shape == (2, 3, *single.shape[-2:])
    _assert_close(nested.reshape(single.shape), single, 1e-5)


def test_to_moves_and_casts_buffers():
    module = LogMelSpectrogram(FeatureConfig())
    assert module.window.dtype == module.filterbank.dtype == torch.float32
    assert module.filterbank.shape == (64, 257) and module.window.shape == (512,)
    # Front-end buffers are rebuilt from the config, never saved in a model file.
    assert module.state_dict() == {}
    as64 = module.to(torch.float64)
    assert as64.window.dtype == as64.filterbank.dtype == torch.float64
    y = torch.from_numpy(_signal(16000, 0.2)).double()
    out = as64(y)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    # The meta device checks that .to(device) moves every buffer, without a GPU.
    on_meta = LogMelSpectrogram(FeatureConfig()).to("meta")
    assert {b.device.type for b in on_meta.buffers()} == {"meta"}
    assert len(list(on_meta.buffers())) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu():
    cpu = LogMelSpectrogram(FeatureConfig())
    gpu = LogMelSpectrogram(FeatureConfig()).to("cuda")
    assert gpu.window.device.type == gpu.filterbank.device.type == "cuda"
    y = torch.from_numpy(np.stack([_signal(16000, 0.5, seed=s) for s in range(3)]))
    _assert_close(gpu(y.cuda()).cpu(), cpu(y), 1e-3)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (dict(n_fft=0), "n_fft=0"),
        (dict(hop_length=-1), "hop_length=-1"),
        (dict(n_mels=2.5), "n_mels=2.5"),
        (dict(sample_rate=True), "sample_rate=True"),
        (dict(f_max=9000.0), "f_max=9000.0"),
        (dict(sample_rate=8000, f_max=None, f_min=4000.0), "f_min=4000.0"),
        (dict(f_min=8000.0), "f_min=8000.0"),
        (dict(f_min=-1.0), "f_min=-1.0"),
        (dict(pad_mode="wrap"), "pad_mode='wrap'"),
        (dict(win_length=513), "win_length=513"),
        (dict(win_length=0), "win_length=0"),
        (dict(power=3.0), "power=3.0"),
        (dict(log_floor=0.0), "log_floor=0.0"),
        (dict(f_min="50"), "f_min='50'"),
        (dict(f_max=float("inf")), "f_max=inf"),
        (dict(top_db="35"), "top_db='35'"),
        (dict(top_db=0), "top_db=0 must be positive or None"),  # a floor at the peak: every cell the same
        (dict(preemphasis=True), "preemphasis=True"),
        (dict(power=True), "power=True"),
        (dict(center="yes"), "center='yes' must be True or False"),
        (dict(ref_peak=1), "ref_peak=1 must be True or False"),
        # Upper limits: a model file is untrusted, and these size the window and filterbank.
        (dict(sample_rate=768_001), "sample_rate=768001 must be an integer in [1, 768000]"),
        (dict(n_fft=65_537, hop_length=160), "n_fft=65537 must be an integer in [1, 65536]"),
        (dict(n_fft=2**30), "n_fft=1073741824 must be an integer in [1, 65536]"),
        (dict(n_mels=1025), "n_mels=1025 must be an integer in [1, 1024]"),
        (dict(n_mels=10**9), "n_mels=1000000000 must be an integer in [1, 1024]"),
        (dict(hop_length=513), "hop_length=513 must be an integer in [1, n_fft=512]"),
        (dict(n_fft=256, win_length=200, hop_length=257), "hop_length=257 must be an integer in [1, n_fft=256]"),
    ],
)
def test_config_validation_names_the_value(settings, named):
    with pytest.raises(ParameterError) as err:
        FeatureConfig(**settings)
    assert named in str(err.value)


def test_config_takes_values_up_to_the_limits():
    cfg = FeatureConfig(sample_rate=768_000, n_fft=65_536, win_length=65_536, hop_length=65_536, n_mels=1024,
                        f_min=0.0, f_max=None)
    assert cfg.max_frequency == 384_000.0 and cfg.window_length == cfg.hop_length == 65_536
    # More mel bands than FFT bins stays allowed (logged as empty bands; see the warning test).
    assert FeatureConfig(n_fft=64, hop_length=64, n_mels=1024).n_mels == 1024


def test_config_takes_numpy_numbers_and_keeps_python_ones():
    cfg = FeatureConfig(sample_rate=np.int64(8000), n_mels=np.int32(40), f_max=np.float64(4000.0), top_db=np.float32(35.0))
    assert cfg == FeatureConfig(sample_rate=8000, n_mels=40, f_max=4000.0, top_db=35.0)
    assert all(type(v) in (int, float, bool, str, type(None)) for v in cfg.to_dict().values())
    json.dumps(cfg.to_dict())  # a model file's metadata holds them


def test_config_defaults_and_derived_values():
    cfg = FeatureConfig(sample_rate=22050, f_max=None, win_length=None)
    assert cfg.max_frequency == 11025.0
    assert cfg.window_length == cfg.n_fft == 512
    assert FeatureConfig(win_length=400).window_length == 400


def test_from_dict_round_trip_and_unknown_keys():
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40, f_max=4000.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ParameterError, match="n_melz") as err:
        FeatureConfig.from_dict({**cfg.to_dict(), "n_melz": 40})
    assert "n_mels" in str(err.value)  # the known names are listed


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("num_samples", [512, 513, 1000, 16000, 16159, 16160])
def test_num_frames_matches_output(center, num_samples):
    cfg = FeatureConfig(center=center)
    out = MelSpectrogram(cfg)(torch.zeros(num_samples))
    assert out.shape[-1] == cfg.num_frames(num_samples)
    if center:
        assert cfg.num_frames(num_samples) == num_samples // 160 + 1
    else:
        assert cfg.num_frames(num_samples) == (num_samples - 512) // 160 + 1
    # An odd n_fft pads n_fft // 2 at each end, one sample short of n_fft: 1600 samples make 10 frames, not 11.
    odd = FeatureConfig(center=center, n_fft=511, win_length=400)
    assert MelSpectrogram(odd)(torch.zeros(num_samples)).shape[-1] == odd.num_frames(num_samples)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant", "replicate", "circular"])
@pytest.mark.parametrize("num_samples", [1, 100, 255, 256])
def test_clip_shorter_than_half_n_fft(pad_mode, num_samples):
    cfg = FeatureConfig(pad_mode=pad_mode)
    y = torch.from_numpy(_signal(16000, num_samples / 16000))
    out = LogMelSpectrogram(cfg)(y)
    assert out.shape == (64, cfg.num_frames(num_samples))
    assert torch.isfinite(out).all()


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
def test_short_clip_equals_explicit_zero_centring():
    # A tiny clip is centred in zeros: same as librosa with pad_mode="constant".
    cfg = FeatureConfig()
    y = _signal(16000, 100 / 16000)
    ref = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=160, win_length=512, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=64, fmin=50.0, fmax=8000.0, htk=False, norm="slaney",
    )
    out = MelSpectrogram(cfg)(torch.from_numpy(y)).numpy()
    assert out.shape == ref.shape == (64, 1)
    assert np.abs(out - ref).max() <= 1e-4 * ref.max()


def test_no_center_clip_shorter_than_n_fft_is_a_parameter_error():
    with pytest.raises(ParameterError, match="n_fft=512"):
        MelSpectrogram(FeatureConfig(center=False))(torch.zeros(300))


def test_empty_clip_is_a_parameter_error():
    with pytest.raises(ParameterError, match="0 samples"):
        MelSpectrogram()(torch.zeros(0))
    with pytest.raises(ParameterError, match="0 samples"):
        MelSpectrogram()(torch.zeros(3, 0))


def test_standardize_fit_gives_zero_mean_unit_std_per_bin():
    gen = torch.Generator().manual_seed(0)
    bins = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1)
    x = torch.randn(12, 1, 8, 20, generator=gen) * (bins + 1) + 10 * bins - 30  # (B, C, F, T)
    one_shot = Standardize((1, 8, 1))
    one_shot.fit([x])
    y = one_shot(x)
    assert y.mean(dim=(0, 1, 3)).abs().max() < 1e-5
    assert (y.std(dim=(0, 1, 3)) - 1).abs().max() < 1e-5
    assert one_shot.mean.shape == (1, 8, 1)
    _assert_close(one_shot.mean.flatten(), x.mean(dim=(0, 1, 3)), 1e-4)

    batched = Standardize((1, 8, 1))
    batched.fit([x[:5], x[5:7], x[7:]])
    _assert_close(batched.mean, one_shot.mean, 1e-6)
    _assert_close(batched.std, one_shot.std, 1e-6)
    assert set(batched.state_dict()) == {"mean", "std"}


def test_standardize_per_channel_and_min_std():
    x = torch.rand(4, 3, 5, 5)
    x[:, 2] = 7.0  # a constant channel: std clamped, not a division by zero
    norm = Standardize((3, 1, 1))
    norm.fit([x], min_std=1e-3)
    assert norm.mean.shape == (3, 1, 1)
    assert norm.mean[2].item() == pytest.approx(7.0)
    assert norm.std[2].item() == pytest.approx(1e-3)
    y = norm(x)
    assert y[:, 2].abs().max() == 0
    assert y[:, :2].mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_standardize_needs_two_values():
    with pytest.raises(ParameterError, match="fewer than 2"):
        Standardize((1, 4, 1)).fit([])


def test_peak_reference_and_top_db_match_librosa_power_to_db():
    cfg = FeatureConfig(ref_peak=True, top_db=80.0)
    rng = np.random.default_rng(3)
    clips = np.stack([rng.standard_normal(8000), 1e-3 * rng.standard_normal(8000)]).astype(np.float32)
    clips[1, :4000] = 0.0  # digital silence below the 80 dB range
    with torch.no_grad():
        mel = MelSpectrogram(cfg)(torch.from_numpy(clips)).numpy()
        db = LogMelSpectrogram(cfg)(torch.from_numpy(clips)).numpy()
    for i in range(2):
        expected = librosa.power_to_db(mel[i], ref=np.max, amin=1e-10, top_db=80.0)
        assert np.abs(db[i] - expected).max() < 1e-3
        assert db[i].max() == pytest.approx(0.0, abs=1e-6) and db[i].min() >= -80.0 - 1e-4
    # A clip's level no longer matters: 40 dB quieter gives the same picture.
    with torch.no_grad():
        quiet = LogMelSpectrogram(cfg)(torch.from_numpy(clips[:1] * 0.01)).numpy()
    assert np.abs(quiet[0] - db[0]).max() < 1e-3


def test_absolute_db_then_clamp_is_the_front_end_and_a_gain_before_the_clamp_cancels():
    cfg = FeatureConfig(ref_peak=True, top_db=40.0)
    frontend = LogMelSpectrogram(cfg)
    clip = torch.from_numpy(_signal(16000, seed=4)).unsqueeze(0)
    with torch.no_grad():
        absolute = frontend.absolute_db(clip)
        mel = MelSpectrogram(cfg)(clip)
    _assert_close(absolute, 10 * torch.log10(mel.clamp(min=cfg.log_floor)), atol=1e-4)
    _assert_close(clamp_to_peak(absolute, cfg), frontend(clip), atol=0.0)
    # Training augments absolute dB: a louder clip gives the same clamped picture.
    _assert_close(clamp_to_peak(absolute + 17.0, cfg), frontend(clip), atol=1e-4)
    # A boost of the top bands lifts them above the old floor; the floor follows the new peak.
    boosted = absolute.clone()
    boosted[:, -8:] += 20.0
    out = clamp_to_peak(boosted, cfg)
    assert out.max().item() == 0.0 and out.min().item() >= -40.0 - 1e-4
    assert out[:, -8:].mean() > clamp_to_peak(absolute, cfg)[:, -8:].mean()
    # Absolute dB is the whole story when neither option is set.
    plain = FeatureConfig()
    _assert_close(clamp_to_peak(absolute, plain), absolute, atol=0.0)


@pytest.mark.parametrize("power", [2.0, 1.0])
def test_preemphasis_matches_librosa_for_broadband_sound_and_lifts_the_top(power):
    sr = 8000
    noise = (0.1 * np.random.default_rng(5).standard_normal(sr)).astype(np.float32)
    settings = dict(sample_rate=sr, n_fft=512, win_length=256, hop_length=80, n_mels=40, f_min=20.0, f_max=4000.0, power=power)
    cfg = FeatureConfig(**settings, preemphasis=0.97)
    with torch.no_grad():
        ours = MelSpectrogram(cfg)(torch.from_numpy(noise)).numpy()
        flat = MelSpectrogram(FeatureConfig(**settings))(torch.from_numpy(noise)).numpy()
    # librosa filters the samples; specnet weights each FFT bin by the filter's response.
    expected = librosa.feature.melspectrogram(
        y=librosa.effects.preemphasis(noise, coef=0.97), sr=sr, n_fft=512, win_length=256, hop_length=80,
        n_mels=40, fmin=20.0, fmax=4000.0, pad_mode="reflect", power=power,
    )
    inner = slice(5, -5)  # the edge frames see the filter's start-up
    band_db = 10 * np.log10(ours[:, inner].mean(axis=1) / expected[:, inner].mean(axis=1))
    assert np.abs(band_db).max() < 0.3
    lift = 10 * np.log10(ours.mean(axis=1) / flat.mean(axis=1)) * (2 / power)  # per band, dB of power
    assert lift[-1] > 5.0 and lift[0] < -20.0 and np.all(np.diff(lift) > 0)
    with pytest.raises(ParameterError, match="preemphasis=1.0"):
        FeatureConfig(preemphasis=1.0)


def test_empty_mel_bands_are_one_warning_naming_the_options(caplog):
    import logging
    import warnings as w

    with caplog.at_level(logging.WARNING, logger="specnet"), w.catch_warnings():
        w.simplefilter("error")  # torchaudio's own warning must not get through
        LogMelSpectrogram(FeatureConfig(n_mels=1000))
    [record] = caplog.records
    assert record.getMessage().startswith("n_mels=1000 with n_fft=512: ") and "mel bands are narrower than one FFT bin" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specnet"):
        LogMelSpectrogram(FeatureConfig())
    assert caplog.records == []


def test_a_sample_rate_too_low_for_the_default_f_min_says_so():
    with pytest.raises(ParameterError, match=r"f_min=50.0 must be >= 0 and below f_max=50 \(half the sample rate of 100 Hz\)"):
        FeatureConfig(sample_rate=100, f_max=None)


def test_a_large_batch_computed_in_chunks_equals_its_rows_one_by_one():
    # 100 x 1 s at 16 kHz is over 2**21 spectrum bins, so the CPU path splits the batch in chunks.
    waves = torch.from_numpy((0.1 * np.random.default_rng(8).standard_normal((100, 16000))).astype(np.float32))
    mel = MelSpectrogram(FeatureConfig())
    with torch.no_grad():
        whole = mel(waves)
        one_by_one = torch.stack([mel(row) for row in waves[::9]])
    torch.testing.assert_close(whole[::9], one_by_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_fft", [512, 1024])
def test_the_front_end_stays_float32_under_a_callers_float16_autocast(n_fft):
    # A full-scale tone's FFT bins reach n_fft**2 / 16 (65,536 at 1024), past float16's largest
    # number (65,504): the mel matmul must not run in float16, or the peak-relative dB is inf - inf.
    config = FeatureConfig(sample_rate=16000, n_fft=n_fft, hop_length=160)
    tone = torch.from_numpy(np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32))[None]
    front_end = LogMelSpectrogram(config)
    expected = front_end(tone)
    with torch.autocast("cpu", dtype=torch.float16):
        logmel = front_end(tone)
    assert logmel.dtype == torch.float32 and torch.isfinite(logmel).all()
    torch.testing.assert_close(logmel, expected)


def test_the_front_end_runs_on_the_meta_device():
    # Shapes without memory (how model files are checked): no autocast context there.
    front_end = LogMelSpectrogram(FeatureConfig(sample_rate=16000)).to("meta")
    logmel = front_end(torch.zeros(2, 16000, device="meta"))
    assert logmel.device.type == "meta" and logmel.shape == (2, 64, FeatureConfig(sample_rate=16000).num_frames(16000))
