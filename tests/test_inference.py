"""Tests for specnet/inference.py: load_model, predict on every input kind, embeddings, timelines."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
import weakref
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import synthetic as S
import torch
from helpers import make_tone, write_audio

import specnet
from specnet import inference
from specnet.errors import DataError, ModelFileError, ParameterError, SpecnetError
from specnet.inference import Failure, Model, Prediction
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec
from specnet.windows import default_hop

EVENT = (13.6, 16.6)  # seconds of "tone" inside 30 s of "hiss"


@pytest.fixture(scope="module")
def model(audio_run):
    return specnet.load_model(audio_run.model, device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """One unseen 0.5 s clip per class, stored as float WAV so the file and the array hold the same samples."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for label in S.AUDIO_CLASSES:
        y = S.class_clip(label, 21).astype(np.float32)
        out[label] = (write_audio(root / f"{label}.wav", y, S.SR, subtype="FLOAT"), y)
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return S.event_recording(tmp_path_factory.mktemp("long") / "event.wav", event=EVENT)


def probabilities(results) -> np.ndarray:
    return np.stack([r.probabilities for r in results])


# ------------------------------------------------------------------ loading


def test_load_model_gives_classes_and_config(model, audio_run):
    assert model.classes == S.AUDIO_CLASSES
    assert model.input_kind == "audio"
    assert model.sample_rate == S.SR
    assert model.config.arch == "cnn_tiny"
    assert model.config.clip_seconds == S.CLIP_SECONDS
    assert model.config.features.n_mels == S.FEATURES["n_mels"]
    assert model.name == str(audio_run.model)
    assert not model.net.training


