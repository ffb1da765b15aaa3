"""Tests for specnet/modelfile.py: safetensors model files, round trips and refusals."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from specnet.errors import ModelFileError, SpecnetError
from specnet.featureconfig import FeatureConfig
from specnet.modelfile import load_model_file, save_model_file
from specnet.modelspec import FORMAT_VERSION, spec_to_metadata
from specnet.catalog import METADATA_KEY, read_metadata
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec


def _spec(arch: str = "cnn_tiny", **extra) -> ModelSpec:
    return ModelSpec(arch=arch, arch_args={}, input_kind="audio", classes=("a", "b"),
                     features=FeatureConfig(), clip_seconds=1.0, extra=extra)


def _trained_looking(spec: ModelSpec) -> SpecNet:
    """A model whose weights, batch-norm statistics and standardisation are not the defaults."""
    torch.manual_seed(0)
    model = SpecNet(spec)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
        model.standardize.mean.fill_(-40.0)
        model.standardize.std.fill_(12.0)
    return model.eval()


def _write_with_metadata(path: Path, model: SpecNet, meta: dict | str | None) -> Path:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    text = meta if isinstance(meta, str) or meta is None else json.dumps(meta)
    save_file(state, str(path), metadata=None if text is None else {METADATA_KEY: text})
    return path


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    spec = _spec(dataset="fsdd", metrics={"accuracy": 0.99, "macro_f1": 0.98}, license="CC-BY-4.0")
    model = _trained_looking(spec)
    path = save_model_file(model, tmp_path / "m.safetensors")
    assert path == tmp_path / "m.safetensors"
    loaded = load_model_file(path)
    assert not loaded.training
    assert loaded.spec == spec
    assert loaded.spec.extra == {"dataset": "fsdd", "metrics": {"accuracy": 0.99, "macro_f1": 0.98},
                                 "license": "CC-BY-4.0"}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.embed(x), model.embed(x))
    meta = read_metadata(path)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["features"] == FeatureConfig().to_dict()
    assert meta["classes"] == ["a", "b"] and meta["arch"] == "cnn_tiny" and meta["clip_seconds"] == 1.0


def test_a_model_in_a_folder_whose_name_is_not_utf8_loads(tmp_path):
    # safetensors' torch reader refused the name: "internal error SafetensorError: Path ... is not valid UTF-8".
    folder = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")  # as sys.argv holds it
    model = _trained_looking(_spec())
    path = save_model_file(model, Path(folder) / "m.safetensors")
    loaded = load_model_file(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_loading_checks_shapes_without_drawing_weights(tmp_path):
    """The shape check builds the backbone on the meta device with no random draws there, which
    would import torch's compiler (seconds and 150 MB on every load), and loads VGG files too."""
    import subprocess
    import sys

    for arch in ("cnn_tiny", "vgg11"):
        spec = ModelSpec(arch=arch, arch_args={}, input_kind="audio", classes=("a", "b"), features=FeatureConfig(n_mels=32), clip_seconds=1.0)
        save_model_file(SpecNet(spec), tmp_path / f"{arch}.safetensors")
    files = [str(tmp_path / f"{arch}.safetensors") for arch in ("cnn_tiny", "vgg11")]
    code = ("import sys; from specnet.modelfile import load_model_file; "
            f"[load_model_file(f) for f in {files!r}]; "
            "assert 'torch._dynamo' not in sys.modules, 'the compiler was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_metadata_is_plain_json():
    meta = spec_to_metadata(_spec(dataset="x"))
    assert json.loads(json.dumps(meta)) == meta
    assert meta["dataset"] == "x" and meta["input_kind"] == "audio" and meta["in_chans"] == 1


def refuse_constant(constant: str):
    raise ValueError(f"{constant} is not JSON")  # json.loads reads bare NaN and Infinity; other readers refuse them


def test_a_non_finite_number_in_metadata_is_saved_as_null(tmp_path):
    # json.dumps wrote a NaN metric as bare NaN in the file's header: not JSON to any reader but Python's.
    from safetensors import safe_open

    spec = _spec(metrics={"val_loss": float("nan"), "range": [0.5, float("inf")], "low": -float("inf")})
    path = save_model_file(_trained_looking(spec), tmp_path / "nan.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        document = json.loads(handle.metadata()[METADATA_KEY], parse_constant=refuse_constant)
    assert document["metrics"] == {"val_loss": None, "range": [0.5, None], "low": None}
    assert load_model_file(path).spec.extra["metrics"] == document["metrics"]


def test_image_model_round_trip(tmp_path):
    spec = ModelSpec(arch="cnn_tiny", arch_args={"drop_rate": 0.1}, input_kind="image", classes=("x", "y", "z"),
                     in_chans=3, image_size=(32, 32))
    model = SpecNet(spec).eval()
    loaded = load_model_file(save_model_file(model, tmp_path / "img.safetensors"))
    assert loaded.spec == spec and loaded.spec.image_size == (32, 32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_saved_file_is_atomic_and_refuses_overwrite(tmp_path):
    model = SpecNet(_spec())
    path = save_model_file(model, tmp_path / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temp file left behind
    before = path.read_bytes()
    with pytest.raises(SpecnetError, match="already exists"):
        save_model_file(SpecNet(_spec("cnn_small")), path, overwrite=False)
    assert path.read_bytes() == before
    save_model_file(SpecNet(_spec(note="second")), path, overwrite=True)
    assert read_metadata(path)["note"] == "second"
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_a_model_loading_would_refuse_is_not_saved(tmp_path):
    # Built in Python with classes no model file may hold: refused before anything is written,
    # where it was saved as a file that no command could then read.
    for classes, problem in ((("a", " "), r"class 1 in 'classes' has an empty or blank name \(' '\)"),
                             (("a", "a"), "'classes' names a class twice")):
        path = tmp_path / "m.safetensors"
        with pytest.raises(ModelFileError, match=rf"^{path}: not saved: {problem}$"):
            save_model_file(SpecNet(replace(_spec(), classes=classes)), path)
        assert not path.exists() and os.listdir(tmp_path) == []


def test_refuses_torch_save_pickle(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": SpecNet(_spec()).state_dict()}, path)
    with pytest.raises(ModelFileError, match="pickle") as err:
        load_model_file(path)
    assert "safetensors" in str(err.value) and str(path) in str(err.value)


class _Malicious:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Malicious(marker), protocol=protocol)
    pickle.loads(payload)  # prove the payload works...
    assert marker.exists()
    marker.unlink()  # ...then make sure loading the model file never runs it
    path = tmp_path / "evil.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ModelFileError):
        load_model_file(path)
    with pytest.raises(ModelFileError):
        read_metadata(path)
    assert not marker.exists()


def test_refuses_safetensors_without_specnet_metadata(tmp_path):
    path = _write_with_metadata(tmp_path / "plain.safetensors", SpecNet(_spec()), None)
    with pytest.raises(ModelFileError, match="no specnet metadata"):
        load_model_file(path)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="no specnet metadata"):
        load_model_file(tmp_path / "other.safetensors")


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"arch": "cnn_tiny"}', "no integer format_version"),
    ('{"format_version": 1' + "0" * 5000 + "}", "cannot be read: it holds a number of thousands of digits"),
    ("[" * 100_000 + "]" * 100_000, "cannot be read: .* nested thousands deep"),
])
def test_refuses_malformed_metadata(tmp_path, text, message):
    path = _write_with_metadata(tmp_path / "bad.safetensors", SpecNet(_spec()), text)
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path)


