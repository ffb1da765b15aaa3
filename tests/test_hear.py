"""Tests for specnet/hear.py: the HEAR 2021 API, with every check hear-validator makes and more."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CUDA_RTOL

from specnet import hear
from specnet.errors import ModelFileError, ParameterError
from specnet.featureconfig import FeatureConfig
from specnet.modelfile import load_model_file, save_model_file
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec

SR = 16000
HEAR_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)
# Sound lengths in seconds: shorter than the pad, than one column, than the
# 1 s training clip; the clip; hear-validator's 1.07, 1.98, 2.74, 4.0.
LENGTHS = [1 / SR, 0.01, 0.05, 0.5, 1.0, 1.07, 1.98, 2.74, 4.0]


def _net(*, input_kind: str = "audio", seed: int = 0) -> SpecNet:
    spec = ModelSpec(
        arch="cnn_tiny", arch_args={}, input_kind=input_kind, classes=("a", "b", "c"),
        features=FeatureConfig() if input_kind == "audio" else None,
        clip_seconds=1.0 if input_kind == "audio" else None,
        image_size=None if input_kind == "audio" else (32, 32),
    )
    torch.manual_seed(seed)
    net = SpecNet(spec)
    if input_kind == "audio":
        with torch.no_grad():
            net.standardize.mean.fill_(-45.0)  # typical log-mel dB statistics, so features are O(1)
            net.standardize.std.fill_(20.0)
    return net.eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_model_file(_net(), tmp_path_factory.mktemp("hear") / "model.safetensors")


@pytest.fixture(scope="module")
def model(model_file) -> hear.HearModel:
    return hear.load_model(str(model_file))


def _noise(n_sounds: int, seconds: float, *, seed: int) -> torch.Tensor:
    """White noise in [-1, 1], as hear-validator makes it, float32 (n_sounds, n)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, max(1, int(seconds * SR)), generator=gen) * 2 - 1


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= rel * scale


# ------------------------------------------------------------------ load_model


