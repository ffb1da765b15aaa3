"""Tests for specnet/export.py: ONNX export with the log-mel front-end inside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import specnet
from specnet.errors import ParameterError, SpecnetError
from specnet.export import ConvLogMel, _check_adaptive_pools, export_onnx
from specnet.features import LogMelSpectrogram
from specnet.featureconfig import FeatureConfig
from specnet.modelfile import load_model_file, save_model_file
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SR = 16000
CLASSES = ("bark", "rain", "siren")


def _randomize(net: SpecNet, *, seed: int) -> SpecNet:
    """Give an untrained network non-trivial statistics, so its logits are O(1) and differ per input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
        net.backbone.head.fc.weight.copy_(torch.randn(net.backbone.head.fc.weight.shape, generator=gen))
        if net.frontend is not None:
            net.standardize.mean.fill_(-45.0)  # typical log-mel dB statistics
            net.standardize.std.fill_(20.0)
    return net.eval()


def _audio_net(features: FeatureConfig | None = None, *, seed: int = 0, in_chans: int = 1, **arch_args) -> SpecNet:
    spec = ModelSpec(
        arch="cnn_tiny", arch_args=arch_args, input_kind="audio", classes=CLASSES, in_chans=in_chans,
        features=features or FeatureConfig(), clip_seconds=1.0,
    )
    torch.manual_seed(seed)
    return _randomize(SpecNet(spec), seed=seed)