def test_refuses_newer_format_version(tmp_path):
    model = SpecNet(_spec())
    meta = {**spec_to_metadata(model.spec), "format_version": FORMAT_VERSION + 1}
    path = _write_with_metadata(tmp_path / "future.safetensors", model, meta)
    with pytest.raises(ModelFileError, match=f"version {FORMAT_VERSION + 1} is newer.*upgrade specnet"):
        load_model_file(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"classes": []}, "non-empty list"),
    ({"input_kind": "video"}, "input_kind 'video'"),
    ({"arch_args": [1]}, "'arch_args' must be an object"),
    ({"features": {"n_fft": 0}}, "bad feature settings: n_fft=0"),
    ({"features": {"n_fftt": 512}}, "bad feature settings: unknown feature setting"),
    ({"features": None}, "audio model needs feature settings"),
    ({"features": "n_fft"}, "'features' must be an object or null"),
    ({"features": [512]}, "'features' must be an object or null"),
    ({"arch": "resnet9000"}, "cannot build 'resnet9000'"),
])
def test_refuses_bad_spec_fields(tmp_path, change, message):
    model = SpecNet(_spec())
    meta = {**spec_to_metadata(model.spec), **change}
    path = _write_with_metadata(tmp_path / "bad.safetensors", model, meta)
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path)


