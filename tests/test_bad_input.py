"""Bad and odd input files through every entry point.

Odd-but-valid files (silence, many channels, tiny clips, high rates, float64,
8-bit, odd chunks, non-UTF-8 names) must give correct results; bad files must
give a SpecnetError in Python and, on the command line, exactly one line on
stderr naming the file and the problem, no traceback and exit code 1. In a
batch, bad files are reported and skipped and the good files' results match
what each gives alone. The corpus comes from ``tests/corpus.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from corpus import BAD_AUDIO, BAD_IMAGE, ODD_AUDIO, deny_reads, make_corpus, tiny_audio_model, tiny_image_model, wav_bytes
from helpers import CUDA_RTOL, ON_CUDA, make_class_folders, make_image, make_tone, peak_frequency, sine

import specnet
from specnet.audio import audio_info, iter_audio_blocks, load_audio
from specnet.cli import main
from specnet.errors import AudioError, ImageError, ParameterError, SpecnetError

REPO = Path(__file__).resolve().parents[1]
# Scores of a file in a batch match its scores alone to float32 rounding: the
# network sees it batched with other files' windows, and CPU kernels may sum
# in a different order for a different batch size (on CUDA: see CUDA_RTOL).
SCORE_ATOL = CUDA_RTOL if ON_CUDA else 1e-6
EMBEDDING_RTOL = CUDA_RTOL if ON_CUDA else 0.0  # of the vector's largest value


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return {c.name: c for c in make_corpus(tmp_path_factory.mktemp("corpus"))}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_audio_model(tmp_path_factory)


@pytest.fixture(scope="module")
def model(model_file):
    return specnet.load_model(model_file, device="cpu")


@pytest.fixture(scope="module")
def alone(model, cases) -> dict:
    """Each odd-but-valid file's prediction when it is classified by itself."""
    return {c.str_path: model.predict(c.str_path)[0] for c in cases.values() if c.kind == "odd" and not c.slow}