def test_model_is_a_module_with_int_attributes(model):
    assert isinstance(model, torch.nn.Module)
    for name in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size"):
        value = getattr(model, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value > 0, name
    assert model.sample_rate == SR and model.sample_rate in HEAR_SAMPLE_RATES
    assert model.scene_embedding_size == 64  # cnn_tiny: 64 channels, no hidden layer
    assert model.timestamp_embedding_size == 64


def test_load_model_by_bundled_name(model_file, monkeypatch):
    import specnet.inference

    monkeypatch.setattr(specnet.inference, "bundled_models", lambda: {"mine": model_file})
    assert hear.load_model("mine").scene_embedding_size == 64


def test_load_model_default_is_the_bundled_esc10(monkeypatch, model_file):
    import specnet.inference

    monkeypatch.setattr(specnet.inference, "bundled_models", lambda: {"esc10": model_file})
    assert hear.load_model().sample_rate == SR
    monkeypatch.setattr(specnet.inference, "bundled_models", lambda: {})
    with pytest.raises(ModelFileError, match="esc10"):
        hear.load_model("")


def test_load_model_rejects_image_models_and_unknown_options(tmp_path, model_file):
    image_file = save_model_file(_net(input_kind="image"), tmp_path / "image.safetensors")
    with pytest.raises(ParameterError, match="audio model"):
        hear.load_model(str(image_file))
    with pytest.raises(ParameterError, match="colour"):
        hear.load_model(str(model_file), colour="red")
    assert hear.load_model(str(model_file), device="cpu").sample_rate == SR


# ------------------------------------------------------------------ scene embeddings


@pytest.mark.parametrize("seconds", LENGTHS)
def test_scene_embeddings_shape_dtype_and_batch_independence(model, seconds):
    audio = _noise(4, seconds, seed=int(seconds * 1000))
    embeddings = hear.get_scene_embeddings(audio, model)
    assert embeddings.shape == (4, model.scene_embedding_size)
    assert embeddings.dtype == torch.float32 and embeddings.device == audio.device
    assert torch.isfinite(embeddings).all()
    for i in range(4):
        _assert_close(hear.get_scene_embeddings(audio[i : i + 1], model)[0], embeddings[i])
    assert torch.equal(hear.get_scene_embeddings(audio, model), embeddings)  # deterministic
    assert not torch.allclose(embeddings[0], embeddings[1])  # depends on the sound


def test_scene_embedding_is_the_networks_pooled_pre_logits(model_file, model):
    net = load_model_file(model_file)
    audio = _noise(2, 2.5, seed=1)
    with torch.no_grad():
        expected = net.embed(audio, level="clip")
    _assert_close(hear.get_scene_embeddings(audio, model), expected)


def test_short_sounds_are_centred_in_a_training_clip(model_file, model):
    net = load_model_file(model_file)
    audio = _noise(1, 0.4, seed=2)
    padded = torch.nn.functional.pad(audio, (4800, 4800))  # 0.4 s centred in 1 s
    with torch.no_grad():
        expected = net.embed(padded, level="clip")
    _assert_close(hear.get_scene_embeddings(audio, model), expected)


def test_train_mode_does_not_change_embeddings(model):
    audio = _noise(2, 1.2, seed=3)
    expected = hear.get_scene_embeddings(audio, model)
    model.train()
    try:
        assert torch.equal(hear.get_scene_embeddings(audio, model), expected)
        assert model.training  # left as the caller set it
        assert model.net.training and all(m.training for m in model.net.modules())
    finally:
        model.eval()


def test_wrapping_a_network_in_training_mode_leaves_its_statistics_alone(model_file):
    import specnet

    net = specnet.load_model(str(model_file), device="cpu").net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wrapped = hear.HearModel(net)  # probes its sizes with a silent clip
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert not wrapped.training and not net.training


def test_embedding_leaves_the_model_in_eval_mode(model_file):
    # A fresh model is in eval mode, and embedding must not switch it (or its network) to
    # training: that would turn on dropout and overwrite the batch-norm statistics.
    fresh = hear.load_model(str(model_file))
    assert not fresh.training and not any(m.training for m in fresh.modules())
    audio = _noise(2, 1.0, seed=5)
    logits = fresh(audio)
    hear.get_scene_embeddings(audio, fresh)
    hear.get_timestamp_embeddings(audio, fresh)
    assert not any(m.training for m in fresh.modules())
    assert torch.equal(fresh(audio), logits)


def test_float64_audio_gives_float32(model):
    audio = _noise(2, 1.0, seed=4)
    embeddings = hear.get_scene_embeddings(audio.double(), model)
    assert embeddings.dtype == torch.float32
    _assert_close(embeddings, hear.get_scene_embeddings(audio, model))


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(16000), "shape"),
        (torch.zeros(2, 0), "shape"),
        (torch.zeros(2, 100, dtype=torch.int16), "floating point"),
        (torch.full((1, 100), float("nan")), "NaN"),
        # Finite, but a spectrogram's power overflows float32: NaN embeddings, as Model.embed refuses them.
        (torch.full((1, 100), 1e20), "^samples reach 1e\\+20, far beyond full scale"),
        (np.zeros((1, 100), dtype=np.float32), "torch.Tensor"),
    ],
)
def test_bad_audio_is_refused(model, audio, message):
    with pytest.raises(ParameterError, match=message):
        hear.get_scene_embeddings(audio, model)
    with pytest.raises(ParameterError, match=message):
        hear.get_timestamp_embeddings(audio, model)


# ------------------------------------------------------------------ timestamp embeddings