def _audio(batch: int, seconds: float, *, seed: int, sr: int = SR) -> torch.Tensor:
    """Tones at different pitches plus noise, float32 (batch, n)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    rows = [0.4 * np.sin(2 * np.pi * (220 * (i + 1)) * t) + 0.05 * rng.standard_normal(len(t)) for i in range(batch)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    return save_model_file(_audio_net(seed=1), path)


@pytest.fixture(scope="module")
def exported(model_file: Path) -> Path:
    return export_onnx(model_file, model_file.with_suffix(".onnx"))


@pytest.fixture(scope="module")
def session(exported: Path):
    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seconds", [0.7, 2.3])
def test_onnx_logits_match_pytorch(model_file, session, batch, seconds):
    net = load_model_file(model_file)
    audio = _audio(batch, seconds, seed=batch)
    with torch.no_grad():
        expected = net(audio).numpy()
    (logits,) = session.run(None, {"samples": audio.numpy()})
    assert logits.shape == (batch, len(CLASSES)) and logits.dtype == np.float32
    assert np.abs(expected).max() > 0.5  # a real check, not two near-zero vectors
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.parametrize("samples", [1, 100, 256, 257, 4000])
def test_onnx_handles_clips_shorter_than_the_pad(model_file, session, samples):
    # Reflect padding needs more than n_fft // 2 = 256 samples; shorter clips are zero-padded.
    net = load_model_file(model_file)
    audio = _audio(2, samples / SR, seed=samples)
    with torch.no_grad():
        expected = net(audio).numpy()
    (logits,) = session.run(None, {"samples": audio.numpy()})
    assert np.abs(logits - expected).max() <= 1e-4


def test_onnx_graph_has_dynamic_axes_and_metadata(exported):
    model = onnx.load(str(exported))
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "samples" and graph_output.name == "logits"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch", "time"]
    dims = graph_output.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == len(CLASSES)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == list(CLASSES)
    assert json.loads(props["features"]) == FeatureConfig().to_dict()
    assert props["sample_rate"] == "16000"
    meta = json.loads(props["specnet"])
    assert meta["arch"] == "cnn_tiny" and meta["clip_seconds"] == 1.0
    assert not any(node.op_type == "STFT" for node in model.graph.node)


@pytest.mark.parametrize("seconds", [0.43, 1.0, 3.7])
def test_the_documented_windowing_gives_classifys_probabilities(model_file, exported, session, seconds):
    # What the "input" metadata tells an ONNX user to do, in plain NumPy, against specnet's own scores.
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert ("mean softmax of such windows every 0.5 s, the last ending at the clip's end, leaving out windows of "
            "digital silence (no sample above -90 dBFS) unless all are") in props["input"]
    clip = round(json.loads(props["specnet"])["clip_seconds"] * SR)
    samples = _audio(1, seconds, seed=7)[0].numpy()
    if len(samples) <= clip:
        start = (clip - len(samples)) // 2
        windows = np.zeros((1, clip), np.float32)
        windows[0, start : start + len(samples)] = samples
    else:
        starts = list(range(0, len(samples) - clip + 1, clip // 2))
        if starts[-1] + clip < len(samples):
            starts.append(len(samples) - clip)
        windows = np.stack([samples[s : s + clip] for s in starts])
    (logits,) = session.run(None, {"samples": windows})
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    onnx_scores = (softmax / softmax.sum(1, keepdims=True)).mean(0)
    [prediction] = specnet.load_model(model_file, device="cpu").predict(samples, sample_rate=SR)
    np.testing.assert_allclose(onnx_scores, prediction.probabilities, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"pad_mode": "constant"}, id="constant"),
        pytest.param({"pad_mode": "replicate"}, id="replicate"),
        pytest.param({"pad_mode": "circular"}, id="circular"),
        pytest.param({"center": False}, id="no-center"),
        pytest.param({"win_length": 400, "power": 1.0}, id="win400-magnitude"),
        pytest.param({"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 128, "f_max": None},
                     id="22k"),
    ],
)
def test_conv_front_end_equals_stft_front_end(settings):
    cfg = FeatureConfig(**settings)
    stft_version = LogMelSpectrogram(cfg)
    conv_version = ConvLogMel(stft_version)
    lengths = [cfg.n_fft, 3 * cfg.n_fft + 7, cfg.sample_rate] + ([1, cfg.n_fft // 2, cfg.n_fft // 2 + 1] if cfg.center else [])
    for n in lengths:
        audio = _audio(2, n / cfg.sample_rate, seed=n, sr=cfg.sample_rate)
        expected, actual = stft_version(audio), conv_version(audio)
        assert actual.shape == expected.shape == (2, cfg.n_mels, cfg.num_frames(n))
        assert (actual - expected).abs().max().item() <= 1e-3  # dB; float32 DFT vs FFT rounding


@pytest.mark.parametrize("settings", [{"pad_mode": "circular"}, {"center": False}, {"pad_mode": "constant"}])
def test_onnx_matches_for_other_padding(tmp_path, settings):
    net = _audio_net(FeatureConfig(**settings), seed=2)
    path = export_onnx(net, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in ([100, 1000, 11200] if net.spec.features.center else [512, 11200]):
        audio = _audio(3, n / SR, seed=n)
        with torch.no_grad():
            expected = net(audio).numpy()
        assert np.abs(sess.run(None, {"samples": audio.numpy()})[0] - expected).max() <= 1e-4


def test_three_channel_audio_model_exports(tmp_path):
    net = _audio_net(seed=3, in_chans=3)
    path = export_onnx(net, tmp_path / "m.onnx")
    audio = _audio(2, 1.3, seed=3)
    with torch.no_grad():
        expected = net(audio).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"samples": audio.numpy()})[0] - expected).max() <= 1e-4


def test_frequency_band_pooling_exports_for_any_length(tmp_path):
    # 64 mels pool to 4 rows; 3 bands split them unevenly (rows 0-1, 1-3, 2-4), as adaptive pooling would.
    net = _audio_net(seed=6, freq_bands=3)
    path = export_onnx(net, tmp_path / "bands.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seconds in (0.4, 1.0, 2.7):
        audio = _audio(2, seconds, seed=7)
        with torch.no_grad():
            expected = net(audio).numpy()
        assert np.abs(sess.run(None, {"samples": audio.numpy()})[0] - expected).max() <= 1e-4


def test_image_model_exports_with_image_input(tmp_path):
    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=CLASSES, in_chans=3, image_size=(32, 40))
    torch.manual_seed(4)
    net = _randomize(SpecNet(spec), seed=4)
    path = export_onnx(net, tmp_path / "image.onnx")
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "images"
    assert [dims[0].dim_param] + [d.dim_value for d in dims[1:]] == ["batch", 3, 32, 40]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        images = torch.rand(batch, 3, 32, 40)
        with torch.no_grad():
            expected = net(images).numpy()
        assert np.abs(sess.run(None, {"images": images.numpy()})[0] - expected).max() <= 1e-4


def test_adaptive_pools_are_refused_before_the_exporter_fails():
    # VGG's "imagenet" head pools adaptively to 7 x 7; the exporter only writes fixed pools.
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((7, 7)))
    _check_adaptive_pools(pool, torch.zeros(1, 3, 14, 28), source="m", dynamic_time=False)
    with pytest.raises(SpecnetError, match=r"maps \(4, 4\) to \(7, 7\)"):
        _check_adaptive_pools(pool, torch.zeros(1, 3, 4, 4), source="m", dynamic_time=False)
    with pytest.raises(SpecnetError, match="audio model with adaptive pooling"):
        _check_adaptive_pools(pool, torch.zeros(1, 3, 14, 14), source="m", dynamic_time=True)


def test_a_non_finite_number_in_metadata_is_exported_as_null(tmp_path):
    # A metric that training recorded as NaN was written as bare NaN: not JSON to a strict reader.
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    net = _audio_net(seed=5)
    net.spec = net.spec.with_extra(metrics={"val_loss": float("nan"), "range": [0.5, float("inf")]})
    props = {p.key: p.value for p in onnx.load(str(export_onnx(net, tmp_path / "nan.onnx"))).metadata_props}
    assert json.loads(props["specnet"], parse_constant=refuse)["metrics"] == {"val_loss": None, "range": [0.5, None]}
    assert json.loads(props["features"], parse_constant=refuse) == FeatureConfig().to_dict()


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    net = _audio_net(seed=5).train()
    export_onnx(net, tmp_path / "m.onnx")
    assert net.training


def test_a_loaded_and_adapted_model_exports_as_it_classifies(model_file, tmp_path):
    model = specnet.load_model(model_file, device="cpu")
    clips = _audio(6, 1.0, seed=11).numpy()
    model.adapt(list(clips), sample_rate=SR)  # in place, not saved
    target = specnet.export_onnx(model, tmp_path / "adapted.onnx")
    session = ort.InferenceSession(str(target))
    samples = _audio(3, model.config.clip_seconds, seed=12)
    (logits,) = session.run(None, {"samples": samples.numpy()})
    np.testing.assert_allclose(logits, model.net(samples).detach().numpy(), atol=1e-4, rtol=1e-4)
    metadata = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert json.loads(metadata["specnet"])["adapted"]["windows"] == 6


def test_existing_output_needs_overwrite(model_file, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(SpecnetError, match="already exists"):
        export_onnx(model_file, target)
    assert target.read_bytes() == b"old"
    export_onnx(model_file, target, overwrite=True)
    assert onnx.load(str(target)).graph.output[0].name == "logits"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left behind
    with pytest.raises(SpecnetError, match=r"m.model: ONNX models are written as .onnx files: name the output \*.onnx$"):
        export_onnx(model_file, tmp_path / "m.model")


def test_missing_onnx_package_is_a_clear_error(model_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    # "pip install specnet[onnx]" fails for a source install, and in zsh unquoted
    with pytest.raises(SpecnetError, match=r"^ONNX export needs the onnx package: pip install onnx \(onnxruntime too"):
        export_onnx(model_file, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_an_exporter_error_without_a_message_is_named_by_its_type(model_file, tmp_path, monkeypatch):
    import torch

    def bare_assert(*args, **kwargs):
        raise AssertionError()  # as a bare `assert` inside torch's exporter raises

    monkeypatch.setattr(torch.onnx, "export", bare_assert)
    with pytest.raises(SpecnetError, match=r"ONNX export of 'cnn_tiny' failed \(opset \d+\): AssertionError$"):
        export_onnx(model_file, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_opset_and_missing_model(model_file, tmp_path):
    with pytest.raises(ParameterError, match="opset=7"):
        export_onnx(model_file, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ParameterError, match="opset=True"):
        export_onnx(model_file, tmp_path / "m.onnx", opset=True)
    with pytest.raises(SpecnetError, match="not found"):
        export_onnx(tmp_path / "nope.safetensors", tmp_path / "m.onnx")


def test_cli_export(model_file, tmp_path, capsys):
    from specnet.cli import main

    target = tmp_path / "cli.onnx"
    main(["export", str(model_file), "--format", "onnx", "-o", str(target)])
    assert f"wrote {target}" in capsys.readouterr().err
    props = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert json.loads(props["classes"]) == list(CLASSES)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(model_file), "-o", str(target)])
    assert exit_info.value.code == 1
    assert "already exists" in capsys.readouterr().err