@pytest.fixture
def denied(cases, monkeypatch):
    """The mode-000 file really is unreadable, also when the tests run as root."""
    deny_reads(monkeypatch, [cases["no_read_permission"].path])


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``specnet ARGS`` in this process through ``main()``: (exit code, stdout, stderr).
    (conftest's restore_specnet_logging undoes what main() does to the process.)"""
    capsys.readouterr()
    try:
        main([os.fsdecode(a) if isinstance(a, (bytes, Path)) else str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *, names: str, says: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert names in lines[0] and says in lines[0], err


def audio_cases(cases, kind: str) -> list:
    return [c for c in cases.values() if c.kind == kind and c.input_kind == "audio"]


# ---------------------------------------------------------------- the corpus itself


def test_corpus_has_every_kind(cases):
    assert len(cases) >= 20
    assert sorted(n for n, c in cases.items() if c.kind == "bad" and c.input_kind == "audio") == sorted(BAD_AUDIO)
    assert sorted(n for n, c in cases.items() if c.kind == "bad" and c.input_kind == "image") == sorted(BAD_IMAGE)
    assert sorted(n for n, c in cases.items() if c.kind == "odd") == sorted(ODD_AUDIO)
    assert all(c.expected for c in cases.values() if c.kind == "bad")


# ---------------------------------------------------------------- Python API: load_audio


@pytest.mark.parametrize("name", BAD_AUDIO)
def test_load_audio_refuses_bad_file(cases, denied, name):
    case = cases[name]
    with pytest.raises(AudioError) as exc:
        load_audio(case.path, sample_rate=16000)
    message = str(exc.value)
    assert message.startswith(case.display), message  # names the file first
    assert case.expected in message
    assert "\n" not in message


@pytest.mark.parametrize("name", [n for n in ODD_AUDIO if n != "10min"])
def test_load_audio_odd_file_matches_its_header(cases, name):
    case = cases[name]
    expect = case.expect
    info = audio_info(case.path)
    assert (info.sample_rate, info.channels, info.frames) == (expect["sample_rate"], expect["channels"], expect["frames"])
    y, sr = load_audio(case.path, mono=False)
    assert sr == info.sample_rate
    assert y.dtype == np.float32 and y.shape == (info.channels, expect.get("decoded", info.frames))
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert (not y.any()) if expect.get("silent") else y.any()


def test_a_truncated_wav_is_used_with_a_warning(cases, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="specnet"):
        y, _ = load_audio(cases["truncated_wav"].path)
    assert len(y) == 1000
    [record] = caplog.records
    assert record.getMessage() == (
        f"{cases['truncated_wav'].display}: truncated: the header declares 1.000 s of audio, "
        "the file holds 0.062 s; using what is there"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specnet"):  # streaming reports it the same way ...
        assert sum(b.n_valid for b in iter_audio_blocks(cases["truncated_wav"].path, block_samples=400)) == 1000
        assert [r.getMessage() for r in caplog.records] == [record.getMessage()]
        caplog.clear()  # ... unless the caller has already done so
        assert sum(b.n_valid for b in iter_audio_blocks(cases["truncated_wav"].path, block_samples=400,
                                                        warn_truncated=False)) == 1000
    assert caplog.records == []
    tone = np.round(sine(440.0, 0.1, 16000) * 32767)
    intact = tmp_path / "intact.wav"
    intact.write_bytes(wav_bytes(tone, 16000))
    streamed = [tmp_path / f"streamed{i}.wav" for i in range(2)]  # writers that could not fill in the size
    streamed[0].write_bytes(wav_bytes(tone, 16000, data_size=0xFFFFFFFF))
    streamed[1].write_bytes(wav_bytes(tone, 16000, data_size=0x7FFFFFFF))
    with caplog.at_level(logging.WARNING, logger="specnet"):
        assert [len(load_audio(path)[0]) for path in (intact, *streamed)] == [1600] * 3
    assert caplog.records == []


def test_odd_files_hold_the_right_samples(cases):
    scale = 1 / 32768  # 16-bit PCM -> [-1, 1)
    tone_16k = np.round(sine(440.0, 1.0, 16000) * 32767) * scale

    y, _ = load_audio(cases["truncated_wav"].path)  # the 1000 whole frames that are there
    np.testing.assert_allclose(y, tone_16k[:1000], atol=1e-7)
    y, _ = load_audio(cases["truncated_flac"].path)  # its first FLAC frame, written by soundfile
    np.testing.assert_allclose(y, tone_16k[:4096], atol=1e-4)
    y, _ = load_audio(cases["list_junk_chunks"].path)  # LIST and junk chunks skipped, data intact
    np.testing.assert_allclose(y, tone_16k[:4800], atol=1e-7)
    y, _ = load_audio(cases["float64"].path)
    np.testing.assert_allclose(y, sine(440.0, 0.5, 22050), atol=1e-7)
    y, _ = load_audio(cases["8bit_unsigned"].path)
    np.testing.assert_allclose(y, sine(440.0, 0.5, 8000), atol=1 / 128)
    y, _ = load_audio(cases["one_sample"].path)
    np.testing.assert_allclose(y, [0.5], atol=1e-4)

    y, sr = load_audio(cases["96k_8ch_24bit"].path, mono=False)  # channel c holds 300 * (c + 1) Hz
    assert [round(peak_frequency(ch, sr) / 10) * 10 for ch in y] == [300 * (c + 1) for c in range(8)]
    y, sr = load_audio(cases["stereo_flac_44k"].path, mono=False)
    assert [round(peak_frequency(ch, sr)) for ch in y] == [440, 880]

    # A name that is not UTF-8 works as bytes and as the surrogate-escaped str in sys.argv.
    case = cases["non_utf8_name"]
    assert isinstance(case.path, bytes)
    a, _ = load_audio(case.path)
    b, _ = load_audio(case.str_path)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, tone_16k[:4800], atol=1e-4)  # written by soundfile, which rounds differently


def test_non_utf8_name_is_shown_escaped_in_errors(tmp_path):
    bad = os.fsencode(tmp_path) + b"/bad-\xff.wav"
    with open(bad, "wb"):
        pass
    with pytest.raises(AudioError, match=r"bad-\\xff\.wav: file is empty"):
        load_audio(bad)


def test_ten_minute_clip_loads_and_streams(cases):
    case = cases["10min"]
    assert audio_info(case.path).duration == 600.0
    y, sr = load_audio(case.path, offset=599.5)
    assert sr == 8000 and y.shape == (4000,) and np.abs(y).max() <= 0.011
    blocks = specnet.iter_audio_blocks(case.path, block_samples=8000 * 60)
    assert sum(b.n_valid for b in blocks) == 4_800_000


# ---------------------------------------------------------------- Python API: a model


def test_predict_odd_files(model, cases, alone):
    odd = [c for c in audio_cases(cases, "odd") if not c.slow]
    for case in odd:
        result = alone[case.str_path]
        assert result.path == case.str_path
        assert np.isfinite(result.probabilities).all(), case.name
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        expected = case.expect.get("decoded", case.expect["frames"]) / case.expect["sample_rate"]
        assert result.duration == pytest.approx(expected, abs=1e-3), case.name

    # Many channels at a high rate: the same as mixing down and resampling by hand.
    path = cases["96k_8ch_24bit"].path
    mixed, sr = load_audio(path, sample_rate=16000)
    by_hand = model.predict(mixed, sample_rate=sr)[0]
    np.testing.assert_allclose(model.predict(path)[0].probabilities, by_hand.probabilities, atol=SCORE_ATOL)


@pytest.mark.parametrize("name", BAD_AUDIO)
def test_predict_bad_file_raises(model, cases, denied, name):
    case = cases[name]
    with pytest.raises(SpecnetError) as exc:
        model.predict(case.path)
    assert case.display in str(exc.value) and case.expected in str(exc.value)
    assert str(exc.value).count(case.display) == 1  # named once, not "path: path: ..."


def test_predict_iter_skips_bad_files_and_keeps_good_results(model, cases, alone, denied):
    good = [c for c in audio_cases(cases, "odd") if not c.slow]
    bad = audio_cases(cases, "bad")
    mixed = [c for pair in zip(good, bad) for c in pair] + good[len(bad):] + bad[len(good):]
    results = list(model.predict_iter([c.str_path for c in mixed], batch_size=8))
    assert len(results) == len(mixed)
    for case, result in zip(mixed, results):
        if case.kind == "bad":
            assert isinstance(result, specnet.inference.Failure), case.name
            assert case.expected in result.reason
        else:
            single = alone[case.str_path]
            assert result.path == case.str_path
            np.testing.assert_allclose(result.probabilities, single.probabilities, atol=SCORE_ATOL, err_msg=case.name)
            assert [p["label"] for p in result.predictions] == [p["label"] for p in single.predictions]


def test_image_model_refuses_corrupt_png(tmp_path_factory, cases, tmp_path):
    image_model = specnet.load_model(tiny_image_model(tmp_path_factory), device="cpu")
    case = cases["corrupt_png"]
    with pytest.raises(ImageError, match="corrupt image data"):
        specnet.load_image(case.path)
    make_image(tmp_path / "ok.png", "RGB", (20, 20))
    results = list(image_model.predict_iter([case.path, str(tmp_path / "ok.png")]))
    assert isinstance(results[0], specnet.inference.Failure) and case.expected in results[0].reason
    alone = image_model.predict(str(tmp_path / "ok.png"))[0]
    np.testing.assert_allclose(results[1].probabilities, alone.probabilities, atol=SCORE_ATOL)


def test_image_arrays_of_the_wrong_shape_say_the_right_one(tmp_path_factory):
    image_model = specnet.load_model(tiny_image_model(tmp_path_factory), device="cpu")
    with pytest.raises(ParameterError, match=r"^expected 3-D input or a batch of them, got shape \(8, 9\); "
                                             r"a grey image is \(1, height, width\): pixels\[None\]$"):
        image_model.predict(np.zeros((8, 9), np.uint8))
    grey_batch = np.zeros((5, 8, 9), np.uint8)
    with pytest.raises(ParameterError, match=r"a batch of them \(images, 1, height, width\)$"):
        image_model.predict(grey_batch)
    assert len(image_model.predict(grey_batch[:, None])) == 5
    for call in (lambda: image_model.embed_frames([grey_batch[0, None]]), lambda: list(image_model.embed_frames_iter(["a.png", "b.png"]))):
        with pytest.raises(ParameterError, match="^frame-level embeddings need an audio model$"):
            call()
    rgba = np.random.default_rng(0).integers(0, 256, (4, 8, 9), dtype=np.uint8)
    np.testing.assert_allclose(image_model.predict(rgba)[0].probabilities, image_model.predict(rgba[:3])[0].probabilities)


def test_a_pillow_image_is_scored_as_its_file_is(tmp_path_factory, tmp_path, model_file):
    from PIL import Image

    image_model = specnet.load_model(tiny_image_model(tmp_path_factory), device="cpu")
    make_image(tmp_path / "p.png", "P", (20, 24))  # a palette image: converted as the file is
    with Image.open(tmp_path / "p.png") as picture:
        picture.load()
        from_file = image_model.predict(str(tmp_path / "p.png"))[0].probabilities
        np.testing.assert_allclose(image_model.predict(picture)[0].probabilities, from_file, atol=SCORE_ATOL)
        both = image_model.predict([picture, str(tmp_path / "p.png")])
        np.testing.assert_allclose(both[0].probabilities, both[1].probabilities, atol=SCORE_ATOL)
        audio_model = specnet.load_model(model_file, device="cpu")
        with pytest.raises(ParameterError, match=r"^input 0: expected a file path or an array of samples, got a Pillow image, and the model takes audio$"):
            audio_model.predict(picture, sample_rate=16000)


def test_a_generator_refilling_one_pillow_image_gets_each_its_own_scores(tmp_path_factory, monkeypatch):
    import time

    from PIL import Image

    from specnet.inference import Model

    image_model = specnet.load_model(tiny_image_model(tmp_path_factory), device="cpu")
    assert repr(image_model).endswith(", images of 16 x 16 pixels, on cpu>")
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for _ in range(3)]
    expected = [r.probabilities for r in image_model.predict(pictures)]
    # Decoded in a worker thread, behind the caller: the image must be copied when it is taken.
    monkeypatch.setattr(Model, "_decode_overlaps_network", lambda self: True)
    from_samples = Model._from_samples
    monkeypatch.setattr(Model, "_from_samples", lambda self, *args: time.sleep(0.05) or from_samples(self, *args))

    def refilled():
        canvas = Image.new("RGB", (20, 24))
        for picture in pictures:
            canvas.paste(picture)
            yield canvas

    np.testing.assert_allclose([r.probabilities for r in image_model.predict(refilled())], expected, atol=1e-6)


# ---------------------------------------------------------------- CLI: classify


@pytest.mark.parametrize("name", BAD_AUDIO)
def test_classify_bad_file_one_line(capsys, model_file, cases, denied, name):
    case = cases[name]
    code, out, err = run_cli(capsys, "classify", "-m", model_file, case.str_path)
    assert out == ""
    # A folder argument is searched for audio files, even one named x.wav.
    says = "no audio files in this folder" if name == "directory" else case.expected
    assert_one_error_line(code, err, names=case.display, says=says)
    assert err.count(case.display) == 1


def test_classify_batch_reports_bad_files_and_keeps_good_results(capsys, model_file, cases, alone, denied):
    files = [c for c in cases.values() if c.input_kind == "audio" and not c.slow and c.name != "directory"]
    code, out, err = run_cli(capsys, "classify", "-m", model_file, "--format", "json", "--batch-size", "4",
                             *[c.str_path for c in files])
    assert code == 1 and "Traceback" not in err
    bad = [c for c in files if c.kind == "bad"]
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    # Decoding threads may finish in either order.
    [truncated] = [w for w in warnings if w.startswith(f"warning: {cases['truncated_wav'].display}: truncated: ")]
    assert sorted(warnings) == sorted([
        truncated, f"warning: {cases['silence'].display}: silent (no sample above -90 dBFS): what the model makes of it means nothing",
        f"warning: {cases['truncated_flac'].display}: decoding stopped at 0.256 s of the 1.000 s the file declares "
        "(damaged data?); using what was decoded",
        *(f"warning: {cases[name].display}: {seconds} s is shorter than one of the model's FFT frames (0.032 s): the model's output says little"
          for name, seconds in (("one_sample", "6.25e-05"), ("10ms", "0.01"))),
    ])
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert lines[-1] == f"{len(bad)} of {len(files)} inputs failed"
    assert len(lines) == len(bad) + 1
    for case, line in zip(bad, lines):  # in input order, one line each
        assert line.startswith(f"error: {case.display}: ") and case.expected in line, line
    results = json.loads(out)
    # JSON names files as the errors and the table do: a non-UTF-8 name as \xNN, not lone surrogates.
    odd = [c for c in files if c.kind == "odd"]
    assert [r["path"] for r in results] == [c.display for c in odd]
    json.dumps(results, ensure_ascii=False).encode("utf-8")  # no lone surrogates anywhere
    for case, result in zip(odd, results):
        single = alone[case.str_path]
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in single.predictions]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]],
                                   [p["score"] for p in single.predictions], atol=SCORE_ATOL)