def test_a_model_built_in_python_is_wrapped_as_load_model_wraps_one(model):
    import copy

    wrapped = Model(copy.deepcopy(model.net).train(), device="cpu")  # a device by name, as load_model takes it
    assert wrapped.device == torch.device("cpu") and wrapped.name == "model" and not wrapped.net.training
    np.testing.assert_array_equal(wrapped.predict(np.full(S.SR // 2, 0.1, np.float32), sample_rate=S.SR)[0].probabilities,
                                  model.predict(np.full(S.SR // 2, 0.1, np.float32), sample_rate=S.SR)[0].probabilities)
    assert repr(wrapped) == (f"<specnet.Model 'model': cnn_tiny, {len(S.AUDIO_CLASSES)} classes ({', '.join(S.AUDIO_CLASSES[:4])}"
                             f"{', ...' if len(S.AUDIO_CLASSES) > 4 else ''}), audio at {S.SR} Hz, {S.CLIP_SECONDS:g} s clips, on cpu>")
    without_clip = Model(SpecNet(dataclasses.replace(model.config, clip_seconds=None)), name="x", device="cpu")
    assert repr(without_clip).endswith(f"audio at {S.SR} Hz, on cpu>")
    with pytest.raises(ParameterError, match=r"^Model\(\) takes a specnet SpecNet, got str \(specnet.load_model loads"):
        Model("esc10")
    with pytest.raises(SpecnetError, match="cuda:7"):
        Model(model.net, device="cuda:7")


def test_a_model_built_without_a_clip_length_asks_for_a_window_and_an_input_size(model):
    # A SpecNet built in Python may leave clip_seconds out (its repr says none); what defaults to
    # the clip length says what to give instead of failing with a TypeError on None.
    without_clip = Model(SpecNet(dataclasses.replace(model.config, clip_seconds=None)), name="x", device="cpu")
    samples = np.full(S.SR, 0.1, np.float32)
    for call in (lambda: without_clip.predict(samples, sample_rate=S.SR), lambda: without_clip.embed(samples, sample_rate=S.SR),
                 lambda: without_clip.adapt([samples, samples], sample_rate=S.SR)):
        with pytest.raises(ParameterError, match=r"^x has no clip length \(clip_seconds\) to window inputs by: give window= in seconds$"):
            call()
    assert len(without_clip.predict(samples, sample_rate=S.SR, window=0.5)[0].probabilities) == len(S.AUDIO_CLASSES)
    with pytest.raises(ParameterError, match=r"^this model has no clip length \(clip_seconds\) to size a summary by: give input_size=\(1, "
                                             rf"{S.FEATURES['n_mels']}, frames\)$"):
        specnet.summary(without_clip)
    assert "Total params" in specnet.summary(without_clip, (1, S.FEATURES["n_mels"], 50))


def test_the_types_results_come_in_are_public():
    # README names specnet.Failure; type hints want Model and Prediction without reaching into modules.
    assert (specnet.Model, specnet.Prediction, specnet.Failure) == (Model, Prediction, Failure)
    assert {"Model", "Prediction", "Failure"} <= set(specnet.__all__) <= set(dir(specnet))


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="missing.safetensors: model file not found"):
        specnet.load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="no_such_model: neither a model file nor a bundled model"):
        specnet.load_model("no_such_model")
    with pytest.raises(ModelFileError, match=r"^empty model name: give a model file or a bundled model \(esc10, fsdd\), or leave it out for esc10$"):
        specnet.load_model("")
    with pytest.raises(ParameterError, match=r"^model must be a bundled model's name or a model file's path, got int$"):
        specnet.load_model(5)
    assert specnet.load_model(b"fsdd").name == "fsdd"  # bytes name a path here as they do for predict


# ------------------------------------------------------------------ predict


def test_window_cap_applies_to_a_given_window_not_to_the_models_own(audio_run):
    import dataclasses

    long = specnet.load_model(audio_run.model, device="cpu")
    long.net.spec = dataclasses.replace(long.net.spec, clip_seconds=320.0)  # trained on 320 s clips
    rate = long.sample_rate
    assert long._window_samples(None, None) == (320 * rate, 160 * rate)
    with pytest.raises(ParameterError, match="window=301 must be a positive number of seconds, at most 300"):
        long._window_samples(301, None)


def test_windows_of_an_odd_number_of_samples_hop_as_validation_does(audio_run):
    import dataclasses

    odd = specnet.load_model(audio_run.model, device="cpu")
    rate = odd.sample_rate
    odd.net.spec = dataclasses.replace(odd.net.spec, clip_seconds=2003 / rate)
    # Validation (training.predict_split) hops default_hop(2003) = 1001 samples; classify hopped
    # round(1001.5) = 1002, one sample off the windows validation scored.
    assert odd._window_samples(None, None) == (2003, 1001) == (2003, default_hop(2003))
    assert odd._window_samples(3003 / rate, None) == (3003, 1501)
    assert odd._window_samples(None, 0.1) == (2003, round(0.1 * rate))  # a given hop is kept


def test_predicts_the_class_of_unseen_clips(model, clips):
    results = model.predict([str(path) for path, _ in clips.values()])
    assert [r.predictions[0]["label"] for r in results] == list(clips)
    for result in results:
        assert result.predictions[0]["score"] > 0.5
        assert result.duration == pytest.approx(S.CLIP_SECONDS)


def test_every_input_kind_gives_the_same_probabilities(model, clips):
    paths = [path for path, _ in clips.values()]
    arrays = [y for _, y in clips.values()]
    reference = probabilities(model.predict([str(p) for p in paths]))
    variants = {
        "path objects": model.predict(paths),
        "one path at a time": [model.predict(str(p))[0] for p in paths],
        "numpy arrays": model.predict(arrays, sample_rate=S.SR),
        "one array at a time": [model.predict(y, sample_rate=S.SR)[0] for y in arrays],
        "float64 arrays": model.predict([y.astype(np.float64) for y in arrays], sample_rate=S.SR),
        "tensor": [model.predict(torch.from_numpy(y), sample_rate=S.SR)[0] for y in arrays],
        "numpy batch (B, n)": model.predict(np.stack(arrays), sample_rate=S.SR),
        "tensor batch (B, n)": model.predict(torch.from_numpy(np.stack(arrays)), sample_rate=S.SR),
        "a generator of paths": list(model.predict_iter(str(p) for p in paths)),
        "an array of path strings": model.predict(np.array([str(p) for p in paths])),
        "an array of path bytes": model.predict(np.array([os.fsencode(p) for p in paths])),
        "an object array of paths": model.predict(np.array(paths + [None], dtype=object)[:-1]),
    }
    for name, results in variants.items():
        np.testing.assert_allclose(probabilities(results), reference, atol=1e-5, rtol=0, err_msg=name)
        assert all(r.path is None for r in results) or all(r.path for r in results), name


def test_inputs_that_are_neither_files_nor_arrays_are_named(model, clips):
    path = str(next(iter(clips.values()))[0])
    for level in ("clip", "frame"):
        with pytest.raises(ParameterError, match=r"^input 1: expected a file path or an array of samples, got NoneType$"):
            model.embed([path, None], level=level)
        with pytest.raises(ParameterError, match=r"^input 0: an empty file name$"):
            model.embed("", level=level)
    with pytest.raises(ParameterError, match=r"^input 0: expected .* got float \(each item of a list is one input: pass np.asarray"):
        model.predict([0.1, 0.2, 0.3], sample_rate=S.SR)


def test_a_dict_or_a_set_of_inputs_is_refused_saying_what_inputs_may_be(model, clips):
    # Iterated, a dict gives its keys (read as file names) and a set its items in no set order.
    path = str(next(iter(clips.values()))[0])
    wanted = r"^expected a path, an array of samples or a list of them, got a "
    for method in (model.predict, model.embed, model.embed_frames, lambda inputs: list(model.embed_iter(inputs))):
        with pytest.raises(ParameterError, match=wanted + r"dict: pass list\(inputs.values\(\)\) for its values$"):
            method({"a": np.zeros(S.SR, dtype=np.float32)})
        with pytest.raises(ParameterError, match=wanted + r"set: pass sorted\(inputs\) for an order$"):
            method({path})
    assert len(model.predict({"a": path}.values())) == 1  # a dict's values are a list of inputs


def test_integer_pcm_arrays_are_scaled_as_their_file_is(model, tmp_path):
    path = write_audio(tmp_path / "pcm16.wav", S.class_clip("click", 5), S.SR, subtype="PCM_16")
    reference = model.predict(str(path))[0].probabilities
    for dtype in ("int16", "int32"):  # what soundfile.read(..., dtype=...) gives
        pcm, rate = sf.read(path, dtype=dtype)
        np.testing.assert_allclose(model.predict(pcm, sample_rate=rate)[0].probabilities, reference, atol=1e-6, err_msg=dtype)
    unsigned = (sf.read(path, dtype="int16")[0].astype(np.int32) + 32768).astype(np.uint16)  # offset binary
    np.testing.assert_allclose(model.predict(unsigned, sample_rate=S.SR)[0].probabilities, reference, atol=1e-6)


def test_other_sample_rate_is_resampled(model, clips):
    t = np.arange(round(S.CLIP_SECONDS * 16000)) / 16000
    y = 0.02 * np.random.default_rng(3).uniform(-1, 1, len(t)) + 0.2 * np.sin(2 * np.pi * 611.0 * t)
    result = model.predict(y, sample_rate=16000)[0]
    assert result.predictions[0]["label"] == "tone"
    assert result.duration == pytest.approx(S.CLIP_SECONDS)


def test_top_k_descending_and_probabilities_sum_to_one(model, clips):
    for path, _ in clips.values():
        for k in (1, 2, 3, 10):
            result = model.predict(str(path), top_k=k)[0]
            scores = [p["score"] for p in result.predictions]
            assert len(scores) == min(k, 3)
            assert scores == sorted(scores, reverse=True)
            assert result.probabilities.shape == (3,)
            assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
            assert scores[0] == pytest.approx(result.probabilities.max())
            for p in result.predictions:
                assert p["score"] == pytest.approx(result.probabilities[model.classes.index(p["label"])])
    with pytest.raises(ParameterError, match="top_k=0"):
        model.predict(str(path), top_k=0)


def test_batch_and_single_inputs_agree(model, clips, recording):
    inputs = [str(path) for path, _ in clips.values()] + [str(recording)]
    together = probabilities(model.predict(inputs, batch_size=64))
    one_window_batches = probabilities(model.predict(inputs, batch_size=1))
    alone = np.stack([model.predict(p)[0].probabilities for p in inputs])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(one_window_batches, alone, atol=1e-5, rtol=0)


def test_bad_inputs_are_failures_and_the_rest_still_classified(model, clips, tmp_path):
    good = [str(path) for path, _ in clips.values()]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(np.random.default_rng(0).bytes(3000))
    missing = str(tmp_path / "missing.wav")
    results = list(model.predict_iter([good[0], str(broken), good[1], missing, good[2]]))
    assert [type(r) for r in results] == [Prediction, Failure, Prediction, Failure, Prediction]
    assert results[1].path == str(broken) and "broken.wav" in results[1].reason
    assert results[3].path == missing and "missing.wav" in results[3].reason
    predicted = [r for r in results if isinstance(r, Prediction)]
    assert [r.path for r in predicted] == good
    np.testing.assert_allclose(probabilities(predicted), probabilities(model.predict(good)), atol=1e-5, rtol=0)
    for path, result in zip(good, predicted):
        np.testing.assert_allclose(result.probabilities, model.predict(path)[0].probabilities, atol=1e-5, rtol=0)
    with pytest.raises(SpecnetError, match="broken.wav"):
        model.predict([good[0], str(broken)])


@pytest.mark.parametrize("overlap", [True, False], ids=["decode-in-threads", "decode-in-caller"])
def test_both_decoding_modes_give_the_same_results_in_order(model, clips, tmp_path, monkeypatch, overlap):
    # Worker threads decode ahead when there are cores to spare; otherwise the calling
    # thread decodes each file between batches. Order, failures and numbers must not differ.
    good = [str(path) for path, _ in clips.values()] * 30  # > PREFETCH_FILES (64) inputs
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    inputs = good[:70] + [str(broken)] + good[70:]
    expected = probabilities(model.predict(good[: len(clips)]))
    threads_before = threading.active_count()
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: overlap)
    results = list(model.predict_iter(inputs, batch_size=16))
    assert [r.path for r in results] == inputs
    assert isinstance(results[70], Failure) and "broken.wav" in results[70].reason
    predicted = [r for r in results if isinstance(r, Prediction)]
    np.testing.assert_allclose(probabilities(predicted), np.tile(expected, (30, 1)), atol=1e-5, rtol=0)
    assert threading.active_count() == threads_before  # no decoding thread outlives the call


@pytest.mark.parametrize(
    ("samples", "kwargs", "message"),
    [
        (np.zeros(800, np.float32), {}, "sample_rate"),
        (np.zeros((2, 3, 800), np.float32), {"sample_rate": S.SR}, "shape"),
        (np.array([0.0, np.nan] * 400, np.float32), {"sample_rate": S.SR}, "NaN"),
        (np.zeros(0, np.float32), {"sample_rate": S.SR}, "non-empty"),
        (np.zeros((800, 2), np.float32), {"sample_rate": S.SR},
         r"^samples of shape \(800, 2\) look like \(time, channels\), as soundfile.read gives them: pass y.mean\(axis=1\)"),
        (np.zeros((800, 8), np.float32), {"sample_rate": S.SR},  # eight channels, the most that count as channels
         r"^samples of shape \(800, 8\) look like \(time, channels\)"),
        (np.zeros(800, np.float32), {"sample_rate": True}, r"^sample_rate=True must be an integer >= 1$"),
        (np.zeros(800, np.float32), {"sample_rate": 8000.5}, r"^sample_rate=8000.5 must be an integer >= 1$"),
        (np.zeros(800, np.float32), {"sample_rate": "8000"}, r"^sample_rate='8000' must be an integer >= 1$"),
        (np.zeros(800, bool), {"sample_rate": S.SR}, r"^input 0: samples of dtype bool are not audio: give floats \(full scale 1.0\) or int8/16/32 PCM$"),
        (np.zeros(800, np.int64), {"sample_rate": S.SR}, r"^input 0: samples of dtype int64 are not audio: give floats"),
    ],
)
def test_bad_raw_samples_are_parameter_errors(model, samples, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        model.predict(samples, **kwargs)


def test_samples_too_few_to_make_one_at_the_models_rate_are_refused_not_called_silent(model):
    # Five loud samples at 96 kHz resample to none at the model's 8 kHz: nothing to classify, and nothing silent either.
    assert S.SR == 8000
    for call in (model.predict, model.embed, model.embed_frames):
        with pytest.raises(ParameterError, match=r"^input 0: 5 samples at 96000 Hz make less than one sample at the model's 8000 Hz$"):
            call(np.full(5, 0.5, np.float32), sample_rate=96000)
    assert model.predict(np.full(12, 0.5, np.float32), sample_rate=96000)[0].duration == 1 / S.SR  # one is enough


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_tensors_of_any_float_dtype_are_classified_as_float32(model, clips, dtype):
    # numpy has no bfloat16: such a tensor is read as float32, not refused with a TypeError.
    y = torch.from_numpy(clips["tone"][1]).to(dtype)
    [result] = model.predict(y, sample_rate=S.SR)
    [same] = model.predict(y.float().numpy(), sample_rate=S.SR)
    np.testing.assert_array_equal(result.probabilities, same.probabilities)


def test_a_network_left_in_training_mode_answers_in_eval_mode_and_keeps_its_mode_and_statistics(model, clips):
    y = clips["tone"][1]
    expected, expected_clip, expected_frames = model.predict(y, sample_rate=S.SR)[0].probabilities, model.embed(y, sample_rate=S.SR), model.embed(y, sample_rate=S.SR, level="frame")[0]
    statistics = {name: b.clone() for name, b in model.net.named_buffers()}
    model.net.train()  # as a user fine-tuning model.net in a loop of their own leaves it
    try:
        for _ in range(2):
            np.testing.assert_array_equal(model.predict(y, sample_rate=S.SR)[0].probabilities, expected)
            np.testing.assert_array_equal(model.embed(y, sample_rate=S.SR), expected_clip)
            np.testing.assert_array_equal(model.embed(y, sample_rate=S.SR, level="frame")[0], expected_frames)
        assert model.net.training and all(m.training for m in model.net.modules())
        assert all(torch.equal(b, statistics[name]) for name, b in model.net.named_buffers())
    finally:
        model.net.eval()


# ------------------------------------------------------------------ embeddings


def test_clip_embeddings_agree_across_input_kinds(model, clips):
    paths = [str(path) for path, _ in clips.values()]
    arrays = [y for _, y in clips.values()]
    reference = model.embed(paths)
    dim = model.net.backbone.num_features
    assert reference.shape == (3, dim) and reference.dtype == np.float32
    assert np.isfinite(reference).all() and np.abs(reference).sum() > 0
    for name, value in {
        "arrays": model.embed(arrays, sample_rate=S.SR),
        "batch": model.embed(np.stack(arrays), sample_rate=S.SR),
        "tensor batch": model.embed(torch.from_numpy(np.stack(arrays)), sample_rate=S.SR),
        "one at a time": np.concatenate([model.embed(p) for p in paths]),
    }.items():
        np.testing.assert_allclose(value, reference, atol=1e-5, rtol=0, err_msg=name)
    # different classes, different embeddings
    assert np.linalg.norm(reference[0] - reference[2]) > 1e-3


def test_frame_embeddings_shape_and_timestamps(model, clips, tmp_path):
    longer = write_audio(tmp_path / "longer.wav", S.class_clip("tone", 3, seconds=1.3), S.SR)
    frames, stamps = model.embed([str(clips["hiss"][0]), str(longer)], level="frame")
    hop = S.FEATURES["hop_length"]
    stride = model.net.backbone.time_stride
    columns = math.ceil((1 + round(1.3 * S.SR) // hop) / stride)  # what the network gives for the longest clip ...
    expected = sum((stride - 1) / 2 * hop / S.SR + j * stride * hop / S.SR <= 1.3 for j in range(columns))  # ... centred in it
    assert expected == columns - 1  # here the last column is centred past the end, so it is left out
    assert frames.shape == (2, expected, model.net.backbone.num_features)
    assert stamps.shape == (expected,)
    steps = np.diff(stamps)
    assert (steps > 0).all()
    np.testing.assert_allclose(steps, stride * hop / S.SR, rtol=1e-9)
    assert stamps[0] == pytest.approx((stride - 1) / 2 * hop / S.SR)  # centre of the first column's frames
    from_array, array_stamps = model.embed(clips["hiss"][1], sample_rate=S.SR, level="frame")
    from_path, path_stamps = model.embed(str(clips["hiss"][0]), level="frame")
    np.testing.assert_array_equal(array_stamps, path_stamps)
    np.testing.assert_allclose(from_array, from_path, atol=1e-5, rtol=0)
    assert from_path.shape[1] == sum(path_stamps <= S.CLIP_SECONDS) == len(path_stamps)
    # A clip's frames are its own, whatever else is embedded with it: the frames centred in
    # its audio, then NaN up to the longest clip's frames.
    short = S.CLIP_SECONDS / 2
    alone, alone_stamps = model.embed(clips["hiss"][1][: round(short * S.SR)], sample_rate=S.SR, level="frame")
    count = int(np.searchsorted(stamps, short, side="right"))
    assert alone.shape[1] == len(alone_stamps) == count > 0 and np.isfinite(alone).all()  # no frame past its end
    together, _ = model.embed([clips["hiss"][1][: round(short * S.SR)], np.asarray(sf.read(longer)[0], np.float32)],
                              sample_rate=S.SR, level="frame")
    np.testing.assert_array_equal(together[0, : alone.shape[1]], alone[0])
    assert np.isnan(together[0, alone.shape[1]:]).all()
    np.testing.assert_allclose(together[1], model.embed(str(longer), level="frame")[0][0], atol=1e-5, rtol=0)
    assert model.embed([]).shape == (0, model.net.backbone.num_features)
    assert model.embed([], level="frame")[0].shape == (0, 0, frames.shape[-1])
    with pytest.raises(ParameterError, match="^window and hop cut clips for level='clip'; level='frame' embeds each clip whole$"):
        model.embed(str(longer), level="frame", window=0.5)
    with pytest.raises(ParameterError, match="level"):
        model.embed(str(longer), level="window")


def test_an_input_shorter_than_an_fft_frame_warns(model, tmp_path, caplog):
    frame = model.config.features.window_length  # samples
    tiny = write_audio(tmp_path / "tiny.wav", S.class_clip("tone", 0, seconds=0.5)[: frame // 2], S.SR)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        model.predict(str(tiny))
        model.predict(S.class_clip("tone", 0, seconds=0.5)[: frame // 2], sample_rate=S.SR)
        model.embed(str(tiny), level="frame")
        model.predict(S.class_clip("tone", 0, seconds=0.5)[:frame], sample_rate=S.SR)  # one whole frame: no warning
    seconds = f"{frame / S.SR:g}"
    assert [r.getMessage() for r in caplog.records] == [
        f"{tiny}: {frame // 2 / S.SR:g} s is shorter than one of the model's FFT frames ({seconds} s): the model's output says little",
        f"input 0: {frame // 2 / S.SR:g} s is shorter than one of the model's FFT frames ({seconds} s): the model's output says little",
        f"{tiny}: {frame // 2 / S.SR:g} s is shorter than one of the model's FFT frames ({seconds} s): the model's output says little",
    ]

    # Said as each input's result comes, in input order, though decoding runs ahead of it.
    long_one = write_audio(tmp_path / "long.wav", S.class_clip("tone", 0, seconds=2.0), S.SR)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specnet"):
        for result in model.predict_iter([str(long_one), str(tiny)], num_workers=2, batch_size=1):
            logging.getLogger("specnet").warning("result %s", Path(result.path).name)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["result long.wav", str(tiny), "result tiny.wav"]


def _truncated_wav(path: Path) -> Path:
    """A WAV whose header declares 0.5 s and which holds 0.1 s: decoding warns about it."""
    whole = write_audio(path.with_name("whole.wav"), S.class_clip("tone", 0, seconds=0.5), S.SR)
    path.write_bytes(whole.read_bytes()[: 44 + 2 * S.SR // 10])
    return path


def _truncated_flac(path: Path) -> Path:
    """A FLAC file of 1 s cut where its first FLAC frame (4096 samples, 0.512 s) ends: decoding warns about it."""
    clip = S.class_clip("tone", 0, seconds=1.0)
    whole = write_audio(path.with_name("whole.flac"), clip, S.SR, subtype="PCM_16")
    first_frame = write_audio(path.with_name("first.flac"), clip[:4096], S.SR, subtype="PCM_16")  # the same bytes
    path.write_bytes(whole.read_bytes()[: first_frame.stat().st_size])
    return path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_decoders_warning_is_said_with_its_inputs_result(model, tmp_path, caplog, monkeypatch, num_workers):
    # Decoding runs ahead of the results (in threads when there are cores to spare, or a batch
    # before the network runs); a warning about a file still comes just before its result.
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: num_workers > 0)
    good = write_audio(tmp_path / "good.wav", S.class_clip("tone", 0, seconds=0.5), S.SR)
    cut = _truncated_wav(tmp_path / "cut.wav")
    cut_flac = _truncated_flac(tmp_path / "cut.flac")
    with caplog.at_level(logging.WARNING, logger="specnet"):
        for result in model.predict_iter([str(good), str(cut), str(cut_flac), str(good)], num_workers=num_workers):
            logging.getLogger("specnet").warning("result %s", Path(result.path).name)
        for _ in model.embed_iter([str(good), str(cut), str(cut_flac)], num_workers=num_workers):
            logging.getLogger("specnet").warning("embedding")
    wav_cut = f"{cut}: truncated: the header declares 0.500 s of audio, the file holds 0.100 s"
    flac_cut = f"{cut_flac}: decoding stopped at 0.512 s of the 1.000 s the file declares (damaged data?)"
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "result good.wav", wav_cut, "result cut.wav", flac_cut, "result cut.flac", "result good.wav",
        "embedding", wav_cut, "embedding", flac_cut, "embedding",
    ]


def test_a_failed_inputs_decoder_warning_comes_with_its_failure_and_user_filters_see_it_once(model, tmp_path, caplog, monkeypatch):
    # A float WAV cut short with a NaN in what is left: the decoder warns, then the input fails.
    good = write_audio(tmp_path / "good.wav", S.class_clip("tone", 0, seconds=0.5), S.SR)
    samples = S.class_clip("tone", 0, seconds=0.5).astype(np.float32)
    samples[10] = np.nan
    sf.write(tmp_path / "whole.wav", samples, S.SR, subtype="FLOAT")
    bad = tmp_path / "bad.wav"
    bad.write_bytes((tmp_path / "whole.wav").read_bytes()[: 80 + 4 * S.SR // 10])
    seen = []

    def count(record):
        seen.append(record.getMessage())
        return True

    logging.getLogger("specnet").addFilter(count)  # a user's filter, there before or after specnet's own
    try:
        with caplog.at_level(logging.WARNING, logger="specnet"):
            for result in model.predict_iter([str(good), str(good), str(bad)]):
                name = Path(result.path).name
                logging.getLogger("specnet").warning("failed %s" if isinstance(result, Failure) else "result %s", name)
    finally:
        logging.getLogger("specnet").removeFilter(count)
    said = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in said] == ["result good.wav", "result good.wav", str(bad), "failed bad.wav"]
    assert "truncated" in said[2] and seen == said


def test_a_filter_added_before_specnet_is_imported_sees_a_held_warning_once(audio_run, tmp_path):
    cut = _truncated_wav(tmp_path / "cut.wav")
    script = f"""
import logging, sys
seen = []
logging.getLogger("specnet").addFilter(lambda record: seen.append(record.getMessage()) or True)
import specnet
specnet.load_model({str(audio_run.model)!r}, device="cpu").predict({str(cut)!r})
print(len(seen), seen[0].split(";")[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"1 {cut}: truncated: the header declares 0.500 s of audio, the file holds 0.100 s", done.stderr


def test_adapting_says_a_decoders_warning_in_input_order(audio_run, tmp_path, caplog):
    model = specnet.load_model(audio_run.model, device="cpu")  # adapting changes it in place
    frame = model.config.features.window_length
    tiny = write_audio(tmp_path / "tiny.wav", S.class_clip("tone", 0, seconds=0.5)[: frame // 2], S.SR)
    cut = _truncated_wav(tmp_path / "cut.wav")
    with caplog.at_level(logging.WARNING, logger="specnet"):
        model.adapt([str(tiny), str(cut)])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(tiny), str(cut), "adapted to 2 windows"]


# ------------------------------------------------------------------ long recordings


def test_timeline_places_the_event(model, recording):
    result = model.predict(str(recording), timeline=True)[0]
    assert result.duration == pytest.approx(30.0)
    segments = result.segments
    window, hop = S.CLIP_SECONDS, S.CLIP_SECONDS / 2
    starts = [s["start"] for s in segments]
    assert starts[0] == 0.0 and segments[-1]["end"] == pytest.approx(30.0)
    np.testing.assert_allclose(np.diff(starts), hop)
    for s in segments:
        assert s["end"] - s["start"] == pytest.approx(window)
        assert 0 < s["score"] <= 1
    tone = [s for s in segments if s["label"] == "tone"]
    assert tone, "no window labelled as the event"
    for s in tone:  # every "tone" window overlaps the event
        assert s["end"] > EVENT[0] and s["start"] < EVENT[1], s
    assert EVENT[0] - window <= tone[0]["start"] <= EVENT[0] + hop
    assert EVENT[1] - hop <= tone[-1]["end"] <= EVENT[1] + window
    for s in segments:  # windows wholly inside the event are "tone", wholly outside "hiss"
        if s["start"] >= EVENT[0] and s["end"] <= EVENT[1]:
            assert s["label"] == "tone", s
        elif s["end"] <= EVENT[0] or s["start"] >= EVENT[1]:
            assert s["label"] == "hiss", s
    # the clip-level answer is the mean over windows: mostly hiss
    assert result.predictions[0]["label"] == "hiss"
    assert result.predictions[1]["label"] == "tone"


@pytest.mark.parametrize(
    ("window", "hop", "count"),
    [(None, None, 119), (1.0, None, 59), (1.0, 0.5, 59), (2.0, 2.0, 15), (3.0, 1.5, 19), (0.5, 1.0, 31)],
)
def test_window_and_hop_set_the_segments(model, recording, window, hop, count, caplog):
    segments = model.predict(str(recording), timeline=True, window=window, hop=hop)[0].segments
    # Only a hop longer than the window skips audio, and only that is warned about.
    assert ("is skipped" in caplog.text) == (hop is not None and hop > (window or S.CLIP_SECONDS)), caplog.text
    assert len(segments) == count
    length = window or S.CLIP_SECONDS
    step = hop or length / 2
    assert segments[0]["start"] == 0.0
    assert segments[-1]["end"] == pytest.approx(30.0)  # the last window ends at the end of the file
    assert all(s["end"] - s["start"] == pytest.approx(length) for s in segments)
    np.testing.assert_allclose(np.diff([s["start"] for s in segments[:-1]]), step)


def test_bad_window_or_hop(model, recording):
    with pytest.raises(ParameterError, match="window=0"):
        model.predict(str(recording), window=0)
    with pytest.raises(ParameterError, match="hop=-1"):
        model.predict(str(recording), hop=-1)
    with pytest.raises(ParameterError, match="window=nan"):
        model.predict(str(recording), window=float("nan"))
    with pytest.raises(ParameterError, match="hop='0.1'"):
        model.predict(str(recording), hop="0.1")


def test_a_hop_of_less_than_one_sample_or_beyond_any_recording_is_refused(model, recording, caplog):
    with pytest.raises(ParameterError, match=r"^hop=1e-09 s is less than one sample of the model's 8000 Hz audio \(0.000125 s\)$"):
        model.predict(str(recording), hop=1e-9)
    with pytest.raises(ParameterError, match=r"^hop=1e\+305 s must be at most 1.1259e\+12 s$"):
        model.predict(str(recording), hop=1e305)
    # A window of one sample hops by one sample (half of it, at least one), with a warning, not a hop error.
    assert model._window_samples(1 / 8000, None) == (1, 1)
    assert "shorter than one of the model's FFT frames" in caplog.text
    # Less than one sample is refused as a hop of less than one is, not made one sample quietly.
    with pytest.raises(ParameterError, match=r"^window=1e-05 s is less than one sample of the model's 8000 Hz audio \(0.000125 s\)$"):
        model.predict(str(recording), window=1e-5)
    # 0.8 samples rounded to one and was scored (flat, about 1/K per class): refused as well.
    for option in ("window", "hop"):
        with pytest.raises(ParameterError, match=rf"^{option}=0.0001 s is less than one sample of the model's 8000 Hz audio"):
            model.predict(str(recording), **{option: 1e-4})


@pytest.mark.parametrize("where", ["file", "array", "adapt"])
def test_a_short_hop_copies_windows_a_batch_at_a_time(audio_run, tmp_path, where):
    # 5 s in 0.5 s windows 2 ms apart: 2,251 windows, 36 MB if all were copied out of the clip at once.
    samples = S.class_clip("hiss", 5, seconds=5.0).astype(np.float32)
    path = write_audio(tmp_path / "five_seconds.wav", samples, S.SR, subtype="FLOAT")
    model = specnet.load_model(audio_run.model, device="cpu")  # adapt changes it
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc (torch's are not counted)
    try:
        if where == "adapt":
            assert model.adapt(str(path), hop=0.002).windows == 2251
        else:
            inputs = str(path) if where == "file" else samples
            [result] = model.predict(inputs, sample_rate=S.SR, hop=0.002, timeline=True, batch_size=64)
            assert len(result.segments) == 2251
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12e6, peak  # 72 MB (143 MB adapting) when every window was copied at once


def test_samples_too_large_for_a_spectrogram_are_refused_not_scored_nan(model, clips):
    huge = (3e38 * np.sin(np.arange(S.SR) / 5)).astype(np.float32)  # finite; its power is not
    message = "samples reach 3e+38, far beyond full scale (1.0), where a spectrogram overflows; rescale them to within ±1"
    results = list(model.predict_iter([clips["tone"][1], huge], sample_rate=S.SR))
    assert isinstance(results[0], Prediction) and results[1].message == f"input 1: {message}"
    with pytest.raises(ParameterError, match=re.escape(f"input 0: {message}")):
        model.embed_frames([huge], sample_rate=S.SR)
    with pytest.raises(ParameterError, match=re.escape(message)):  # the peak is the largest magnitude, negative too
        model.predict(-np.abs(huge), sample_rate=S.SR)
    tone = clips["tone"][1]
    scaled = model.predict((tone / np.abs(tone).max() * 2**31).astype(np.float32), sample_rate=S.SR)[0]  # 32-bit integer units
    assert np.isfinite(scaled.probabilities).all()


def test_frame_embeddings_one_input_at_a_time_skip_bad_inputs(model, clips, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    longer = write_audio(tmp_path / "longer.wav", S.class_clip("tone", 3, seconds=1.3), S.SR)
    paths = [str(clips["hiss"][0]), str(longer)]
    frames, stamps = model.embed_frames(paths)
    nan = np.full(S.SR, np.nan, np.float32)
    results = list(model.embed_frames_iter([paths[0], str(broken), nan, paths[1]], sample_rate=S.SR))
    assert [type(r) for r in results] == [tuple, Failure, Failure, tuple]
    assert results[1].path == str(broken) and results[1].message.startswith(f"{broken}: ")
    assert results[2].message == "input 2: samples contain NaN or infinite values"
    for row, (own, own_stamps) in zip(frames, (results[0], results[3])):
        count = len(own_stamps)
        assert own.shape == (count, frames.shape[-1])
        np.testing.assert_array_equal(own_stamps, stamps[:count])
        np.testing.assert_allclose(own, row[:count], atol=1e-5, rtol=0)
        assert np.isnan(row[count:]).all()
    with pytest.raises(SpecnetError, match=f"^{re.escape(str(broken))}: "):
        model.embed_frames([paths[0], str(broken)])
    with pytest.raises(ParameterError, match="^input 1: samples contain NaN or infinite values$"):
        model.embed_frames([paths[0], nan], sample_rate=S.SR)
    # What is wrong with the call itself is refused once, not blamed on each input.
    with pytest.raises(ParameterError, match="^sample_rate=-1 must be"):
        list(model.embed_frames_iter(paths, sample_rate=-1))
    with pytest.raises(ParameterError, match="^sample_rate=-1 must be"):
        model.embed_frames([nan], sample_rate=-1)


def test_a_clip_shorter_than_the_first_frame_centre_is_stamped_at_its_middle_one_at_a_time(model, clips):
    first = model.net.frame_times(1)[0]
    y = clips["tone"][1][: round(first * S.SR * 2 / 3)]  # ends before the first frame's centre
    [(frames, stamps)] = list(model.embed_frames_iter(y, sample_rate=S.SR))
    assert frames.shape[0] == 1 and stamps.tolist() == [len(y) / S.SR / 2]
    batch, shared = model.embed_frames([y, clips["tone"][1]], sample_rate=S.SR)
    np.testing.assert_allclose(batch[0, :1], frames, atol=1e-5, rtol=0)
    assert shared[0] == first  # shared by every row: the frame's own centre, as documented


def test_frame_embeddings_in_batches_equal_one_at_a_time(model, clips):
    arrays = [clips[label][1] for label in S.AUDIO_CLASSES] * 3  # nine clips of one length, in batches of 4
    same, _ = model.embed(arrays, sample_rate=S.SR, level="frame", batch_size=4)
    assert np.isfinite(same).all()  # none ends early, so no row has a NaN tail
    arrays.append(np.concatenate([arrays[0], arrays[1], arrays[2]]))  # a longer one, in a batch of its own
    batched, _ = model.embed(arrays, sample_rate=S.SR, level="frame", batch_size=4)
    np.testing.assert_array_equal(batched[:9, : same.shape[1]], same)
    for row, y in zip(batched, arrays):
        alone, _ = model.embed(y, sample_rate=S.SR, level="frame")
        np.testing.assert_allclose(row[: alone.shape[1]], alone[0], atol=1e-5, rtol=0)
        assert np.isnan(row[alone.shape[1] :]).all()


def test_frame_embeddings_batch_by_length_and_pad_short_clips_at_their_end(model, monkeypatch):
    sizes, network_embed = [], model.net.embed
    monkeypatch.setattr(model.net, "embed", lambda x, **kw: sizes.append(len(x)) or network_embed(x, **kw))
    model.embed([S.class_clip("hiss", i).astype(np.float32) for i in range(9)], sample_rate=S.SR, level="frame", batch_size=4)
    assert sizes == [4, 4, 1]  # nine clips of one padded length, batch_size at a time
    with pytest.raises(ParameterError, match="batch_size=0"):
        model.embed_frames(np.zeros(4000, np.float32), sample_rate=S.SR, batch_size=0)
    # A short clip is padded at its end: its frames are those of the clip followed by silence.
    y = S.class_clip("hiss", 1)[: round(0.3 * S.SR)].astype(np.float32)
    padded = np.zeros(round(S.CLIP_SECONDS * S.SR), np.float32)
    padded[: len(y)] = y
    short, stamps = model.embed(y, sample_rate=S.SR, level="frame")
    whole, _ = model.embed(padded, sample_rate=S.SR, level="frame")
    np.testing.assert_allclose(short[0], whole[0, : short.shape[1]], atol=1e-5, rtol=0)
    # A frame centred exactly on the clip's last sample is inside it.
    end = round(stamps[1] * S.SR)
    assert end == stamps[1] * S.SR
    assert model.embed(y[:end] if end <= len(y) else padded[:end], sample_rate=S.SR, level="frame")[0].shape[1] == 2


def test_an_image_file_for_an_audio_model_says_so(model, tmp_path):
    picture = tmp_path / "spectrogram.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    expected = rf"^{picture}: an image file, and the model \(.*\) takes audio$"
    [failure] = model.predict_iter([str(picture)])
    assert isinstance(failure, inference.Failure) and re.match(expected, failure.message)
    with pytest.raises(DataError, match=expected):
        model.embed(str(picture), level="frame")


def test_a_hop_longer_than_the_window_warns(model, recording, caplog):
    with caplog.at_level(logging.WARNING, logger="specnet"):
        [result] = model.predict(str(recording), window=1.0, hop=3.0, timeline=True)
    assert [r.getMessage() for r in caplog.records] == ["hop=3 s is longer than window=1 s: in files longer than 2 s, the audio between the windows is skipped"]
    assert [s["start"] for s in result.segments][:3] == [0.0, 3.0, 6.0]


@pytest.mark.parametrize(("options", "message"), [
    ({"top_k": True}, "top_k=True"),
    ({"top_k": 1.5}, "top_k=1.5"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": -4}, "batch_size=-4"),
])
def test_bad_counts_are_parameter_errors(model, recording, options, message):
    with pytest.raises(ParameterError, match=message):
        model.predict(str(recording), **options)


def test_a_window_shorter_than_an_uncentred_frame_is_refused():
    from specnet.errors import GivenValueError
    from specnet.featureconfig import FeatureConfig
    from specnet.network import SpecNet
    from specnet.modelspec import ModelSpec

    features = FeatureConfig(**{**S.FEATURES, "center": False})
    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b"), features=features,
                     clip_seconds=S.CLIP_SECONDS)
    uncentred = Model(SpecNet(spec), name="uncentred", device=torch.device("cpu"))
    clip = np.zeros(S.SR // 2, np.float32) + 0.1
    seconds = features.n_fft / S.SR
    with pytest.raises(GivenValueError, match=re.escape(f"window={seconds / 2:g} s is shorter than one of the model's FFT frames ({seconds:g} s), which it takes whole (center=False)")):
        uncentred.predict(clip, sample_rate=S.SR, window=seconds / 2)
    assert len(uncentred.predict(clip, sample_rate=S.SR, window=seconds)[0].probabilities) == 2  # one frame


def test_a_generator_refilling_one_buffer_gets_each_clips_own_scores(model, clips):
    # A recorder's loop hands on one array again and again; windows are views of the samples and
    # run batches later, so each input is copied when it is taken.
    arrays = [y for _, y in clips.values()]

    def refilled():
        buffer = np.empty_like(arrays[0])
        for y in arrays:
            buffer[:] = y
            yield buffer

    expected = probabilities(model.predict(arrays, sample_rate=S.SR))
    assert len({row.argmax() for row in expected}) > 1  # the clips differ
    np.testing.assert_allclose(probabilities(model.predict(refilled(), sample_rate=S.SR)), expected, atol=1e-6, rtol=0)
    tensors = (torch.from_numpy(y) for y in arrays)
    buffer = torch.empty(len(arrays[0]))
    refilled_tensors = (buffer.copy_(y) for y in tensors)
    np.testing.assert_allclose(probabilities(model.predict(refilled_tensors, sample_rate=S.SR)), expected, atol=1e-6, rtol=0)

    def refilled_list():
        samples = [0.0] * len(arrays[0])
        for y in arrays:
            samples[:] = y.tolist()
            yield samples

    np.testing.assert_allclose(probabilities(model.predict(refilled_list(), sample_rate=S.SR)), expected, atol=1e-6, rtol=0)
    # A ragged list is that input's failure, not the call's crash.
    results = list(model.predict_iter([[0.1, [0.2, 0.3]], arrays[0]], sample_rate=S.SR))
    assert results[0].message == "input 0: not an array of numbers (setting an array element with a sequence)"
    assert isinstance(results[1], Prediction)


@pytest.mark.parametrize("overlap", [True, False], ids=["decode-in-threads", "decode-in-caller"])
def test_failures_and_long_files_come_back_without_waiting_for_later_inputs(model, clips, recording, tmp_path, monkeypatch, overlap):
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: overlap)
    pulled = []

    def inputs(names):
        for name in names:
            pulled.append(name)
            yield name

    missing = [str(tmp_path / f"missing{i}.wav") for i in range(3 * inference.PREFETCH_FILES)]
    results = model.predict_iter(inputs(missing))
    assert isinstance(next(results), Failure) and len(pulled) <= inference.PREFETCH_FILES + 1
    results.close()
    # A long file, streamed, behind a short one whose windows wait for a full batch: both come
    # back once the decoding has read ahead, not at the end of the inputs.
    monkeypatch.setattr(inference, "STREAM_SECONDS", 10.0)
    short = str(next(iter(clips.values()))[0])
    pulled.clear()
    results = model.predict_iter(inputs([short, str(recording)] * (2 * inference.PREFETCH_FILES)), batch_size=64)
    first, second = next(results), next(results)
    assert (first.path, second.path) == (short, str(recording)) and len(pulled) <= inference.PREFETCH_FILES + 2
    np.testing.assert_allclose(first.probabilities, model.predict(short)[0].probabilities, atol=1e-5, rtol=0)
    results.close()


@pytest.mark.parametrize("overlap", [True, False], ids=["decode-in-threads", "decode-in-caller"])
def test_files_read_ahead_hold_a_bounded_number_of_samples(model, recording, monkeypatch, overlap):
    # 64 files of just under STREAM_SECONDS, decoded ahead, held 1.2 GB: the lookahead stops at
    # PREFETCH_SAMPLES (here about three of these 30 s recordings), however few files that is.
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: overlap)
    monkeypatch.setattr(inference, "PREFETCH_SAMPLES", 100 * model.sample_rate)
    pulled = []

    def inputs(count):
        for _ in range(count):
            pulled.append(str(recording))
            yield str(recording)

    results = model.predict_iter(inputs(20), num_workers=1)
    first = next(results)
    assert len(pulled) <= 5
    np.testing.assert_allclose(first.probabilities, model.predict(str(recording))[0].probabilities, atol=1e-5, rtol=0)
    assert len(list(results)) == 19


def test_closing_early_does_not_decode_the_files_read_ahead(model, clips, monkeypatch):
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: True)
    started = []
    decode = Model._decode_path

    def slow_decode(self, *args):
        started.append(args[1])
        time.sleep(0.05)  # a long file's decoding
        return decode(self, *args)

    monkeypatch.setattr(Model, "_decode_path", slow_decode)
    results = model.predict_iter([str(path) for path, _ in clips.values()] * 30, num_workers=1, batch_size=1)
    next(results)  # PREFETCH_FILES files are queued for the worker by now
    started_then = len(started)
    results.close()
    assert len(started) <= started_then + 1  # the one the worker was on; the queued ones were dropped


def test_streamed_long_file_matches_in_memory(model, recording, monkeypatch):
    whole = model.predict(str(recording), timeline=True)[0]
    whole_embedding = model.embed(str(recording))
    monkeypatch.setattr(inference, "STREAM_SECONDS", 10.0)
    streamed = model.predict([str(recording)], timeline=True, batch_size=7)[0]
    assert streamed.duration == pytest.approx(whole.duration)
    np.testing.assert_allclose(streamed.probabilities, whole.probabilities, atol=1e-5, rtol=0)
    assert [(s["start"], s["end"], s["label"]) for s in streamed.segments] == [
        (s["start"], s["end"], s["label"]) for s in whole.segments
    ]
    np.testing.assert_allclose(model.embed(str(recording)), whole_embedding, atol=1e-5, rtol=0)


def test_a_streamed_file_keeps_no_array_per_batch(model, recording, monkeypatch):
    # Each batch's outputs kept as an array of their own split the freed memory that the next
    # batch's layers reuse (glibc's malloc as the CLI sets it up): the heap grew by 150-460 MB
    # over a 3-hour file. They are copied into one array, grown by doubling.
    monkeypatch.setattr(inference, "STREAM_SECONDS", 10.0)
    run, kept, most_kept = Model._run, weakref.WeakSet(), []

    def counting_run(self, batch, **options):
        most_kept.append(len(kept))  # earlier batches' outputs still alive
        outputs = run(self, batch, **options)
        kept.add(outputs)
        return outputs

    monkeypatch.setattr(Model, "_run", counting_run)
    [result] = model.predict(str(recording), timeline=True, batch_size=4)
    assert len(most_kept) > 25 and max(most_kept) <= 1  # one per batch run before: 29 at the last


@pytest.mark.parametrize(("suffix", "says"), [(".wav", "truncated: the header declares 30.000 s of audio"),
                                              (".flac", "decoding stopped at ")])
def test_a_cut_short_long_file_is_streamed_with_one_warning(model, recording, tmp_path, monkeypatch, caplog, suffix, says):
    whole = tmp_path / f"whole{suffix}"
    sf.write(whole, sf.read(recording)[0], S.SR, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the header still declares 30 s
    monkeypatch.setattr(inference, "STREAM_SECONDS", 10.0)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        [result] = model.predict([str(cut)], timeline=True)
    assert 19.0 < result.duration < 20.5  # two thirds of the samples, streamed to the end
    # A WAV file's first read reports it, and the stream that follows does not; a FLAC file's stream finds it.
    [record] = caplog.records
    assert record.getMessage().startswith(f"{cut}: {says}")


SILENT = "silent (no sample above -90 dBFS): what the model makes of it means nothing"


def test_silence_is_classified_with_a_warning(model, tmp_path, caplog, monkeypatch):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    quiet = tmp_path / "quiet.wav"  # -80 dBFS noise: quiet, but a real recording the front-end can read
    sf.write(quiet, np.random.default_rng(0).normal(0, 1e-4, 16000).astype(np.float32), 16000, subtype="FLOAT")
    long_silent = tmp_path / "long_silent.wav"  # streamed: silence anywhere in it is heard
    sf.write(long_silent, np.zeros(12 * 16000, np.float32), 16000)
    monkeypatch.setattr(inference, "STREAM_SECONDS", 10.0)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        results = model.predict([str(silent), str(quiet), str(long_silent)])
        model.predict(np.zeros(8000, np.float32), sample_rate=8000)
        model.embed_frames([np.ones(8000, np.float32) * 0.1, np.zeros(8000, np.float32), str(silent)], sample_rate=8000)
    assert len(results) == 3 and results[2].duration == 12.0  # classified all the same: silence is valid audio
    assert [r.getMessage() for r in caplog.records] == [
        f"{silent}: {SILENT}", f"{long_silent}: {SILENT}", f"input 0: {SILENT}", f"input 1: {SILENT}", f"{silent}: {SILENT}",
    ]


@pytest.mark.parametrize("streamed", [False, True])
def test_windows_that_skip_the_sound_are_called_silent_as_windows_not_as_the_file(model, clips, tmp_path, monkeypatch, caplog, streamed):
    # A tone at 1.0-1.5 s of 3.5 s; 0.5 s windows every 2 s start at 0, 2 and (end-aligned) 3 s: none hears it.
    samples = np.zeros(int(3.5 * S.SR), np.float32)
    samples[S.SR : S.SR + len(clips["tone"][1])] = clips["tone"][1]
    path = write_audio(tmp_path / "gap.wav", samples, S.SR, subtype="FLOAT")
    if streamed:
        monkeypatch.setattr(inference, "STREAM_SECONDS", 2.0)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        [result] = model.predict(str(path), hop=2.0, timeline=True)
        model.predict(str(path))  # the default hop (half a window) hears it: nothing to say
    assert [s["start"] for s in result.segments] == [0.0, 2.0, 3.0] and all(s["label"] is None for s in result.segments)
    assert [r.getMessage() for r in caplog.records] == [
        "hop=2 s is longer than the model's 0.5 s window: in files longer than 1 s, the audio between the windows is skipped",
        f"{path}: silent in its windows (no sample above -90 dBFS; a hop longer than the window skips the audio between them): "
        "what the model makes of it means nothing",
    ]


@pytest.fixture(scope="module")
def tone_then_silence(clips, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 0.5 s tone, then 3 s of digital silence: 13 windows of the 0.5 s model (0.25 s apart), 11 silent."""
    samples = np.concatenate([clips["tone"][1], np.zeros(3 * S.SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("silence") / "tone_then_silence.wav", samples, S.SR, subtype="FLOAT"), samples


def window_rows(model, samples: np.ndarray, *, embed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each window's probabilities (or embedding) run as an input of its own, and which are silent."""
    window, hop = int(S.CLIP_SECONDS * S.SR), int(S.CLIP_SECONDS * S.SR) // 2
    windows = inference.Windows(samples, window, hop)[:]
    rows = model.embed(list(windows), sample_rate=S.SR) if embed else probabilities(model.predict(list(windows), sample_rate=S.SR))
    return rows, np.abs(windows).max(axis=1) == 0


@pytest.mark.parametrize("streamed", [False, True])
def test_silent_windows_are_left_out_of_a_clips_mean(model, tone_then_silence, monkeypatch, streamed):
    path, samples = tone_then_silence
    if streamed:
        monkeypatch.setattr(inference, "STREAM_SECONDS", 2.0)
    rows, silent = window_rows(model, samples)
    assert silent.tolist() == [False] * 2 + [True] * 11  # the second window holds the tone's end
    result = model.predict(str(path), timeline=True)[0]
    np.testing.assert_allclose(result.probabilities, rows[~silent].mean(0), atol=1e-5, rtol=0)
    assert np.abs(rows.mean(0) - rows[~silent].mean(0)).max() > 0.01  # the silent windows would have moved it
    assert [s["label"] is None and s["score"] is None for s in result.segments] == silent.tolist()
    assert result.segments[0]["label"] == "tone"
    embeddings, _ = window_rows(model, samples, embed=True)
    np.testing.assert_allclose(model.embed(str(path))[0], embeddings[~silent].mean(0), atol=1e-5, rtol=0)


def test_a_silent_clip_is_the_mean_of_all_its_windows(model):
    samples = np.zeros(2 * S.SR, np.float32)
    rows, silent = window_rows(model, samples)
    assert silent.all()
    [result] = model.predict(samples, sample_rate=S.SR, timeline=True)
    np.testing.assert_allclose(result.probabilities, rows.mean(0), atol=1e-5, rtol=0)
    assert all(s["label"] is None for s in result.segments)


def test_decoding_overlaps_the_network_only_with_cores_to_spare(model, monkeypatch):
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 4)
    for threads, overlaps in ((4, False), (8, False), (2, True)):
        monkeypatch.setattr(inference.torch, "get_num_threads", lambda: threads)
        assert model._decode_overlaps_network() is overlaps


def test_batches_are_capped_by_log_mel_cells_and_results_do_not_change(model, clips, recording, monkeypatch):
    # Short clips and one long recording (many windows): no forward pass may exceed the cap.
    inputs = [str(path) for path, _ in clips.values()] * 3 + [str(recording)]
    sizes: list[int] = []
    run = Model._run
    monkeypatch.setattr(Model, "_run", lambda self, batch, **kw: sizes.append(len(batch)) or run(self, batch, **kw))
    expected = probabilities(model.predict(inputs, batch_size=64))
    windows = sum(sizes)
    assert max(sizes) == 64 and windows > 64
    features = model.config.features
    cells = features.n_mels * features.num_frames(model.config.clip_samples)
    monkeypatch.setattr(inference, "MAX_BATCH_CELLS", 3 * cells + 1)  # room for 3 windows
    sizes.clear()
    np.testing.assert_allclose(probabilities(model.predict(inputs, batch_size=64)), expected, atol=1e-5, rtol=0)
    assert max(sizes) == 3 and sum(sizes) == windows


def test_nearly_silent_inputs_are_classified_with_a_warning(model, tmp_path, caplog):
    dither = np.random.default_rng(0).integers(-2, 3, S.SR).astype(np.int16)  # two steps of 16-bit audio
    sf.write(tmp_path / "dither.wav", dither, S.SR, subtype="PCM_16")
    quiet_but_real = np.full(S.SR, 10 ** (-60 / 20), np.float32)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        results = model.predict([str(tmp_path / "dither.wav"), quiet_but_real], sample_rate=S.SR)
    assert len(results) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'dither.wav'}: nearly silent (loudest sample -84 dBFS): what the model hears is mostly noise; its output says little"]


def test_integer_samples_given_as_floats_are_classified_with_a_warning(model, caplog):
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(S.SR) / S.SR)).astype(np.float32)
    int16_scale = np.round(tone * 32767).astype(np.float32)  # peak 16384: int16 samples cast, not scaled
    with caplog.at_level(logging.WARNING, logger="specnet"):
        scaled, unscaled = model.predict([tone, int16_scale], sample_rate=S.SR)
    assert [r.getMessage() for r in caplog.records] == [
        "input 1: samples reach 1.64e+04, beyond full scale (±1): integer samples given as floats? "
        "Divide 16-bit ones by 32768; levels and silence are measured against ±1"]
    assert model.config.features.ref_peak  # dB from each clip's peak: the scale itself changes nothing
    np.testing.assert_allclose(unscaled.probabilities, scaled.probabilities, atol=1e-3)


def test_a_clip_shorter_than_the_window_is_one_segment_ending_at_its_end(model, tmp_path):
    short = make_tone(tmp_path / "short.wav", 440.0, 0.3, S.SR)  # the model's windows are 0.5 s
    segments = model.predict(str(short), timeline=True)[0].segments
    assert len(segments) == 1 and segments[0]["start"] == 0.0 and segments[0]["end"] == pytest.approx(0.3)


def record_forward_threads(monkeypatch) -> list[tuple[str, int]]:
    """A list that gets, for each batch the network runs, its thread's name and torch thread count."""
    ran_in: list[tuple[str, int]] = []
    forward = Model._forward

    def recorded(self, batch, *, embed=None):
        ran_in.append((threading.current_thread().name, torch.get_num_threads()))
        return forward(self, batch, embed=embed)

    monkeypatch.setattr(Model, "_forward", recorded)
    return ran_in


@pytest.fixture
def two_torch_threads():
    """torch on two intra-op threads for one test (the suite runs on one: conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_batches_run_in_lanes_on_a_cpu_torch_fills_give_the_same_results_in_order(model, clips, recording, tmp_path,
                                                                                   monkeypatch, two_torch_threads):
    # 2 cores, 2 torch threads: two batches run at once, each in a worker on one thread, while this
    # thread decodes. batch_size=4 (2 windows in each lane) spreads the recording's windows over batches
    # running together; one batch at a time, batch_size=2 runs the same batches.
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)
    assert model._lanes(model.config.clip_samples) == 2
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    good = [str(path) for path, _ in clips.values()]
    inputs = [good[0], str(recording), good[1], str(broken), *good[2:]] * 3
    ran_in = record_forward_threads(monkeypatch)
    threads_before = threading.active_count()
    results = list(model.predict_iter(inputs, batch_size=4, timeline=True))
    embeddings = model.embed([p for p in inputs if p != str(broken)], batch_size=4)
    in_lanes = [n for name, n in ran_in if name.startswith("specnet-forward_")]
    here = [n for name, n in ran_in if name == threading.current_thread().name]  # a last batch, when no other runs
    assert len(in_lanes) + len(here) == len(ran_in) and set(in_lanes) == {1} and set(here) <= {2}
    assert torch.get_num_threads() == 2 and threading.active_count() == threads_before

    monkeypatch.setattr(Model, "_lanes", lambda self, window: 0)  # one batch at a time, in this thread
    ran_in.clear()
    expected = list(model.predict_iter(inputs, batch_size=2, timeline=True))
    assert {name for name, _ in ran_in} == {threading.current_thread().name}
    assert [r.path for r in results] == [r.path for r in expected] == inputs
    assert [type(r) for r in results] == [type(r) for r in expected]
    for got, want in zip(results, expected):
        if isinstance(want, Prediction):
            np.testing.assert_array_equal(got.probabilities, want.probabilities)
            assert got.segments == want.segments
    np.testing.assert_array_equal(embeddings, model.embed([p for p in inputs if p != str(broken)], batch_size=2))


def test_lanes_only_where_torch_fills_the_cores_and_no_layer_is_training(model, monkeypatch):
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 16)
    for threads, lanes in ((16, inference.MAX_LANES), (32, inference.MAX_LANES), (8, 0), (1, 0)):
        monkeypatch.setattr(inference.torch, "get_num_threads", lambda: threads)
        assert model._lanes(model.config.clip_samples) == lanes, threads
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(inference.torch, "get_num_threads", lambda: 2)
    assert model._lanes(model.config.clip_samples) == 2
    # A long window's layer outputs are shared well between threads within one batch: no lanes.
    window_cells = model._window_cells(model.config.clip_samples)
    monkeypatch.setattr(inference, "MAX_LANE_WINDOW_CELLS", window_cells)
    assert model._lanes(model.config.clip_samples) == 2 and model._lanes(2 * model.config.clip_samples) == 0
    images = Model(SpecNet(ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=("x", "y"), in_chans=3,
                                     image_size=(16, 16))), device="cpu")
    assert images._lanes(0) == 0  # an image's layer outputs, too
    layer = next(m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    layer.train()  # eval mode is then set around each batch, which batches running together could not share
    try:
        assert model._lanes(model.config.clip_samples) == 0
    finally:
        layer.eval()


def test_batches_running_together_share_the_batch_size_and_the_log_mel_cell_cap(model, clips, recording, monkeypatch,
                                                                                 two_torch_threads):
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)  # two lanes (the test above)
    sizes: list[int] = []
    forward = Model._forward
    monkeypatch.setattr(Model, "_forward", lambda self, batch, **kw: sizes.append(len(batch)) or forward(self, batch, **kw))
    inputs = [str(path) for path, _ in clips.values()] * 3 + [str(recording)]
    model.predict(inputs, batch_size=8)
    assert max(sizes) == 4 and sum(sizes) > 8  # 8 windows at once: 4 in each of 2 lanes
    features = model.config.features
    cells = features.n_mels * features.num_frames(model.config.clip_samples)
    monkeypatch.setattr(inference, "MAX_BATCH_CELLS", 6 * cells + 1)  # room for 6 windows: 3 in each lane
    sizes.clear()
    model.predict(inputs, batch_size=64)
    assert max(sizes) == 3 and sum(sizes) > 6


def test_a_batch_failing_in_a_lane_comes_after_the_results_of_the_batches_before_it(model, clips, monkeypatch):
    # Three batches running at once; two finish and the third fails before this thread looks again. All
    # three were handed out at one look, and the error came before the four results finished ahead of it.
    running: list[tuple[Future, np.ndarray]] = []

    @contextmanager
    def batch_runner(self, lanes, *, embed):
        def submit(batch, here=False):
            running.append((Future(), batch))
            return running[-1][0]
        yield submit

    monkeypatch.setattr(inference.os, "cpu_count", lambda: 1)  # files decoded here, each as it is needed
    monkeypatch.setattr(inference, "PREFETCH_FILES", 0)
    monkeypatch.setattr(Model, "_lanes", lambda self, window: 3)
    monkeypatch.setattr(Model, "_batch_runner", batch_runner)
    paths = [str(path) for path, _ in clips.values()] * 3

    def inputs():
        yield from paths[:6]  # three batches of two
        for future, batch in running[:2]:
            future.set_result(model._run(batch))
        running[2][0].set_exception(RuntimeError("the network ran out of memory"))
        yield from paths[6:]

    results = []
    with pytest.raises(RuntimeError, match="ran out of memory"):
        for result in model.predict_iter(inputs(), batch_size=6):  # 6 windows at once: 2 in each of 3 lanes
            results.append(result)
    assert [r.path for r in results] == paths[:4]


def test_a_layer_set_training_between_results_leaves_batches_in_eval_mode_as_without_lanes(model, clips, tmp_path, monkeypatch,
                                                                                           two_torch_threads):
    # Lanes are chosen when the call starts; the workers ran every later batch in training mode, so
    # batch norm used each batch's own statistics and wrote them into its running ones.
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)  # two lanes
    monkeypatch.setattr(inference, "PREFETCH_FILES", 0)  # the failure goes on before the next file is decoded
    tuned = Model(copy.deepcopy(model.net), device="cpu")
    assert tuned._lanes(model.config.clip_samples) == 2
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    paths = [str(path) for path, _ in clips.values()] * 2
    buffers = {name: value.clone() for name, value in tuned.net.named_buffers()}
    results = tuned.predict_iter([str(broken), *paths], batch_size=2)
    assert isinstance(next(results), Failure)
    tuned.net.train()  # fine-tuning between results, say
    later = list(results)
    assert tuned.net.training and all(torch.equal(value, buffers[name]) for name, value in tuned.net.named_buffers())
    np.testing.assert_array_equal(probabilities(later), probabilities(model.predict(paths, batch_size=2)))


def test_batches_under_a_callers_autocast_run_under_it_as_without_lanes(model, clips, monkeypatch, two_torch_threads):
    # Autocast holds in the thread that enters it: workers ran the batches in float32.
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)  # two lanes, but for the autocast
    paths = [str(path) for path, _ in clips.values()] * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._lanes(model.config.clip_samples) == 0
        in_bfloat16 = probabilities(model.predict(paths, batch_size=2))
    monkeypatch.setattr(Model, "_lanes", lambda self, window: 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(in_bfloat16, probabilities(model.predict(paths, batch_size=2)))
    assert not np.array_equal(in_bfloat16, probabilities(model.predict(paths, batch_size=2)))  # float32 differs


def test_a_last_batch_with_no_other_running_runs_here_on_every_thread(model, clips, monkeypatch, two_torch_threads):
    # Nothing is left to overlap it with: in a worker it ran on one of the two threads, and a call of
    # one batch (a file at a time, say) started a thread for it: 5.9 ms a short FSDD file, 3.5 here.
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)  # two lanes
    ran_in = record_forward_threads(monkeypatch)
    model.predict([str(path) for path, _ in clips.values()])
    assert ran_in == [(threading.current_thread().name, 2)]


def test_a_callers_forward_hook_sees_the_batches_in_this_thread_in_order(model, clips, monkeypatch, two_torch_threads):
    # Workers called it from two threads at once, so rows it kept came out of input order.
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)  # two lanes, but for the hook
    called_in: list[str] = []
    hook = model.net.backbone.register_forward_hook(lambda *args: called_in.append(threading.current_thread().name))
    try:
        assert model._lanes(model.config.clip_samples) == 0
        model.predict([str(path) for path, _ in clips.values()] * 4, batch_size=2)
    finally:
        hook.remove()
    assert called_in == [threading.current_thread().name] * 6
