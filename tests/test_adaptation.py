"""Tests for Model.adapt (batch-norm statistics from unlabelled recordings), Model.save and `specnet adapt`."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
import synthetic as S
import torch
from helpers import write_audio

import specnet
from specnet import inference
from specnet.cli import main
from specnet.errors import DataError, ParameterError
from specnet.featureconfig import FeatureConfig
from specnet.inference import Model
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec
from specnet.windows import Windows

WINDOW = int(S.CLIP_SECONDS * S.SR)


@pytest.fixture
def model(audio_run) -> Model:
    """A fresh copy for each test: adapting changes the model in place."""
    return specnet.load_model(audio_run.model, device="cpu")


def new_clips(count: int) -> list[np.ndarray]:
    """``count`` unseen one-window clips, the classes in turn, louder and darker than training's."""
    clips = []
    for i in range(count):
        y = S.class_clip(S.AUDIO_CLASSES[i % len(S.AUDIO_CLASSES)], 40 + i).astype(np.float32)
        clips.append(np.convolve(y, np.ones(4, np.float32) / 2, mode="same"))  # a low-pass microphone
    return clips


def norms(model: Model) -> list[torch.nn.BatchNorm2d]:
    return [m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def statistics(model: Model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net.state_dict().items() if "running" in k}


def assert_same_statistics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def first_layer_output(model: Model, clips: list[np.ndarray]) -> torch.Tensor:
    """What the first batch norm sees for ``clips``: (N, C, F, T)."""
    with torch.no_grad():
        return model.net.backbone.features[0].conv1(model.net.images(torch.from_numpy(np.stack(clips))))


def test_first_layer_statistics_become_those_of_the_new_windows(model, audio_run):
    clips = new_clips(12)
    seen = first_layer_output(model, clips)
    bn = norms(model)[0]
    old_mean = bn.running_mean.clone()
    result = model.adapt(clips, sample_rate=S.SR, batch_size=5)  # batches of 5, 5, 2: every window counts once
    assert (result.inputs, result.windows, result.failures) == (12, 12, [])
    torch.testing.assert_close(bn.running_mean, seen.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    # The variance over all 12 windows, not a mean of the three batches' variances.
    torch.testing.assert_close(bn.running_var, seen.var((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert (bn.running_mean - old_mean).abs().max() > 0.01  # the training statistics are gone
    assert not model.net.training and all(m.momentum == 0.1 for m in norms(model))  # back to inference

    one_batch = specnet.load_model(audio_run.model, device="cpu")
    one_batch.adapt(clips, sample_rate=S.SR, batch_size=64)
    bn = norms(one_batch)[0]
    torch.testing.assert_close(bn.running_mean, seen.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, seen.var((0, 2, 3)), atol=1e-5, rtol=1e-4)


def test_a_silent_nearly_silent_or_short_input_is_warned_about_as_adapting_sees_it(audio_run, caplog):
    model = specnet.load_model(audio_run.model, device="cpu")
    quiet = (np.random.default_rng(0).standard_normal(WINDOW) * 1e-5).astype(np.float32)
    frame = model.config.features.window_length
    short = new_clips(1)[0][: frame // 2]
    with caplog.at_level(logging.WARNING, logger="specnet"):
        result = model.adapt([*new_clips(3), np.zeros(WINDOW, np.float32), quiet, short, np.zeros(frame // 2, np.float32)],
                             sample_rate=S.SR)
    assert (result.inputs, result.windows) == (5, 5)  # the silent ones add no window
    assert [r.getMessage() for r in caplog.records] == [
        "input 3: silent (no sample above -90 dBFS): left out, with nothing to adapt to",
        "input 4: nearly silent (loudest sample -88 dBFS): what it adds to the statistics is mostly noise",
        f"input 5: {frame // 2 / S.SR:g} s is shorter than one of the model's FFT frames ({frame / S.SR:g} s): "
        "what it adds to the statistics is mostly padding",
        "input 6: silent (no sample above -90 dBFS): left out, with nothing to adapt to",  # whatever its length
        f"adapted to 5 windows: statistics from fewer than {inference.FEW_WINDOWS} are noisy",
    ]


def test_silent_windows_and_bad_inputs_are_left_out(model, audio_run, tmp_path):
    clips = new_clips(4)
    with_silence = np.concatenate([clips[0], np.zeros(2 * S.SR, np.float32)])
    path = write_audio(tmp_path / "then_silence.wav", with_silence, S.SR, subtype="FLOAT")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all\n" * 20)
    result = model.adapt([str(path), str(broken), *map(str, [write_audio(tmp_path / f"{i}.wav", c, S.SR, subtype="FLOAT")
                                                              for i, c in enumerate(clips[1:])])], batch_size=3)
    windows = Windows(with_silence, WINDOW, WINDOW // 2)[:]
    heard = [w for w in windows if np.abs(w).max() > 0]
    assert len(heard) == 2 and len(windows) == 9  # the clip's own window and the one half over it
    assert (result.inputs, result.windows) == (4, 2 + 3)
    assert [f.path for f in result.failures] == [str(broken)]

    expected = specnet.load_model(audio_run.model, device="cpu")
    expected.adapt([*heard, *clips[1:]], sample_rate=S.SR, batch_size=3)
    assert_same_statistics(statistics(model), statistics(expected))


def test_without_on_failure_each_skipped_input_is_a_warning(model, tmp_path, caplog):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all\n" * 20)
    missing = tmp_path / "missing.wav"
    with caplog.at_level(logging.WARNING, logger="specnet"):
        result = model.adapt([str(broken), *new_clips(3), str(missing)], sample_rate=S.SR)
    assert [f.path for f in result.failures] == [str(broken), str(missing)]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert skipped == [f"skipping {f.message}" for f in result.failures]
    assert "not a readable audio file" in skipped[0] and "missing.wav" in skipped[1]
    caplog.clear()
    told = []
    model.adapt([str(broken), *new_clips(3)], sample_rate=S.SR, on_failure=told.append)
    assert [f.path for f in told] == [str(broken)] and not [r for r in caplog.records if "skipping" in r.getMessage()]


def test_a_long_file_is_streamed_with_the_same_result(model, audio_run, tmp_path, monkeypatch):
    samples = np.concatenate(new_clips(12))
    path = write_audio(tmp_path / "long.wav", samples, S.SR, subtype="FLOAT")
    model.adapt(str(path), batch_size=7)
    monkeypatch.setattr(inference, "STREAM_SECONDS", 2.0)
    streamed = specnet.load_model(audio_run.model, device="cpu")
    assert streamed.adapt([str(path)], batch_size=7).windows == 23  # 6 s in 0.5 s windows 0.25 s apart
    assert_same_statistics(statistics(streamed), statistics(model))


def test_no_window_to_adapt_to_leaves_the_model_unchanged(model, tmp_path):
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    probabilities = model.predict(new_clips(1), sample_rate=S.SR)[0].probabilities
    skipped = []
    with pytest.raises(DataError, match=r"^too little to adapt to: 0 windows of sound in 2 inputs, and a spread needs 2 "):
        model.adapt([np.zeros(S.SR, np.float32), str(tmp_path / "missing.wav")], sample_rate=S.SR, on_failure=skipped.append)
    assert [f.message for f in skipped] == [f"{tmp_path / 'missing.wav'}: file not found"]
    with pytest.raises(DataError, match="^no input to adapt to$"):
        model.adapt([])
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0, msg=key)
    assert not model.net.training and "adapted" not in model.net.spec.extra
    np.testing.assert_array_equal(model.predict(new_clips(1), sample_rate=S.SR)[0].probabilities, probabilities)


def test_pooled_moments_are_those_of_all_values_together():
    from specnet.inference import _PooledMoments

    values = torch.randn(5, 3, 2, 1, generator=torch.Generator().manual_seed(0))
    pooled = _PooledMoments()
    for batch in (values[:2], values[2:3], values[3:]):  # uneven batches
        pooled.add(batch)
    norm = torch.nn.BatchNorm2d(3)
    pooled.set_running_stats(norm)
    torch.testing.assert_close(norm.running_mean, values.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, values.var((0, 2, 3)))  # unbiased over the 10 values, as batch norm keeps it


def test_a_batch_norm_layer_no_window_reaches_keeps_its_statistics(audio_run):
    model = specnet.load_model(audio_run.model, device="cpu")
    unused = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        unused.running_mean.fill_(0.5)
    model.net.backbone.add_module("unused", unused)  # never called by forward
    model.adapt(new_clips(4), sample_rate=S.SR)
    assert unused.running_mean.tolist() == [0.5] * 3 and not unused.training
    assert not any(m._forward_pre_hooks for m in norms(model))  # adapting leaves no hook behind


def test_a_model_without_batch_norm_says_so():
    spec = ModelSpec(arch="cnn_tiny", arch_args={"batch_norm": False}, input_kind="audio", classes=("a", "b"),
                     features=FeatureConfig(**S.FEATURES), clip_seconds=S.CLIP_SECONDS)
    plain = Model(SpecNet(spec), name="plain", device=torch.device("cpu"))
    with pytest.raises(ParameterError, match="^plain: has no batch-norm layers, so there are no statistics to adapt$"):
        plain.adapt(new_clips(2), sample_rate=S.SR)


def test_few_windows_give_a_warning(model, caplog):
    model.adapt(new_clips(3), sample_rate=S.SR)
    assert [r.getMessage() for r in caplog.records] == [
        f"adapted to 3 windows: statistics from fewer than {inference.FEW_WINDOWS} are noisy"]


def test_an_adapted_model_saves_and_loads_as_it_classifies(model, audio_run, tmp_path):
    clips = new_clips(6)
    original = model.predict(clips, sample_rate=S.SR)
    model.adapt(clips, sample_rate=S.SR)
    adapted = model.predict(clips, sample_rate=S.SR)
    assert max(np.abs(a.probabilities - o.probabilities).max() for a, o in zip(adapted, original)) > 1e-3
    out = model.save(tmp_path / "adapted.safetensors")
    loaded = specnet.load_model(out, device="cpu")
    for a, b in zip(loaded.predict(clips, sample_rate=S.SR), adapted):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6, rtol=0)
    assert loaded.config.extra["adapted"] == {"inputs": 6, "windows": 6, "from": audio_run.model.name}  # no folders
    with pytest.raises(specnet.SpecnetError, match="already exists; pass overwrite=True"):
        model.save(out)
    with pytest.raises(specnet.SpecnetError, match=r"model files are written as .safetensors files: name the output \*.safetensors$"):
        model.save(tmp_path / "adapted.pt")
    loaded.adapt(clips[:4], sample_rate=S.SR)  # adapting again measures anew, from the same base model
    assert loaded.config.extra["adapted"] == {"inputs": 4, "windows": 4, "from": audio_run.model.name}


def test_a_long_file_that_fails_part_way_is_skipped_and_reported(model, tmp_path, monkeypatch):
    long_path = write_audio(tmp_path / "long.wav", np.concatenate(new_clips(12)), S.SR, subtype="FLOAT")
    short_path = write_audio(tmp_path / "short.wav", new_clips(3)[2], S.SR, subtype="FLOAT")
    monkeypatch.setattr(inference, "STREAM_SECONDS", 2.0)

    intact = inference.iter_audio_blocks

    def damaged(*args, **kwargs):  # the stream breaks after two blocks, as at a damaged Ogg page
        blocks = intact(*args, **kwargs)
        yield next(blocks)
        yield next(blocks)
        raise specnet.AudioError(f"{long_path}: damaged data at 0.5 s")

    monkeypatch.setattr(inference, "iter_audio_blocks", damaged)
    result = model.adapt([str(long_path), str(short_path)])
    assert [f.message for f in result.failures] == [f"{long_path}: damaged data at 0.5 s"]
    assert (result.inputs, result.windows) == (2, 3)  # the two blocks read before the damage, and the short file


def test_batches_never_hold_one_window(tmp_path, caplog):
    """A batch of one has no spread: with 1 x 1 feature maps batch norm refuses it."""
    spec = ModelSpec(arch="vgg11_bn", arch_args={}, input_kind="image", classes=("a", "b"), in_chans=3, image_size=(16, 16))
    images = Model(SpecNet(spec), name="images", device=torch.device("cpu"))
    pictures = [np.random.default_rng(i).integers(0, 255, (3, 16, 16), dtype=np.uint8) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="specnet"):
        assert images.adapt(pictures, batch_size=2).windows == 5  # batches of 2 and 3
    assert [r.getMessage() for r in caplog.records] == [f"adapted to 5 images: statistics from fewer than {inference.FEW_WINDOWS} are noisy"]
    assert images.adapt(pictures[:3], batch_size=1).windows == 3  # batch_size 1 runs as 2
    with pytest.raises(DataError, match=r"^too little to adapt to: 1 image, and a spread needs 2 \(failed inputs are left out\)$"):
        images.adapt(pictures[:1])


def test_adapting_an_image_model_on_the_command_line_counts_images(tmp_path, capsys):
    spec = ModelSpec(arch="vgg11_bn", arch_args={}, input_kind="image", classes=("a", "b"), in_chans=3, image_size=(16, 16))
    model_file = Model(SpecNet(spec), name="images", device=torch.device("cpu")).save(tmp_path / "images.safetensors")
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "adapted.safetensors"
    code, _, err = run(capsys, "adapt", str(model_file), str(tmp_path / "*.png"), "-o", str(out))
    assert code == 0 and err.splitlines() == [
        f"warning: adapted to 3 images: statistics from fewer than {inference.FEW_WINDOWS} are noisy",
        f"adapted {model_file} to 3 images; wrote {out}",
    ]


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_adapts_writes_and_reports_bad_files(capsys, audio_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, clip in enumerate(new_clips(6)):
        write_audio(folder / f"{i}.wav", clip, S.SR)
    (folder / "broken.wav").write_bytes(b"not audio at all\n" * 20)
    out = tmp_path / "adapted.safetensors"
    code, stdout, err = run(capsys, "adapt", str(audio_run.model), str(folder), "-o", str(out))
    assert code == 1 and stdout == ""
    assert err.splitlines() == [
        f"error: {folder / 'broken.wav'}: not a readable audio file (format not recognised)",
        f"warning: adapted to 6 windows: statistics from fewer than {inference.FEW_WINDOWS} are noisy",
        f"adapted {audio_run.model} to 6 windows of 6 inputs; wrote {out}",
        "1 of 7 inputs failed",
    ]
    code, stdout, _ = run(capsys, "info", str(out), "--format", "json")
    assert code == 0 and json.loads(stdout)["adapted"] == {"inputs": 6, "windows": 6, "from": audio_run.model.name}
    code, stdout, _ = run(capsys, "info", str(out))
    lines = stdout.splitlines()
    adapted = lines.index("adapted:")
    assert code == 0 and lines[adapted + 1:adapted + 4] == ["  inputs:  6", "  windows: 6", f"  from:    {audio_run.model.name}"]
    code, _, err = run(capsys, "adapt", str(audio_run.model), str(folder / "0.wav"), "-o", str(out))
    assert code == 1 and err == f"error: {out}: already exists; pass --overwrite to replace it\n"
    code, _, err = run(capsys, "adapt", str(audio_run.model), str(folder / "0.wav"), "-o", str(tmp_path / "adapted.txt"))
    assert code == 2 and err == f"error: {tmp_path / 'adapted.txt'}: model files are written as .safetensors files: name the output *.safetensors\n"


def test_cli_names_every_bad_input_when_none_is_left(capsys, audio_run, tmp_path):
    bad = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path in bad:
        path.write_bytes(b"not audio at all\n" * 20)
    code, _, err = run(capsys, "adapt", str(audio_run.model), *map(str, bad), "-o", str(tmp_path / "out.safetensors"))
    assert code == 1 and not (tmp_path / "out.safetensors").exists()
    assert err.splitlines() == [
        *(f"error: {path}: not a readable audio file (format not recognised)" for path in bad),
        "error: nothing to adapt to: all 2 inputs failed",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "adapt", str(audio_run.model), str(empty), "-o", str(tmp_path / "out.safetensors"))
    assert code == 1 and err.splitlines() == [f"error: {empty}: no audio files in this folder", "error: nothing to adapt to: the input failed"]