def test_classify_odd_files_table_and_csv(capsys, model_file, cases):
    case = cases["non_utf8_name"]
    code, out, err = run_cli(capsys, "classify", "-m", model_file, case.str_path, cases["silence"].path)
    assert code == 0 and err == f"warning: {cases['silence'].display}: silent (no sample above -90 dBFS): what the model makes of it means nothing\n"
    assert out.startswith(case.display + "  (0.30 s")  # shown as the error messages show it
    code, out, err = run_cli(capsys, "classify", "-m", model_file, "--format", "csv", "-k", "1", case.str_path)
    assert code == 0
    assert out.splitlines()[1].startswith(case.display + ",1,")
    code, out, err = run_cli(capsys, "classify", "-m", model_file, "--window", "5", "--hop", "5", cases["10min"].path)
    assert code == 0 and "(600.00 s" in out


def test_options_a_model_cannot_use_are_refused(capsys, tmp_path_factory, model_file, cases, tmp_path):
    image_model = tiny_image_model(tmp_path_factory)
    code, out, err = run_cli(capsys, "spectrogram", cases["8bit_unsigned"].path, "-o", str(tmp_path / "s.png"), "-m", image_model)
    assert_one_error_line(code, err, names=str(image_model), says="an image model, with no audio feature settings to draw with")
    assert not (tmp_path / "s.png").exists()
    code, out, err = run_cli(capsys, "summary", model_file, "--num-classes", "5", "--no-top")
    assert code == 2 and out == "" and f"--no-top, --num-classes: for an architecture name only; {model_file} is a model, whose" in err
    code, out, err = run_cli(capsys, "summary", "vgg11", "--num-classes", "5", "--no-top")  # the 5 was dropped silently
    assert code == 2 and out == "" and "--num-classes: --no-top leaves the classifier out; give one of them" in err