def test_refuses_missing_core_keys(tmp_path):
    model = SpecNet(_spec())
    meta = spec_to_metadata(model.spec)
    del meta["arch"], meta["classes"]
    path = _write_with_metadata(tmp_path / "bad.safetensors", model, meta)
    with pytest.raises(ModelFileError, match="lacks arch, classes"):
        load_model_file(path)


def test_refuses_weights_of_another_architecture(tmp_path):
    tiny = SpecNet(_spec("cnn_tiny"))
    meta = spec_to_metadata(_spec("cnn_small"))
    path = _write_with_metadata(tmp_path / "mixed.safetensors", tiny, meta)
    with pytest.raises(ModelFileError, match="do not match the declared architecture") as err:
        load_model_file(path)
    assert "has shape" in str(err.value) and "cnn_small needs" in str(err.value)


def test_a_model_with_a_nan_weight_is_neither_saved_nor_loaded(tmp_path):
    model = _trained_looking(_spec())
    with torch.no_grad():
        model.backbone.features[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelFileError, match=r"not saved: backbone\.features\.0\.conv1\.weight holds non-finite"):
        save_model_file(model, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()
    # A file someone else wrote with an infinite batch-norm statistic.
    model = _trained_looking(_spec())
    model.backbone.features[0].bn1.running_var.fill_(float("inf"))
    path = _write_with_metadata(tmp_path / "inf.safetensors", model, spec_to_metadata(model.spec))
    with pytest.raises(ModelFileError, match=r"inf\.safetensors: backbone\.features\.0\.bn1\.running_var holds non-finite"):
        load_model_file(path)


def test_refuses_missing_and_unexpected_keys(tmp_path):
    model = SpecNet(_spec())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.pop("standardize.mean")
    state["extra.weight"] = torch.zeros(1)
    meta = json.dumps(spec_to_metadata(model.spec))
    save_file(state, str(tmp_path / "keys.safetensors"), metadata={METADATA_KEY: meta})
    with pytest.raises(ModelFileError, match=r"missing standardize\.mean; unexpected extra\.weight"):
        load_model_file(tmp_path / "keys.safetensors")


def test_refuses_missing_file_directory_and_tiny_files(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model_file(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match=r"is a directory, not a model file$"):
        load_model_file(tmp_path)
    # A training run's folder: its model is named, as a user who passed the run meant it.
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"x" * 16)
    with pytest.raises(ModelFileError, match=rf"^{run}: is a directory, not a model file; the model of a training run in it is {run}/model.safetensors$"):
        load_model_file(run)
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(ModelFileError, match="too short"):
        load_model_file(tmp_path / "tiny.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match="too short"):
        load_model_file(tmp_path / "empty.safetensors")


def test_refuses_garbage_and_truncated_safetensors(tmp_path):
    (tmp_path / "text.safetensors").write_text("hello, this is not a model at all")
    with pytest.raises(ModelFileError, match="not a safetensors model file"):
        load_model_file(tmp_path / "text.safetensors")
    good = save_model_file(SpecNet(_spec()), tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError):
        load_model_file(tmp_path / "cut.safetensors")
    header_len = struct.unpack("<Q", good[:8])[0]
    (tmp_path / "header.safetensors").write_bytes(good[: 8 + header_len // 2])
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load_model_file(tmp_path / "header.safetensors")


# ---------------------------------------------------------------- sanity limits on the metadata

_F = FeatureConfig().to_dict()  # 16 kHz, n_fft 512, hop 160, 64 mels


def _absurd_file(tmp_path: Path, name: str, change: dict) -> Path:
    """A real model file whose metadata has ``change`` applied (image models for image_size)."""
    spec = _spec()
    if "image_size" in change:
        spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=("a", "b"), in_chans=3,
                         image_size=(32, 32))
    model = SpecNet(spec)
    meta = {**spec_to_metadata(spec), **change}
    return _write_with_metadata(tmp_path / f"{name}.safetensors", model, meta)


ABSURD = [
    # Before the limits each of the first four allocated gigabytes or hung while loading.
    pytest.param({"features": {**_F, "n_mels": 10**9}}, "bad feature settings: n_mels=1000000000 must be an integer in [1, 1024]", id="n_mels-1e9"),
    pytest.param({"features": {**_F, "n_fft": 2**30}}, "bad feature settings: n_fft=1073741824 must be an integer in [1, 65536]", id="n_fft-2^30"),
    pytest.param({"clip_seconds": 1e-9}, "clip_seconds=1e-09 is shorter than one FFT window (512 samples = 0.032 s at 16000 Hz)", id="clip-1e-9"),
    pytest.param({"classes": [f"c{i}" for i in range(100_001)]}, "'classes' names 100001 classes; a model may have at most 100000", id="classes"),
    pytest.param({"features": {**_F, "n_mels": 1025}}, "bad feature settings: n_mels=1025 must be an integer in [1, 1024]", id="n_mels"),
    pytest.param({"features": {**_F, "n_fft": 65537, "hop_length": 160}}, "bad feature settings: n_fft=65537 must be an integer in [1, 65536]", id="n_fft"),
    pytest.param({"features": {**_F, "sample_rate": 768_001}}, "bad feature settings: sample_rate=768001 must be an integer in [1, 768000]", id="sample_rate"),
    pytest.param({"features": {**_F, "sample_rate": 10**12}}, "bad feature settings: sample_rate=1000000000000 must be", id="sample_rate-1e12"),
    pytest.param({"features": {**_F, "hop_length": 513}}, "bad feature settings: hop_length=513 must be an integer in [1, n_fft=512]", id="hop_length"),
    pytest.param({"features": {**_F, "hop_length": 10**15}}, "bad feature settings: hop_length=1000000000000000 must be", id="hop_length-1e15"),
    pytest.param({"features": {**_F, "win_length": 513}}, "bad feature settings: win_length=513 must be an integer in (0, n_fft=512]", id="win_length"),
    pytest.param({"clip_seconds": 511 / 16000}, "clip_seconds=0.0319375 is shorter than one FFT window", id="clip-one-sample-short"),
    pytest.param({"features": {**_F, "win_length": 256, "center": False}, "clip_seconds": 300 / 16000},
                 "clip_seconds=0.01875 is shorter than one FFT window (512 samples", id="clip-uncentred-needs-n_fft"),
    pytest.param({"clip_seconds": 300.5}, "clip_seconds=300.5 must be at most 300 s", id="clip-long"),
    pytest.param({"clip_seconds": 1e300}, "clip_seconds=1e+300 must be at most 300 s", id="clip-1e300"),
    pytest.param({"clip_seconds": None}, "an audio model needs clip_seconds", id="clip-null"),
    pytest.param({"in_chans": 65}, "in_chans=65 must be a positive integer, at most 64", id="in_chans"),
    pytest.param({"in_chans": 10**9}, "in_chans=1000000000 must be a positive integer, at most 64", id="in_chans-1e9"),
    pytest.param({"image_size": [4097, 32]}, "image_size=[4097, 32] must be [height, width] in pixels (each at most 4096)", id="image_height"),
    pytest.param({"image_size": [32, 10**9]}, "image_size=[32, 1000000000] must be [height, width] in pixels (each at most 4096)", id="image_width"),
    pytest.param({"image_size": None}, "an image model needs image_size (the [height, width] its images are resized to)", id="image-size-null"),
    # Before these were checked: a TypeError ("internal error"), an ImageNet download, a torch.load of any path.
    pytest.param({"arch": ["cnn"]}, "'arch' must be the name of an architecture, got ['cnn']", id="arch-list"),
    pytest.param({"arch_args": {"num_classes": 5}}, "'arch_args' may not set num_classes", id="arch_args-num_classes"),
    pytest.param({"arch": "vgg11", "arch_args": {"pretrained": True}}, "'arch_args' may not set pretrained", id="pretrained"),
    pytest.param({"arch": "vgg11", "arch_args": {"weights": "/etc/passwd"}}, "'arch_args' may not set weights", id="weights"),
    pytest.param({"arch_args": {"channels": "abc"}}, "cannot build 'cnn_tiny': channels='abc' must be a sequence of block widths, such as (16, 32, 64, 128)", id="channels-str"),
    pytest.param({"arch_args": {"hidden_dim": [0]}}, "cannot build 'cnn_tiny': hidden_dim=0 must be", id="hidden_dim-0"),
    # Before the limits on depth and width: 20000 convs took a minute and 1.2 GB to build on the meta
    # device, and 10**12 channels overflowed torch's storage size ("internal error RuntimeError").
    pytest.param({"arch_args": {"n_convs": 20_000}}, "cannot build 'cnn_tiny': n_convs=20000 must be an integer in [1, 16]", id="n_convs"),
    pytest.param({"arch_args": {"channels": [8] * 17}}, "cannot build 'cnn_tiny': channels names 17 conv blocks; at most 16", id="blocks"),
    pytest.param({"arch_args": {"channels": [10**12]}}, "cannot build 'cnn_tiny': channels=1000000000000 must be an integer in [1, 65536]", id="channels-1e12"),
    pytest.param({"arch_args": {"hidden_dim": [8] * 17}}, "cannot build 'cnn_tiny': hidden_dim names 17 dense layers; at most 16", id="hidden-layers"),
    pytest.param({"arch_args": {"hidden_dim": 10**12, "freq_bands": 4}}, "cannot build 'cnn_tiny': hidden_dim=1000000000000 must be an integer in [1, 65536]", id="hidden_dim-1e12"),
    pytest.param({"arch_args": {"freq_bands": 10**12}}, "cannot build 'cnn_tiny': freq_bands=1000000000000 must be an integer in [1, 1024]", id="freq_bands-1e12"),
    # 40000 channels: 58 GB of weights were allocated before the file's own were compared.
    pytest.param({"arch_args": {"channels": [40_000]}}, "backbone.features.0.bn1.bias has shape (8,), cnn_tiny needs (40000,)", id="channels-huge"),
]


@pytest.mark.parametrize(("change", "message"), ABSURD)
def test_absurd_metadata_is_one_line_naming_file_and_field_and_prompt(tmp_path, change, message):
    path = _absurd_file(tmp_path, "absurd", change)
    with pytest.raises(ModelFileError) as err:  # refused before anything is built from the numbers
        load_model_file(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_declared_network_larger_than_the_file_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    # The declared backbone is built on the meta device first: nothing as big as it says is allocated.
    path = _absurd_file(tmp_path, "huge", {"arch_args": {"channels": [40_000, 40_000]}})
    import specnet.modelfile as modelfile

    built = []
    monkeypatch.setattr(modelfile, "SpecNet", lambda spec: built.append(spec) or SpecNet(spec))
    with pytest.raises(ModelFileError, match="weights do not match the declared architecture"):
        load_model_file(path)
    assert built == []


def test_absurd_metadata_is_one_line_from_the_cli(tmp_path, capsys):
    from helpers import make_tone

    from specnet.cli import main

    clip = make_tone(tmp_path / "clip.wav", 440.0, 0.3, 16000)
    for name, change, named in [("mels", {"features": {**_F, "n_mels": 10**9}}, "n_mels=1000000000"),
                                 ("fft", {"features": {**_F, "n_fft": 2**30}}, "n_fft=1073741824"),
                                 ("clip", {"clip_seconds": 1e-9}, "clip_seconds=1e-09")]:
        path = _absurd_file(tmp_path, name, change)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(["classify", "-m", str(path), str(clip)])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and named in err, err


def test_largest_legitimate_values_still_load(tmp_path):
    # Audio at every feature limit at once: 768 kHz, n_fft = hop = 65536, 1024 mels, one-hour clips.
    # The weights of a 1024-mel model at the default FFT size fit (the filterbank is not saved).
    biggest = {"sample_rate": 768_000, "n_fft": 65_536, "win_length": 65_536, "hop_length": 65_536, "n_mels": 1024,
               "f_min": 0.0, "f_max": None}
    small = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b"),
                      features=FeatureConfig(n_mels=1024), clip_seconds=1.0)
    meta = {**spec_to_metadata(small), "features": {**_F, **biggest}, "clip_seconds": 300}
    loaded = load_model_file(_write_with_metadata(tmp_path / "audio.safetensors", SpecNet(small), meta))
    assert loaded.spec.features == FeatureConfig(**biggest) and loaded.spec.clip_seconds == 300
    assert loaded.frontend.filterbank.shape == (1024, 65_536 // 2 + 1)
    # The shortest clip: exactly one FFT window (512 samples at 16 kHz; 256 with a 256-sample Hann window).
    for features, seconds in [(_F, 512 / 16000), ({**_F, "win_length": 256}, 256 / 16000),
                              ({**_F, "win_length": 256, "center": False}, 512 / 16000)]:
        meta = {**spec_to_metadata(_spec()), "features": features, "clip_seconds": seconds}
        path = _write_with_metadata(tmp_path / "short.safetensors", SpecNet(_spec()), meta)
        assert load_model_file(path).spec.clip_samples == round(seconds * 16000)
    # Images: 100000 classes, 64 channels, 4096 x 4096 pixels.
    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=tuple(f"c{i}" for i in range(100_000)),
                     in_chans=64, image_size=(4096, 4096))
    loaded = load_model_file(save_model_file(SpecNet(spec), tmp_path / "image.safetensors"))
    assert loaded.spec == spec


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_as_model_file_is_refused_without_waiting(tmp_path):
    import threading

    pipe = tmp_path / "model.safetensors"
    os.mkfifo(pipe)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(read_metadata, pipe)), daemon=True)
    reader.start()
    reader.join(10)  # a hang guard, not a timing: open() on a pipe waits for a writer forever
    if reader.is_alive():
        with open(pipe, "wb"):  # let the stuck reader go
            pass
        pytest.fail("reading a named pipe as a model file blocked")
    assert outcome == [f"{pipe}: not a regular file (a named pipe)"]


def _error_of(function, *args) -> str | None:
    try:
        function(*args)
    except ModelFileError as exc:
        return str(exc)
    return None


def test_weight_shapes_are_checked_from_the_header(tmp_path):
    from safetensors import safe_open

    from specnet.modelfile import check_weight_shapes
    from specnet.catalog import read_metadata

    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b"), features=FeatureConfig(n_mels=32), clip_seconds=1.0)
    good = save_model_file(SpecNet(spec), tmp_path / "good.safetensors")
    check_weight_shapes(good)
    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors", metadata=metadata)  # `specnet info` reads this
    assert read_metadata(tmp_path / "other.safetensors")["arch"] == "cnn_tiny"  # it describes itself ...
    with pytest.raises(ModelFileError, match=r"other.safetensors: weights do not match the declared architecture: missing backbone\."):
        check_weight_shapes(tmp_path / "other.safetensors")  # ... and would not load
    meta = json.loads(metadata[METADATA_KEY])
    meta["features"]["n_mels"] = 64  # the backbone's shapes do not depend on it, the standardisation's do
    _write_with_metadata(tmp_path / "mels.safetensors", SpecNet(spec), meta)
    with pytest.raises(ModelFileError, match=r"mels.safetensors: .*standardize.mean has shape \(1, 32, 1\), cnn_tiny needs \(1, 64, 1\)"):
        check_weight_shapes(tmp_path / "mels.safetensors")


def test_the_metadata_reader_needs_no_torch_and_names_a_file_without_metadata(tmp_path):
    import subprocess
    import sys

    from specnet.catalog import metadata_document

    not_safetensors = tmp_path / "x.safetensors"
    not_safetensors.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(not_safetensors))}: not a valid safetensors file: truncated, or another format"):
        metadata_document(not_safetensors)
    script = ("import sys; from specnet.catalog import bundled_models, read_metadata; "  # checked as loading checks it
              "print(read_metadata(bundled_models()['fsdd'])['classes'][:2], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["['0',", "'1']", "False"], result.stderr