@pytest.mark.parametrize("seconds", LENGTHS)
def test_timestamp_embeddings_follow_the_hear_rules(model, seconds):
    audio = _noise(3, seconds, seed=int(seconds * 1000) + 7)
    duration_ms = audio.shape[1] * 1000 / SR
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert embeddings.device == timestamps.device == audio.device
    assert embeddings.ndim == 3 and timestamps.ndim == 2
    assert embeddings.shape[0] == 3 and embeddings.shape[2] == model.timestamp_embedding_size
    assert embeddings.shape[:2] == timestamps.shape and timestamps.shape[1] >= 1
    assert torch.isfinite(embeddings).all()
    assert (timestamps == timestamps[:1]).all()  # the same times for every sound
    times = timestamps[0].double().numpy()
    assert 0 <= times.min() and times.max() <= duration_ms  # inside the sound
    if len(times) > 1:
        spacing = model.net.frame_seconds * 1000
        assert np.abs(np.diff(times) - spacing).max() < 1e-3  # increasing, evenly spaced
        assert times[0] <= spacing  # the first one near the start
        assert times[-1] >= duration_ms - spacing  # and the last one near the end
    for i in range(3):
        alone, alone_times = hear.get_timestamp_embeddings(audio[i : i + 1], model)
        _assert_close(alone[0], embeddings[i])
        assert torch.equal(alone_times[0], timestamps[0])
    again, _ = hear.get_timestamp_embeddings(audio, model)
    assert torch.equal(again, embeddings)  # deterministic


def test_timestamps_are_frame_centres(model):
    # cnn_tiny pools 16 frames of 10 ms per column: column j pools frames 16j..16j+15,
    # centred on samples 160 t, so its centre is (16 j + 7.5) * 10 ms.
    _, timestamps = hear.get_timestamp_embeddings(_noise(1, 4.0, seed=5), model)
    expected = (16 * np.arange(timestamps.shape[1]) + 7.5) * 10.0
    assert timestamps.shape[1] == 25  # columns centred past 4000 ms are dropped
    np.testing.assert_allclose(timestamps[0].numpy(), expected, atol=1e-4)


def test_timestamp_embeddings_are_the_networks_frame_embeddings(model_file, model):
    net = load_model_file(model_file)
    audio = _noise(2, 3.0, seed=6)
    with torch.no_grad():
        expected = net.embed(audio, level="frame")
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape[1] <= expected.shape[1]
    _assert_close(embeddings, expected[:, : embeddings.shape[1]])


def test_a_sound_shorter_than_half_a_column_is_stamped_at_its_middle(model):
    audio = _noise(2, 0.01, seed=8)  # 10 ms; the first column is centred at 75 ms
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 1, model.timestamp_embedding_size)
    assert timestamps.tolist() == [[5.0], [5.0]]


def test_long_batches_are_embedded_in_chunks(model, monkeypatch):
    audio = _noise(5, 1.5, seed=9)
    expected_scene = hear.get_scene_embeddings(audio, model)
    expected_frames, expected_times = hear.get_timestamp_embeddings(audio, model)
    monkeypatch.setattr(hear, "CHUNK_SAMPLES", 2 * audio.shape[1])  # chunks of 2 rows
    _assert_close(hear.get_scene_embeddings(audio, model), expected_scene)
    frames, times = hear.get_timestamp_embeddings(audio, model)
    _assert_close(frames, expected_frames)
    assert torch.equal(times, expected_times)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_outputs_follow_the_audio_to_the_gpu(model_file):
    model = hear.load_model(str(model_file)).to("cuda")
    audio = _noise(2, 1.3, seed=10)
    scene = hear.get_scene_embeddings(audio.cuda(), model)
    frames, times = hear.get_timestamp_embeddings(audio.cuda(), model)
    assert scene.device.type == frames.device.type == times.device.type == "cuda"
    cpu_model = hear.load_model(str(model_file))
    _assert_close(scene.cpu(), hear.get_scene_embeddings(audio, cpu_model), rel=CUDA_RTOL)


# ------------------------------------------------------------------ the official validator


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hearvalidator") is None, reason="hearvalidator is not installed")
def test_hear_validator_accepts_the_module(model_file):
    # A separate process: the validator imports tensorflow, which should not share this one.
    result = subprocess.run(
        [sys.executable, "-m", "hearvalidator.validate", "specnet.hear", "--model", str(model_file), "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Looks good!" in result.stdout