def test_timeline_needs_an_audio_model(capsys, tmp_path_factory, cases):
    code, out, err = run_cli(capsys, "classify", "-m", tiny_image_model(tmp_path_factory), "--timeline", "--format", "csv",
                             cases["corrupt_png"].path)
    assert code == 2 and out == "" and "--timeline needs an audio model" in err


def test_audio_options_need_an_audio_model(capsys, tmp_path_factory, cases, tmp_path):
    image_model = tiny_image_model(tmp_path_factory)
    make_image(tmp_path / "p.png", "RGB", (16, 16))
    picture = str(tmp_path / "p.png")
    code, out, err = run_cli(capsys, "classify", "-m", image_model, "--window", "0.5", "--hop", "2", picture)
    assert code == 2 and out == "" and f"--window, --hop need an audio model; {image_model} takes images" in err
    code, out, err = run_cli(capsys, "embed", "-m", image_model, "--level", "frame", "-o", str(tmp_path / "e.npz"), picture)
    assert code == 2 and f"--level frame needs an audio model; {image_model} takes images" in err
    assert not (tmp_path / "e.npz").exists()
    code, out, err = run_cli(capsys, "info", image_model)
    assert code == 0 and "input:        image, resized to 16 x 16 pixels (height x width)" in out
    from specnet import hear

    with pytest.raises(ParameterError, match=f"^HEAR needs an audio model; {image_model} takes images$"):
        hear.load_model(str(image_model))
    # The API refuses them too, before reading any input.
    model = specnet.load_model(image_model)
    with pytest.raises(ParameterError, match=f"^timeline= needs an audio model; {re.escape(str(image_model))} takes images$"):
        model.predict(picture, timeline=True)
    with pytest.raises(ParameterError, match="^sample_rate=, window=, hop= need an audio model"):
        model.embed(np.zeros((3, 16, 16), np.uint8), sample_rate=16000, window=1.0, hop=0.5)
    assert model.predict(picture)[0].segments is None


def test_a_folder_mixing_kinds_says_what_it_left_out(capsys, model_file, cases, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(cases["8bit_unsigned"].path, folder / "a.wav")
    for i in range(3):
        make_image(folder / f"p{i}.png", "RGB", (8, 8))
    code, out, err = run_cli(capsys, "classify", "-m", model_file, str(folder))
    assert code == 0 and out.startswith(f"{folder / 'a.wav'}  (")
    assert err == f"warning: {folder}: 3 image files left out (the model takes audio)\n"


def test_classify_corrupt_png_with_image_model(capsys, tmp_path_factory, cases):
    case = cases["corrupt_png"]
    code, out, err = run_cli(capsys, "classify", "-m", tiny_image_model(tmp_path_factory), case.path)
    assert_one_error_line(code, err, names=case.display, says=case.expected)


def test_a_picture_over_pillows_limit_is_one_line_without_pillows_warning(capsys, tmp_path_factory, tmp_path, monkeypatch):
    from PIL import Image

    make_image(tmp_path / "big.png", "RGB", (100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10 000 pixels: Pillow itself only warns
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # shown, were it not for the command's own filter
        code, out, err = run_cli(capsys, "classify", "-m", tiny_image_model(tmp_path_factory), tmp_path / "big.png")
    assert code == 1 and out == "" and not [w for w in shown if w.category is Image.DecompressionBombWarning]
    assert err.splitlines() == [f"error: {tmp_path / 'big.png'}: image too large to load safely "
                                "(Image size (10000 pixels) exceeds limit of 6000 pixels)"]


def test_debug_shows_the_traceback_in_process(capsys, cases, monkeypatch, tmp_path):
    case = cases["empty"]
    with pytest.raises(SpecnetError, match="file is empty"):  # main() re-raises for the traceback
        run_cli(capsys, "--debug", "spectrogram", case.path, "-o", tmp_path / "x.png")
    monkeypatch.delenv("SPECNET_DEBUG")  # what --debug set: without it, one line and exit code 1
    assert run_cli(capsys, "info", case.path)[0] == 1
    monkeypatch.setenv("SPECNET_DEBUG", "1")  # the variable alone does what --debug does
    with pytest.raises(SpecnetError, match="file is too short to be a model file"):
        run_cli(capsys, "info", case.path)


def test_real_process_one_line_or_traceback(model_file, cases, tmp_path):
    """``python -m specnet`` in its own process: one line and exit code 1; SPECNET_DEBUG=1: the traceback."""
    case = cases["nan_samples"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SPECNET_DEBUG", None)
    command = [sys.executable, "-m", "specnet", "spectrogram", case.path, "-o", "s.png", "-m", str(model_file)]
    plain, debug = (  # side by side: most of each is importing torch
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=tmp_path)
        for e in (env, {**env, "SPECNET_DEBUG": "1"})
    )
    out, err = plain.communicate(timeout=120)
    assert plain.returncode == 1 and out == ""
    assert err.splitlines() == [f"error: {case.path}: contains NaN or infinite samples"]
    out, err = debug.communicate(timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == f"specnet.errors.AudioError: {case.path}: contains NaN or infinite samples"


# ---------------------------------------------------------------- CLI: embed


def test_embed_skips_bad_files(capsys, model, model_file, cases, tmp_path, denied):
    files = [cases[n] for n in ("silence", "empty", "96k_8ch_24bit", "nan_samples", "10ms", "no_read_permission")]
    out_file = tmp_path / "emb.npz"
    code, out, err = run_cli(capsys, "embed", "-m", model_file, "-o", out_file, *[c.str_path for c in files])
    assert code == 1 and "Traceback" not in err
    bad = [c for c in files if c.kind == "bad"]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for case, line in zip(bad, errors):
        assert case.display in line and case.expected in line
    with np.load(out_file) as saved:
        good = [c.str_path for c in files if c.kind == "odd"]
        assert list(saved["paths"]) == good
        for path, vector in zip(good, saved["embeddings"]):
            expected = model.embed(path)[0]
            np.testing.assert_allclose(vector, expected, atol=max(1e-5, EMBEDDING_RTOL * np.abs(expected).max()))


def test_embed_frame_level_skips_bad_files(capsys, model_file, cases, tmp_path):
    files = [cases["one_sample"], cases["header_only"], cases["96k_8ch_24bit"]]
    code, out, err = run_cli(capsys, "embed", "-m", model_file, "--level", "frame", "-o", tmp_path / "f.npz",
                             *[c.path for c in files])
    assert code == 1
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]  # one.wav is shorter than a frame
    assert errors[0] == f"error: {cases['header_only'].path}: contains no audio samples"
    with np.load(tmp_path / "f.npz") as saved:
        assert list(saved["paths"]) == [cases["one_sample"].path, cases["96k_8ch_24bit"].path]
        assert saved["embeddings"].shape[0] == 2 and list(saved["frames"]) == [1, np.searchsorted(saved["timestamps"], 0.25)]
        for row, count in zip(saved["embeddings"], saved["frames"]):  # the frames in the file, then NaN
            assert np.isfinite(row[:count]).all() and np.isnan(row[count:]).all()


def test_embed_only_bad_files_writes_nothing(capsys, model_file, cases, tmp_path):
    code, out, err = run_cli(capsys, "embed", "-m", model_file, "-o", tmp_path / "e.npz", cases["empty"].path)
    assert_one_error_line(code, err, names=cases["empty"].path, says="file is empty")
    assert not (tmp_path / "e.npz").exists()


# ---------------------------------------------------------------- CLI: evaluate and train on data with bad files


@pytest.fixture
def dirty_dataset(cases, tmp_path):
    """Class folders a/ and b/ with good tones, odd-but-valid files and bad files."""
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3}, seconds=0.5)
    bad = {"a": ["empty", "nan_samples"], "b": ["random_bytes", "header_only", "no_read_permission"]}
    odd = {"a": ["silence", "8bit_unsigned"], "b": ["96k_8ch_24bit", "10ms", "truncated_flac"]}
    bad_paths = []
    for label, names in bad.items():
        for name in names:
            target = root / label / Path(cases[name].path).name
            if cases[name].unreadable:  # cannot be copied without root; make another one
                make_tone(target, 440.0, 0.2, 16000)
                target.chmod(0)
            else:
                shutil.copy(cases[name].path, target)
            bad_paths.append(str(target))
    for label, names in odd.items():
        for name in names:
            shutil.copy(cases[name].path, root / label / Path(cases[name].path).name)
    return root, sorted(bad_paths), 6 + 5


def test_evaluate_skips_bad_files_once_each(capsys, model_file, dirty_dataset, monkeypatch):
    root, bad_paths, n_good = dirty_dataset
    deny_reads(monkeypatch, [p for p in bad_paths if p.endswith("locked.wav")])
    code, out, err = run_cli(capsys, "evaluate", model_file, root, "--format", "json")
    assert code == 1 and "Traceback" not in err  # scores of the rest, but not a clean run
    *lines, summary = err.splitlines()
    assert summary == f"{len(bad_paths)} of {n_good + len(bad_paths)} files skipped"
    silent = [line for line in lines if "silent" in line]  # scored, as classify scores it, with a warning
    assert len(silent) == 1 and silent[0].startswith("warning: ") and "silence.wav" in silent[0]
    short = [line for line in lines if "shorter than one of the model's FFT frames" in line]  # scored too
    assert len(short) == 1 and short[0].startswith("warning: ") and "short.wav" in short[0]
    cut = [line for line in lines if "decoding stopped" in line]  # its first FLAC frame scored
    assert len(cut) == 1 and cut[0].startswith("warning: ") and "half.flac" in cut[0]
    warned = sorted(line.removeprefix("warning: skipping ").split(": ")[0] for line in lines if line not in silent + short + cut)
    assert warned == bad_paths  # each bad file exactly once
    result = json.loads(out)
    assert result["n"] == n_good
    assert sorted(item["path"] for item in result["skipped"]) == bad_paths


def test_evaluate_without_usable_files_is_one_line(capsys, model_file, cases, tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        shutil.copy(cases["empty"].path, tmp_path / label / "x.wav")
    code, out, err = run_cli(capsys, "evaluate", model_file, tmp_path)
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert_one_error_line(code, "\n".join(lines) + "\n", names=str(tmp_path), says="no usable file to evaluate on (2 skipped)")


def test_train_skips_and_counts_bad_files(capsys, dirty_dataset, tmp_path, monkeypatch):
    root, bad_paths, n_good = dirty_dataset
    deny_reads(monkeypatch, [p for p in bad_paths if p.endswith("locked.wav")])
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", root, "-o", out_dir, "--arch", "cnn_tiny", "--epochs", "1",
                             "--batch-size", "4", "--n-mels", "32", "--num-workers", "1", "--no-augment")
    assert code == 0, err
    warned = sorted(line.removeprefix("warning: skipping ").split(": ")[0] for line in err.splitlines() if "skipping" in line)
    assert warned == bad_paths
    others = [line for line in err.splitlines() if "skipping" not in line]  # the odd-but-valid files: one is silence
    assert others == [
        f"warning: {root / 'b' / 'half.flac'}: decoding stopped at 0.256 s of the 1.000 s the file declares (damaged data?); "
        "using what was decoded",
        "warning: 1 file of the training data is digital silence (no sample above -90 dBFS), which the model "
        "learns as a sound of its class"]
    assert f"{len(bad_paths)} files skipped" in out
    data = json.loads((out_dir / "config.json").read_text())["data"]
    assert data["train_files"] + data["val_files"] == n_good
    assert data["skipped"] == len(bad_paths)
    assert sorted(item["path"] for item in data["skipped_files"]) == bad_paths
    assert specnet.load_model(out_dir / "model.safetensors", device="cpu").classes == ("a", "b")


def test_train_with_only_bad_files_in_a_class_is_one_line(capsys, cases, tmp_path):
    root = make_class_folders(tmp_path / "data", {"a": 3}, seconds=0.3)
    (root / "b").mkdir()
    shutil.copy(cases["nan_samples"].path, root / "b" / "nan.wav")
    code, out, err = run_cli(capsys, "train", root, "-o", tmp_path / "run", "--arch", "cnn_tiny", "--epochs", "1")
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert_one_error_line(code, "\n".join(errors) + "\n", names="training data", says="no usable file left for class b")


# ---------------------------------------------------------------- CLI: spectrogram and info


@pytest.mark.parametrize("name", ["empty", "directory", "broken_symlink", "nan_samples", "png_as_wav", "no_read_permission"])
def test_spectrogram_bad_file_one_line(capsys, cases, tmp_path, denied, name):
    case = cases[name]
    code, out, err = run_cli(capsys, "spectrogram", case.path, "-o", tmp_path / "s.png")
    assert_one_error_line(code, err, names=case.display, says=case.expected)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("name", ["silence", "one_sample", "96k_8ch_24bit", "non_utf8_name"])
def test_spectrogram_odd_file(capsys, model_file, cases, tmp_path, name):
    from PIL import Image

    out_file = tmp_path / "s.png"
    code, out, err = run_cli(capsys, "spectrogram", cases[name].str_path, "-o", out_file, "-m", model_file)
    assert code == 0, err
    with Image.open(out_file) as image:
        assert image.format == "PNG" and image.size[0] > 100


def _bad_model_files(cases, tmp_path, model_file) -> dict[str, tuple[str, str]]:
    """name -> (path, expected message) of files that are not usable model files."""
    truncated = tmp_path / "truncated.safetensors"
    data = Path(model_file).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    return {
        "empty": (cases["empty"].path, "file is too short to be a model file"),
        "tiny": (str(tiny), "file is too short"),
        "random": (cases["random_bytes"].path, "not a safetensors model file"),
        "text": (cases["text_as_flac"].path, "not a safetensors model file"),
        "audio": (cases["silence"].path, "not a safetensors model file"),
        "png": (cases["png_as_wav"].path, "not a safetensors model file"),
        "directory": (cases["directory"].path, "is a directory"),
        "missing": (str(tmp_path / "nope.safetensors"), "model file not found"),
        "broken_symlink": (cases["broken_symlink"].path, "model file not found"),
        "unknown_name": ("no-such-model", "neither a model file nor a bundled model"),
        "truncated": (str(truncated), "not a valid safetensors file"),
    }


def test_info_and_load_model_refuse_bad_model_files(capsys, cases, tmp_path, model_file):
    for name, (path, expected) in _bad_model_files(cases, tmp_path, model_file).items():
        code, out, err = run_cli(capsys, "info", path)
        assert_one_error_line(code, err, names=path, says=expected)
        with pytest.raises(SpecnetError, match=expected):
            specnet.load_model(path, device="cpu")
        code, out, err = run_cli(capsys, "classify", "-m", path, cases["silence"].path)
        assert_one_error_line(code, err, names=path, says=expected)


def test_info_unreadable_model_file(capsys, model_file, tmp_path, monkeypatch):
    locked = tmp_path / "locked.safetensors"
    shutil.copy(model_file, locked)
    locked.chmod(0)
    deny_reads(monkeypatch, [locked])
    code, out, err = run_cli(capsys, "info", locked)
    assert_one_error_line(code, err, names=str(locked), says="cannot read model file")


def test_hand_built_header_only_wav_matches_corpus(tmp_path):
    # 44 bytes exactly: the canonical empty WAV that recorders leave behind.
    path = tmp_path / "h.wav"
    path.write_bytes(wav_bytes(np.zeros(0), 16000))
    assert path.stat().st_size == 44
    with pytest.raises(AudioError, match="contains no audio samples"):
        load_audio(path)
