"""Tests for specnet/cli.py: every command in-process through ``main``, plus real subprocesses
for exit codes, stderr and what ``--help`` imports."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import synthetic as S
from helpers import make_tone, make_unreadable, stop_after_epoch, write_audio

import specnet
from specnet._version import __version__
from specnet.cli import main

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_file(audio_run) -> str:
    return str(audio_run.model)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """``clips/<class>/<class>.wav``: one unseen clip per class, in sub-folders."""
    root = tmp_path_factory.mktemp("cli") / "clips"
    for label in S.AUDIO_CLASSES:
        (root / label).mkdir(parents=True)
        write_audio(root / label / f"{label}.wav", S.class_clip(label, 25), S.SR)
    return root


def clip_paths(clips: Path) -> list[str]:
    return [str(clips / label / f"{label}.wav") for label in S.AUDIO_CLASSES]


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``specnet ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subprocess_specnet(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m specnet ARGS`` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **S.SUBPROCESS_ENV)
    env.pop("SPECNET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "specnet", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


# ------------------------------------------------------------------ help, version, usage


def test_help_version_and_the_model_list_do_not_import_torch():
    script = (
        "import sys\n"
        "from specnet.cli import main\n"
        "for argv in (['--help'], ['--version'], ['classify', '--help'], ['train', '--help'], ['models']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("NO TORCH")
    assert "Usage: specnet [OPTIONS] COMMAND" in result.stdout
    assert f"specnet, version {__version__}" in result.stdout
    assert "Usage: specnet classify" in result.stdout and "--top-k" in result.stdout
    assert "Usage: specnet train" in result.stdout and "--val-fold" in result.stdout
    assert "esc10  (default): environmental sounds" in result.stdout  # the bundled models, listed from their headers


@pytest.mark.skipif(not sys.platform.startswith("linux") or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                    reason="glibc's malloc settings")
def test_commands_keep_freed_memory_for_the_next_batch_unless_the_user_set_malloc():
    # 40 MB blocks allocated, written and freed in turn, as a batch's layer outputs are: by default
    # glibc maps each afresh (page faults on every page, every batch); the commands keep them.
    script = (
        "import resource\n"
        "import numpy as np\n"
        "from specnet.cli import main\n"
        "try:\n"
        "    main(['models'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "np.ones(10 << 20, np.float32)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    np.ones(10 << 20, np.float32)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)

    def faults(**extra: str) -> int:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**env, **extra}, timeout=120)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split()[-1])

    assert faults() < 100
    assert faults(MALLOC_MMAP_THRESHOLD_=str(128 << 10)) > 1000  # the user's own setting: every block mapped afresh


def test_python_m_specnet_version():
    result = subprocess_specnet("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"specnet, version {__version__}"


@pytest.mark.parametrize(
    "args",
    [["classify"], ["classify", "x.wav", "--top-k", "0"], ["classify", "x.wav", "--format", "xml"],
     ["no-such-command"], ["train", "data"], ["embed", "x.wav"]],
)
def test_usage_errors_exit_2(capsys, args):
    code, out, err = run(capsys, *args)
    # One line, as specnet's own errors are, pointing at the command's help.
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(r"\(see 'specnet( \S+)? --help'\)\n$", err), err


# ------------------------------------------------------------------ classify


def parse_table(text: str) -> dict[str, list[tuple[str, float]]]:
    blocks: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = blocks.setdefault(line.split("  (")[0], [])
        elif line.strip():
            label, percent = line.split()
            current.append((label, float(percent.rstrip("%")) / 100))
    return blocks


def test_classify_formats_parse_and_agree(capsys, model_file, clips):
    paths = clip_paths(clips)
    code, table, err = run(capsys, "classify", "-m", model_file, *paths, "-k", "3")
    assert code == 0 and err == ""
    code, as_json, _ = run(capsys, "classify", "-m", model_file, *paths, "-k", "3", "--format", "json")
    assert code == 0
    code, as_csv, _ = run(capsys, "classify", "-m", model_file, *paths, "-k", "3", "--format", "csv")
    assert code == 0

    results = json.loads(as_json)
    assert [r["path"] for r in results] == paths
    assert [r["predictions"][0]["label"] for r in results] == list(S.AUDIO_CLASSES)
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert len(rows) == 3 * len(paths)
    blocks = parse_table(table)
    assert list(blocks) == paths
    for result in results:
        assert result["duration"] == pytest.approx(S.CLIP_SECONDS)
        mine = [r for r in rows if r["path"] == result["path"]]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3]
        assert [r["label"] for r in mine] == [p["label"] for p in result["predictions"]]
        for row, p in zip(mine, result["predictions"]):
            assert float(row["score"]) == pytest.approx(p["score"], abs=1e-6)
            assert float(row["duration"]) == pytest.approx(result["duration"], abs=1e-3)
        assert [label for label, _ in blocks[result["path"]]] == [p["label"] for p in result["predictions"]]
        for (_, score), p in zip(blocks[result["path"]], result["predictions"]):
            assert score == pytest.approx(p["score"], abs=5e-5)
    # the API says the same
    api = specnet.load_model(model_file).predict(paths, top_k=3)
    for result, expected in zip(results, api):
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in expected.predictions]


def test_classify_folders_and_globs(capsys, model_file, clips):
    expected = sorted(clip_paths(clips))
    code, out, _ = run(capsys, "classify", "-m", model_file, str(clips), "--format", "json")
    assert code == 0
    assert [r["path"] for r in json.loads(out)] == expected
    code, out, _ = run(capsys, "classify", "-m", model_file, str(clips / "*" / "*.wav"), "--format", "json")
    assert code == 0
    assert [r["path"] for r in json.loads(out)] == expected
    code, out, _ = run(capsys, "classify", "-m", model_file, str(clips / "t*" / "*.wav"), "--format", "json")
    assert [r["path"] for r in json.loads(out)] == [str(clips / "tone" / "tone.wav")]
    # A folder a pattern matches is searched like a folder argument.
    code, out, _ = run(capsys, "classify", "-m", model_file, str(clips / "t*"), "--format", "json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == [str(clips / "tone" / "tone.wav")]
    # A pattern that matches nothing is one failed input, said as such; the others still run.
    code, out, err = run(capsys, "classify", "-m", model_file, str(clips / "t*" / "*.wav"), str(clips / "nomatch*.wav"), "--format", "json")
    assert code == 1 and len(json.loads(out)) == 1
    assert err.splitlines() == [f"error: {clips / 'nomatch*.wav'}: no audio files match this pattern", "1 of 2 inputs failed"]
    # A pattern keeps what a folder keeps: its other files are left out, images with a warning.
    (clips / "notes.txt").write_text("not audio")
    Image.new("L", (8, 8)).save(clips / "cover.png")
    try:
        code, out, err = run(capsys, "classify", "-m", model_file, str(clips / "*"), "--format", "json")
        assert code == 0 and [r["path"] for r in json.loads(out)] == expected
        assert err == f"warning: {clips / '*'}: 1 image file left out (the model takes audio)\n"
        code, out, err = run(capsys, "classify", "-m", model_file, str(clips / "*.txt"))
        assert code == 1 and err.splitlines()[0] == f"error: {clips / '*.txt'}: no audio files match this pattern"
    finally:
        (clips / "notes.txt").unlink()
        (clips / "cover.png").unlink()


def test_the_api_finds_folders_and_patterns_as_classify_does(model_file, clips):
    expected = sorted(clip_paths(clips))
    assert specnet.find_inputs(str(clips)) == specnet.find_inputs([clips]) == specnet.find_inputs(os.fsencode(clips)) == expected
    tone = str(clips / "tone" / "tone.wav")
    assert specnet.find_inputs(os.fsencode(tone)) == specnet.find_inputs([os.fsencode(str(clips / "t*" / "*.wav"))]) == [tone]
    assert specnet.find_inputs([str(clips / "t*" / "*.wav"), str(clips / "nomatch*.wav")]) == [
        str(clips / "tone" / "tone.wav"), str(clips / "nomatch*.wav")]  # kept, to fail as an input
    results = specnet.load_model(model_file).predict_iter(specnet.find_inputs([str(clips), str(clips / "nomatch*.wav")]))
    results = list(results)
    assert [r.path for r in results] == [*expected, str(clips / "nomatch*.wav")]
    assert isinstance(results[-1], specnet.Failure) and results[-1].reason.endswith("nomatch*.wav: file not found (and no file matches it as a glob pattern)")
    with pytest.raises(specnet.ParameterError, match="^kind='video' must be 'audio' or 'image'$"):
        specnet.find_inputs(str(clips), kind="video")
    for bad in (5, None, [str(clips), 5]):
        with pytest.raises(specnet.ParameterError, match=r"^find_inputs\(\) takes a path, folder or glob pattern, or a list of them$"):
            specnet.find_inputs(bad)


def test_classify_double_star_glob_and_linked_folders_list_each_file_once(capsys, model_file, clips, tmp_path):
    expected = sorted(clip_paths(clips))
    # "clips/**" matches the folder itself and everything under it: each file still comes once.
    code, out, _ = run(capsys, "classify", "-m", model_file, str(clips) + "/**", "--format", "json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == expected
    # A link to a folder inside a folder argument is followed (and a link loop ends).
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "clips").symlink_to(clips, target_is_directory=True)
    (tmp_path / "linked" / "loop").symlink_to(tmp_path / "linked", target_is_directory=True)
    linked = [str(tmp_path / "linked" / "clips" / c / f"{c}.wav") for c in S.AUDIO_CLASSES]
    code, out, _ = run(capsys, "classify", "-m", model_file, str(tmp_path / "linked"), "--format", "json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == linked
    # So does a "**" pattern: each file once, not once per depth the loop reaches.
    code, out, _ = run(capsys, "classify", "-m", model_file, str(tmp_path / "linked" / "**" / "*.wav"), "--format", "json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == linked


def test_control_characters_in_names_stay_on_one_line(capsys, model_file, tmp_path):
    bad = tmp_path / "two\nlines.wav"
    bad.write_bytes(b"not audio at all")
    code, _, err = run(capsys, "classify", "-m", model_file, str(bad))
    assert code == 1 and err.count("\n") == 1 and err.startswith(f"error: {tmp_path}/two\\nlines.wav: ")
    # Data output keeps the name as it is: JSON and CSV can hold a newline.
    good = tmp_path / "tab\there.wav"
    write_audio(good, S.class_clip("tone", 1), S.SR)
    code, out, _ = run(capsys, "classify", "-m", model_file, str(good), "--format", "json")
    assert code == 0 and json.loads(out)[0]["path"] == str(good)
    code, out, _ = run(capsys, "classify", "-m", model_file, str(good), "--format", "csv", "-k", "1")
    assert code == 0 and list(csv.reader(io.StringIO(out)))[1][0] == str(good)
    code, out, _ = run(capsys, "classify", "-m", model_file, str(good), "--timeline", "--format", "csv")
    assert code == 0 and list(csv.reader(io.StringIO(out)))[1][0] == str(good)
    # An escape sequence and a carriage return in names: kept (not stripped as terminal colour), and quoted.
    odd = [tmp_path / "esc\x1b[31mred.wav", tmp_path / "cr\rret.wav"]
    for path in odd:
        write_audio(path, S.class_clip("tone", 1), S.SR)
    for options in ((), ("--timeline",)):
        code, out, _ = run(capsys, "classify", "-m", model_file, *map(str, odd), "--format", "csv", "-k", "1", *options)
        rows = list(csv.reader(io.StringIO(out)))
        assert code == 0 and [row[0] for row in rows[1:]] == list(map(str, odd)), out
    code, out, _ = run(capsys, "classify", "-m", model_file, str(good))
    assert code == 0 and out.startswith(f"{tmp_path}/tab\\there.wav  (")
    code, _, _ = run(capsys, "embed", "-m", model_file, str(good), "-o", str(tmp_path / "e.npz"))
    with np.load(tmp_path / "e.npz") as saved:
        assert code == 0 and saved["paths"].tolist() == [str(good)]


def test_dash_says_standard_input_is_not_read(capsys, model_file):
    code, _, err = run(capsys, "classify", "-m", model_file, "-")
    assert code == 1 and err == "error: -: reading standard input is not supported; give files, folders or glob patterns\n"


def test_a_warning_under_a_progress_bar_gets_its_own_line(capsys):
    import logging

    from tqdm import tqdm

    from specnet.cli import _OneLineMessages

    handler = _OneLineMessages()
    bar = tqdm(total=40, desc="decoding", file=sys.stderr)
    bar.update(10)
    capsys.readouterr()
    handler.emit(logging.LogRecord("specnet", logging.WARNING, __file__, 1, "x.wav: silent", None, None))
    err = capsys.readouterr().err
    bar.close()
    before, line, after = err.partition("warning: x.wav: silent\n")
    assert line and before.endswith("\r") and "decoding" not in before  # the bar was cleared first ...
    assert "decoding" in after and "10/40" in after  # ... and drawn again below the warning
    capsys.readouterr()  # what closing the bar wrote
    handler.emit(logging.LogRecord("specnet", logging.INFO, __file__, 1, "adapting weights", None, None))
    assert capsys.readouterr().err == "note: adapting weights\n"  # information is not called a warning


def test_window_limit_is_the_longest_clip():
    from specnet import cli, modelspec

    assert cli.MAX_WINDOW_SECONDS == modelspec.MAX_CLIP_SECONDS


def test_the_defaults_in_help_are_trainings(capsys):
    from specnet import cli, trainconfig
    from specnet.featureconfig import FeatureConfig

    assert cli.DEFAULT_VAL_SPLIT == trainconfig.DEFAULT_VAL_SPLIT
    assert cli.FRONT_END_DEFAULTS == {name: getattr(FeatureConfig, name) for name in cli.FRONT_END_DEFAULTS}
    code, out, _ = run(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0 and f"[default: {trainconfig.DEFAULT_VAL_SPLIT:g} without --val-dir or" in text
    assert "--n-mels INTEGER RANGE Mel bands. [default: 64]" in text and "[default: 50]" in text
    height, width = trainconfig.DEFAULT_IMAGE_SIZE
    assert f"[default: {trainconfig.DEFAULT_ARCH}, or the --init model's]" in text
    assert f"[default: {height} {width}, or the --init model's]" in text
    # Unbounded finite floats read as plain floats; bounded ones show their range.
    assert "--lr FLOAT Peak learning rate" in text and "None" not in text
    assert "--val-split FLOAT RANGE" in text and "0<=x<1" in text


def test_window_range_is_checked_and_a_tiny_window_warns(capsys, model_file, clips):
    code, _, err = run(capsys, "classify", "-m", model_file, "--window", "1e9", clip_paths(clips)[0])
    assert code == 2 and "0<x<=300" in err  # a usage error; --help shows the range
    for flag, value in (("--window", "nan"), ("--hop", "inf"), ("--hop", "NaN")):
        code, _, err = run(capsys, "classify", "-m", model_file, flag, value, clip_paths(clips)[0])
        assert code == 2 and f"Invalid value for '{flag}': '{value}' is not a finite number (see 'specnet" in err, (flag, value)
    code, _, err = run(capsys, "train", str(clips), "--out", "never", "--lr", "nan")
    assert code == 2 and "Invalid value for '--lr': 'nan' is not a finite number (see 'specnet" in err
    code, _, err = run(capsys, "classify", "-m", model_file, "--window", "0.001", clip_paths(clips)[0])
    assert code == 0
    assert err == "warning: --window 0.001 s is shorter than one of the model's FFT frames (0.032 s): the model's output says little\n"
    code, _, err = run(capsys, "classify", "-m", model_file, "--window", "0.2", clip_paths(clips)[0])  # trained on 0.5 s clips
    assert code == 0 and err == "warning: --window 0.2 s is less than half the 0.5 s clips the model was trained on: the model's output says little\n"
    code, _, err = run(capsys, "classify", "-m", model_file, "--window", "0.25", clip_paths(clips)[0])
    assert code == 0 and err == ""


def test_classify_timeline_in_json(capsys, model_file, tmp_path):
    recording = S.event_recording(tmp_path / "event.wav", seconds=6.0, event=(2.2, 4.2))
    code, out, _ = run(capsys, "classify", "-m", model_file, str(recording), "--timeline", "--window", "1", "--hop", "0.5",
                       "--format", "json")
    assert code == 0
    segments = json.loads(out)[0]["segments"]
    assert len(segments) == 11
    assert {s["label"] for s in segments if s["start"] >= 2.2 and s["end"] <= 4.2} == {"tone"}

    # CSV: one row per window; the table: a line per window under the top labels.
    code, out, _ = run(capsys, "classify", "-m", model_file, str(recording), "--timeline", "--window", "1", "--hop", "0.5",
                       "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == ["path", "start", "end", "label", "score"]
    assert [(float(r["start"]), float(r["end"]), r["label"]) for r in rows] == [(s["start"], s["end"], s["label"]) for s in segments]
    code, out, _ = run(capsys, "classify", "-m", model_file, str(recording), "--timeline", "--window", "1", "--hop", "0.5")
    lines = out.splitlines()
    windows = lines[lines.index("  top label of each window:") + 1:]
    assert code == 0 and len(windows) == 11
    assert windows[0].split()[:4] == ["0.00", "-", "1.00", "s"] and windows[-1].split()[:3] == ["5.00", "-", "6.00"]


def test_timeline_prints_a_window_that_ends_the_file_apart_from_the_one_before(capsys, model_file, tmp_path):
    # 6.004 s: the window that ends the file starts 4 ms after the regular one at 5.00 s.
    recording = write_audio(tmp_path / "long.wav", S.background(6.004, seed=1).astype(np.float32), S.SR)
    code, out, _ = run(capsys, "classify", "-m", model_file, str(recording), "--timeline", "--window", "1", "--hop", "0.5")
    lines = out.splitlines()
    windows = [line.split()[:3] for line in lines[lines.index("  top label of each window:") + 1:]]
    assert code == 0 and windows[0] == ["0.000", "-", "1.000"]
    assert windows[-2:] == [["5.000", "-", "6.000"], ["5.004", "-", "6.004"]]
    # Windows of a few milliseconds read "0.00 - 0.00 s" before: their ends are printed apart from their starts.
    code, out, _ = run(capsys, "classify", "-m", model_file, str(recording), "--timeline", "--window", "0.004", "--hop", "2")
    lines = out.splitlines()
    windows = [line.split()[:3] for line in lines[lines.index("  top label of each window:") + 1:]]
    assert code == 0 and windows[:2] == [["0.000", "-", "0.004"], ["2.000", "-", "2.004"]]


def test_api_messages_name_flags_on_the_command_line(capsys, model_file, clips, tmp_path):
    # The API says overwrite=True, manifest=FILE.csv; the command line says its flags.
    code, _, err = run(capsys, "evaluate", model_file, str(clips), "--fold", "1")
    assert code == 2 and err == "error: a --fold needs a --manifest\n"
    with pytest.raises(specnet.ParameterError, match="^a fold= needs a manifest=$"):
        specnet.evaluate(model_file, clips, fold=1)
    code, _, err = run(capsys, "evaluate", model_file)
    assert code == 2 and err == "error: give a data folder or --manifest FILE.csv\n"


@pytest.mark.parametrize("message, said", [
    ("x: already exists; pass overwrite=True to replace it", "x: already exists; pass --overwrite to replace it"),
    ("try a lower lr=, or amp=False", "try a lower --lr, or --no-amp"),
    ("change val_split=, val_fold= or val_dir=", "change --val-split, --val-fold or --val-dir"),
    ("pass weights=FILE", "pass --weights FILE"),
    ("init= keeps it, but arch= is 'vgg11' here and features.n_mels is 16", "--init keeps it, but --arch is 'vgg11' here and --n-mels is 16"),
    ("features.preemphasis is 0.97", "features.preemphasis is 0.97"),  # no flag sets it
    ("/home/o'brien/m.safetensors: init= keeps arch= as 'x'", "/home/o'brien/m.safetensors: --init keeps --arch as 'x'"),
    # A value the user gave, a quoted one, a flag already, and a name no option has stay as they are.
    ("val_split=2 must be below 1", "val_split=2 must be below 1"),
    ("n_mels='x' must be an integer", "n_mels='x' must be an integer"),
    ("top_db=-3 must be", "top_db=-3 must be"),
    ("'overwrite=True' is a file name", "'overwrite=True' is a file name"),
    ("--val-split=2 must be below 1", "--val-split=2 must be below 1"),
    ("/runs/overwrite=True/x: not found", "/runs/overwrite=True/x: not found"),
    ("colour=True", "colour=True"),
])
def test_api_keywords_become_flags(message, said):
    from specnet.cli import as_flags

    assert as_flags(message) == said


def test_values_given_to_inference_options_are_said_as_flags(capsys, model_file, clips, tmp_path):
    clip = clip_paths(clips)[0]
    code, _, err = run(capsys, "classify", clip, "--model", model_file, "--hop", "0.00001")
    assert code == 2 and err.startswith("error: --hop 1e-05 s is less than one sample of the model's"), err
    code, _, err = run(capsys, "classify", clip, "--model", model_file, "--window", "0.2", "--hop", "0.5", "-k", "1")
    assert code == 0 and err.startswith("warning: --hop 0.5 s is longer than --window 0.2 s: "), err
    # A file or folder whose name looks like a keyword is named as it is.
    odd = tmp_path / "hop=3"
    odd.mkdir()
    code, _, err = run(capsys, "classify", str(odd / "fold=1.wav"), "--model", model_file)
    assert code == 1 and err.startswith(f"error: {odd}/fold=1.wav: "), err


def test_a_device_that_is_not_there_is_named_as_given(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "classify", str(REPO / "examples" / "dog.wav"), "--device", "cuda")
    assert code == 2 and err == "error: --device cuda asked for, but CUDA is not available here\n", err
    # One GPU of several: cuda:N, as the Python API takes it; another name is a usage error.
    with monkeypatch.context() as two_gpus:
        two_gpus.setattr(torch.cuda, "is_available", lambda: True)
        two_gpus.setattr(torch.cuda, "device_count", lambda: 2)
        code, _, err = run(capsys, "classify", str(REPO / "examples" / "dog.wav"), "--device", "cuda:2")
        assert code == 2 and err == "error: --device cuda:2 asked for, but this machine has 2 CUDA devices (cuda:0 to cuda:1)\n", err
    code, _, err = run(capsys, "embed", str(REPO / "examples" / "dog.wav"), "-o", str(tmp_path / "e.npz"), "--device", "gpu")
    assert code == 2 and "Invalid value for '--device': 'gpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'" in err, err
    from specnet import cli, devices
    assert cli.DEVICE_NAME.pattern == devices._DEVICE_NAME.pattern  # --help and option checks load no torch
    config = tmp_path / "train.toml"
    config.write_text('device = "cuda"\n')
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run"), "--config", str(config))
    assert code == 2 and err == f"error: {config}: device='cuda' asked for, but CUDA is not available here\n", err
    # A run started on a GPU, resumed where there is none: the run's own setting, which --device changes.
    with monkeypatch.context() as on_a_gpu_machine:
        on_a_gpu_machine.setattr(specnet.training, "resolve_device", lambda name: torch.device("cpu"))
        with pytest.raises(KeyboardInterrupt):
            specnet.train(data, tmp_path / "gpu-run", **{**S.FAST, "device": "cuda", "epochs": 2}, on_epoch_end=stop_after_epoch(0))
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "gpu-run"), "--resume")
    assert code == 2 and err == (f"error: {tmp_path / 'gpu-run'}: device='cuda' asked for, but CUDA is not available here "
                                 "(the run's own setting: pass --device to resume it with another)\n"), err
    with pytest.raises(specnet.ParameterError, match=r"gpu-run: device='cuda' asked for, but CUDA is not available here "
                                                     r"\(the run's own setting: pass device= to resume it with another\)$"):
        specnet.train(None, tmp_path / "gpu-run", resume=True)
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "gpu-run"), "--resume", "--device", "cpu")
    assert code == 0, err
    with pytest.raises(specnet.ParameterError, match=r"^device='cuda' asked for, but CUDA is not available here$"):
        specnet.load_model("esc10", device="cuda")


def test_messages_stay_one_line_when_names_hold_a_newline(capsys, model_file, clips, tmp_path):
    clip = clip_paths(clips)[0]
    output = tmp_path / "two\nlines.npz"
    code, _, err = run(capsys, "embed", "-m", model_file, clip, "-o", str(output))
    assert code == 0 and err == f"wrote 1 clip embedding of size {err.split()[-3]} to {tmp_path}/two\\nlines.npz\n"
    code, _, err = run(capsys, "embed", "-m", model_file, clip, "-o", str(output))
    assert code == 1 and err == f"error: {tmp_path}/two\\nlines.npz: already exists; pass --overwrite to replace it\n"
    code, _, err = run(capsys, "classify", "-m", str(tmp_path / "no\nmodel.safetensors"), clip)
    assert code == 1 and err == f"error: {tmp_path}/no\\nmodel.safetensors: model file not found\n"
    data = tmp_path / "data" / "odd\nclass"
    data.mkdir(parents=True)
    shutil.copy(clip, data)
    code, _, err = run(capsys, "evaluate", model_file, str(tmp_path / "data"))
    assert code == 1 and err.count("\n") == 1 and "class 'odd\\nclass' that the model does not know" in err


def test_tables_show_a_class_name_on_one_line(capsys, model_file, clips, tmp_path):
    # Classes are named after folders: one whose name holds a newline split the table's row in two,
    # and a byte that is not UTF-8 went out raw; both show as in a file name.
    import dataclasses

    odd = ("cl\nick", "hiss", os.fsdecode(b"t\xffone"))  # AUDIO_CLASSES, renamed
    model = specnet.load_model(model_file, device="cpu")
    model.net.spec = dataclasses.replace(model.net.spec, classes=odd)
    renamed = str(model.save(tmp_path / "renamed.safetensors"))
    data = tmp_path / "data"
    for name, label in zip(odd, S.AUDIO_CLASSES):
        shutil.copytree(clips / label, data / name)
    shown = ("cl\\nick", "t\\xffone")
    code, out, _ = run(capsys, "evaluate", renamed, str(data))
    assert code == 0 and len(out.splitlines()) == 2 + len(odd) and all(name in out for name in shown)
    assert len({len(line) for line in out.splitlines()[1:]}) == 1  # the columns line up
    code, out, _ = run(capsys, "classify", "-m", renamed, str(data / odd[0] / "click.wav"))
    assert code == 0 and len(out.splitlines()) == 1 + len(odd) and all(name in out for name in shown)
    code, out, _ = run(capsys, "info", renamed)
    assert code == 0 and "classes:      cl\\nick, hiss, t\\xffone\n" in out


def test_info_shows_each_metadata_key_and_text_on_one_line(capsys, model_file, tmp_path):
    # adapt stores the name of the model it started from, a [dataset] table may hold a multi-line
    # string: a newline split info's line in two, and a byte that is not UTF-8 went out raw.
    model = specnet.load_model(model_file, device="cpu")
    odd = os.fsdecode(b"m\xff\nx.safetensors")
    model.net.spec = model.net.spec.with_extra(adapted={"inputs": 2, "windows": 3, "from": odd},
                                               dataset={"about": "two\nlines", "li\nnes": 1})
    code, out, _ = run(capsys, "info", str(model.save(tmp_path / "odd.safetensors")))
    lines = out.splitlines()
    assert code == 0 and "  from:    m\\xff\\nx.safetensors" in lines
    assert "  about:   two\\nlines" in lines and "  li\\nnes: 1" in lines  # keys aligned as shown


def test_info_shows_where_a_list_or_table_in_a_value_ends(capsys, model_file, tmp_path):
    # "(channels=8, 16, 32, 64, drop_rate=0.2)" read as five arguments, the list's 16 as one of them.
    import dataclasses

    model = specnet.load_model(model_file, device="cpu")
    spec = model.net.spec
    model.net.spec = dataclasses.replace(spec, arch_args={**spec.arch_args, "channels": [8, 16, 32, 64], "drop_rate": 0.2}).with_extra(
        dataset={"parts": [{"a": 1, "b": 2}, {"a": 3, "b": 4}], "none": {}, "big": 123456.7, "one": 1.0})
    code, out, _ = run(capsys, "info", str(model.save(tmp_path / "lists.safetensors")))
    lines = out.splitlines()
    assert code == 0 and "architecture: cnn_tiny (channels=[8, 16, 32, 64], drop_rate=0.2), in_chans 1" in lines
    assert "  parts: [(a=1, b=2), (a=3, b=4)]" in lines
    # An empty table leaves no trailing spaces; a float rounded to four digits never looks exact.
    assert "  none:" in lines and "  big:   1.235e+05" in lines and "  one:   1.0" in lines


def test_info_reads_only_a_count_as_the_kept_epoch(capsys, model_file, tmp_path):
    # An epoch of -5 showed as "epoch -4 of 6": a negative or fractional one is left as stored.
    model = specnet.load_model(model_file, device="cpu")
    metrics = model.config.extra["metrics"]
    for epoch in (-5, 2.5, True):
        model.net.spec = model.net.spec.with_extra(metrics={**metrics, "epoch": epoch})
        code, out, _ = run(capsys, "info", str(model.save(tmp_path / f"epoch_{epoch}.safetensors")))
        lines = out.splitlines()
        assert code == 0 and "metrics:" in lines and ["epoch:", json.dumps(epoch)] in [line.split() for line in lines], epoch


def test_info_json_writes_a_non_finite_number_in_metadata_as_null(capsys, model_file, tmp_path):
    # json.dumps wrote bare NaN and Infinity, which JSON readers other than Python's refuse. A file
    # saved now holds null there; one saved before, or written by hand, holds them bare.
    from safetensors.torch import load_file, save_file

    from specnet.catalog import METADATA_KEY, read_metadata

    meta = read_metadata(model_file) | {"dataset": {"accuracy": float("nan"), "range": [0.5, float("inf")]}}
    path = tmp_path / "nan.safetensors"
    save_file(load_file(model_file), str(path), metadata={METADATA_KEY: json.dumps(meta)})
    code, text, _ = run(capsys, "info", str(path), "--format", "json")
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    assert code == 0 and json.loads(text, parse_constant=refuse)["dataset"] == {"accuracy": None, "range": [0.5, None]}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_standard_output_is_one_line(model_file, clips):
    with open("/dev/full", "w") as full:
        env = dict(os.environ, PYTHONPATH=str(REPO), **S.SUBPROCESS_ENV)
        result = subprocess.run([sys.executable, "-m", "specnet", "classify", "-m", model_file, *clip_paths(clips)],
                                stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=180)
    assert result.returncode == 1 and result.stderr == "error: No space left on device\n"


def test_classify_timeline_marks_silent_windows(capsys, model_file, tmp_path):
    tone = S.class_clip("tone", 5, 1.0).astype(np.float32)
    recording = write_audio(tmp_path / "tone_then_silence.wav", np.concatenate([tone, np.zeros(2 * S.SR, np.float32)]), S.SR)
    options = ("classify", "-m", model_file, str(recording), "--timeline", "--window", "1", "--hop", "1")
    code, out, _ = run(capsys, *options, "--format", "json")
    assert code == 0
    segments = json.loads(out)[0]["segments"]
    assert [(s["start"], s["label"] is None, s["score"] is None) for s in segments] == [
        (0.0, False, False), (1.0, True, True), (2.0, True, True)]
    code, out, _ = run(capsys, *options, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["label"], r["score"]) for r in rows[1:]] == [("", ""), ("", "")] and rows[0]["label"]
    code, out, _ = run(capsys, *options)
    windows = out.splitlines()[-3:]
    assert [w.split()[4:] for w in windows[1:]] == [["(silence)"], ["(silence)"]]
    assert windows[0].split()[4] == segments[0]["label"]


def test_classify_good_and_bad_files(model_file, clips, tmp_path):
    good = clip_paths(clips)[:2]
    broken = tmp_path / "broken.wav"
    # Not random bytes: libsndfile probes those as MPEG too, and libmpg123 may print its own
    # warnings to stderr, which would make the line count below depend on the bytes drawn.
    broken.write_bytes(b"this is a text file, not audio\n" * 50)
    missing = tmp_path / "missing.wav"
    result = subprocess_specnet("classify", "-m", model_file, good[0], str(broken), str(missing), good[1],
                                "--format", "json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len([line for line in lines if "broken.wav" in line]) == 1
    assert len([line for line in lines if "missing.wav" in line]) == 1
    assert all(line.startswith("error: ") for line in lines if "broken.wav" in line or "missing.wav" in line)
    assert "2 of 4 inputs failed" in result.stderr
    assert len(lines) == 3
    assert [r["path"] for r in json.loads(result.stdout)] == good


def test_classify_missing_model_is_one_line(capsys, clips, tmp_path):
    code, out, err = run(capsys, "classify", "-m", str(tmp_path / "nope.safetensors"), clip_paths(clips)[0])
    assert code == 1
    assert err == f"error: {tmp_path / 'nope.safetensors'}: model file not found\n"


def test_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    result = subprocess_specnet("--debug", "info", missing)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModelFileError" in result.stderr and "nope.safetensors" in result.stderr


def test_without_debug_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "info", str(tmp_path / "nope.safetensors"))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_debug_flag_raises_in_process(capsys, tmp_path):
    with pytest.raises(specnet.ModelFileError):
        main(["--debug", "info", str(tmp_path / "nope.safetensors")])


# ------------------------------------------------------------------ info, embed, summary, spectrogram


def test_info_text_and_json(capsys, model_file):
    code, out, _ = run(capsys, "info", model_file)
    assert code == 0
    assert "architecture: cnn_tiny" in out
    assert "classes:      click, hiss, tone" in out
    assert f"sample_rate={S.SR}" in out
    assert f"{S.CLIP_SECONDS} s clips" in out
    code, text, _ = run(capsys, "info", model_file, "--format", "json")
    meta = json.loads(text)
    # The kept epoch as the console counted it ("metrics: {"epoch": 5 ...}" read as the 5th of 6).
    kept, total = meta["metrics"]["epoch"], meta["training"]["epochs"]
    lines = out.splitlines()
    # Tables are indented lines, keys aligned, floats to four significant digits; nested tables go further in.
    metrics = lines.index(f"metrics:      epoch {kept + 1} of {total} (as training counted them)")
    accuracy = float(f"{meta['metrics']['val_accuracy']:.4g}")
    assert f"  val_accuracy: {accuracy}" in lines[metrics + 1:]
    assert "training:" in lines and "  data:" in lines
    counts = ", ".join(f"{name}={count}" for name, count in meta["training"]["data"]["class_counts"].items())
    assert f"    class_counts: {counts}" in lines
    assert not meta.get("arch_args") and "architecture: cnn_tiny, in_chans 1" in lines
    code, text, _ = run(capsys, "info", "fsdd", "--format", "json")
    arch_args = ", ".join(f"{name}={value}" for name, value in json.loads(text)["arch_args"].items())
    assert arch_args and f"architecture: cnn_small ({arch_args}), in_chans 1" in run(capsys, "info", "fsdd")[1].splitlines()
    assert meta["classes"] == list(S.AUDIO_CLASSES)
    assert meta["features"]["n_mels"] == S.FEATURES["n_mels"]
    assert meta["metrics"]["val_accuracy"] >= 0.95


def test_embed_clip_and_frame_npz(capsys, model_file, clips, tmp_path):
    paths = clip_paths(clips)
    out = tmp_path / "x.npz"
    code, _, err = run(capsys, "embed", "-m", model_file, *paths, "-o", str(out))
    assert code == 0 and "wrote 3 clip embeddings" in err
    with np.load(out) as saved:
        assert sorted(saved.files) == ["embeddings", "paths"]
        assert saved["paths"].tolist() == paths
        np.testing.assert_allclose(saved["embeddings"], specnet.load_model(model_file).embed(paths), atol=1e-5)

    code, _, err = run(capsys, "embed", "-m", model_file, *paths, "-o", str(out))
    assert code == 1 and "already exists" in err and "--overwrite" in err
    longer = make_tone(tmp_path / "longer.wav", 440.0, 3.0, 16000)  # more frames than the others, which are padded
    code, _, err = run(capsys, "embed", "-m", model_file, *paths, str(longer), "-o", str(out), "--level", "frame", "--overwrite")
    with np.load(out) as saved:
        assert sorted(saved.files) == ["embeddings", "frames", "paths", "timestamps"]
        embeddings, stamps, counts = saved["embeddings"], saved["timestamps"], saved["frames"]
        # It counted files as frame embeddings: "wrote 4 frame embeddings" for thousands of frames.
        assert code == 0 and f"wrote {counts.sum()} frame embeddings of size {embeddings.shape[-1]} from 4 files to " in err
        assert embeddings.shape[:2] == (4, len(stamps)) and len(stamps) > 1
        assert (np.diff(stamps) > 0).all()
        # Each count: the frames centred inside the file (3.0 s for the longer one); the others pad.
        seconds = [specnet.audio.audio_info(p).duration for p in [*paths, str(longer)]]
        for count, duration in zip(counts, seconds):
            assert 0 < count and stamps[count - 1] < duration and (count == len(stamps) or stamps[count] >= duration)
        assert counts[-1] == len(stamps) and counts[0] < counts[-1]
        own = specnet.load_model(model_file).embed_frames(paths[0])[0][0]  # alone: its own frames, the same values
        np.testing.assert_allclose(embeddings[0, : len(own)], own, atol=1e-5, rtol=0)
        assert np.isfinite(embeddings[0, : counts[0]]).all() and np.isnan(embeddings[0, counts[0] :]).all()
    code, _, err = run(capsys, "embed", "-m", model_file, paths[0], "-o", str(out), "--overwrite")
    assert code == 0 and "wrote 1 clip embedding of size" in err
    # The timestamps are the frames' centres whatever order the files come in, a clip shorter
    # than the first centre (one frame, stamped at its own middle alone) included.
    first_centre = specnet.load_model(model_file).net.frame_times(1)[0]
    short = write_audio(tmp_path / "short.wav", np.full(round(first_centre * 16000 / 2), 0.3, np.float32), 16000)
    one_frame = write_audio(tmp_path / "one_frame.wav", np.full(round(first_centre * 16000 * 1.2), 0.3, np.float32), 16000)
    for order in ([str(short), str(one_frame)], [str(one_frame), str(short)], [str(short), paths[0]]):
        code, _, _ = run(capsys, "embed", "-m", model_file, *order, "-o", str(out), "--level", "frame", "--overwrite")
        with np.load(out) as saved:
            assert code == 0 and saved["timestamps"][0] == first_centre


def test_embed_skips_bad_files(capsys, model_file, clips, tmp_path):
    paths = clip_paths(clips)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"\x00" * 500)
    out = tmp_path / "x.npz"
    code, _, err = run(capsys, "embed", "-m", model_file, paths[0], str(broken), "-o", str(out))
    assert code == 1
    assert len([line for line in err.splitlines() if "broken.wav" in line]) == 1
    with np.load(out) as saved:
        assert saved["paths"].tolist() == [paths[0]]


def test_a_folder_that_cannot_be_searched_is_a_failed_input_and_the_rest_still_run(capsys, model_file, clips, tmp_path, monkeypatch):
    rec = tmp_path / "rec"
    for day in ("day1", "day2"):
        (rec / day).mkdir(parents=True)
        (rec / day / "a.wav").symlink_to(clip_paths(clips)[0])
    make_unreadable(monkeypatch, rec / "day2")
    for inputs in ([str(rec)], [f"{rec}/**/*.wav"]):
        code, out, err = run(capsys, "classify", "-m", model_file, *inputs, "--format", "csv")
        assert code == 1 and {row.split(",")[0] for row in out.splitlines()[1:]} == {f"{rec}/day1/a.wav"}
        assert err.splitlines() == [f"error: {rec}/day2: cannot read this folder (Permission denied)", "1 of 2 inputs failed"]
    code, _, err = run(capsys, "classify", "-m", model_file, str(rec / "day2"))
    assert code == 1 and err.splitlines() == [f"error: {rec}/day2: cannot read this folder (Permission denied)"]
    # Training or evaluating on class folders, one of which cannot be read, stops: its files would be left out.
    code, _, err = run(capsys, "evaluate", model_file, str(rec))
    assert code == 1 and err == f"error: {rec}/day2: cannot read this folder (Permission denied)\n", err


def test_a_folder_without_audio_is_a_failed_input(capsys, model_file, clips, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    code, _, err = run(capsys, "embed", "-m", model_file, str(tmp_path / "empty"), "-o", str(tmp_path / "e.npz"))
    assert code == 1 and err == f"error: {tmp_path / 'empty'}: no audio files in this folder\n"
    assert not (tmp_path / "e.npz").exists()
    # Beside other inputs it is reported, not silently dropped, and the others still run.
    code, out, err = run(capsys, "classify", "-m", model_file, str(tmp_path / "empty"), clip_paths(clips)[0], "--format", "json")
    assert code == 1 and len(json.loads(out)) == 1
    assert err.splitlines() == [f"error: {tmp_path / 'empty'}: no audio files in this folder", "1 of 2 inputs failed"]
    # An output that is not .npz is refused before any work.
    code, _, err = run(capsys, "embed", "-m", model_file, clip_paths(clips)[0], "-o", str(tmp_path / "e.txt"))
    assert code == 2 and err == f"error: {tmp_path / 'e.txt'}: embeddings (a NumPy archive) are written as .npz files: name the output *.npz\n"
    assert not (tmp_path / "e.txt").exists()
    # A name that is no file name is a value refused too (exit 2), as a wrong suffix is.
    code, _, err = run(capsys, "embed", "-m", model_file, clip_paths(clips)[0], "-o", "")
    assert code == 2 and err == "error: empty output file name\n", err
    (tmp_path / "folder.npz").mkdir()
    code, _, err = run(capsys, "embed", "-m", model_file, clip_paths(clips)[0], "-o", str(tmp_path / "folder.npz"))
    assert code == 2 and "folder.npz' is a directory" in err and err.count("\n") == 1, err
    # When every input fails, embed says its output was not written.
    code, _, err = run(capsys, "embed", "-m", model_file, str(tmp_path / "empty"), str(tmp_path / "none.wav"), "-o", str(tmp_path / "e.npz"))
    assert code == 1 and err.splitlines()[-1] == f"2 of 2 inputs failed; {tmp_path / 'e.npz'} not written"
    assert not (tmp_path / "e.npz").exists()


def test_every_usage_error_names_the_help_to_read(capsys):
    # An option missing its value comes from click's parser without a context: still one line with the hint.
    for args, line in [
        (["classify", "x.wav", "--window"], "error: Option '--window' requires an argument (see 'specnet classify --help')"),
        (["summary", "--input-size", "64"], "error: Option '--input-size' requires 2 arguments (see 'specnet summary --help')"),
        (["--bogus"], "error: No such option '--bogus' (see 'specnet --help')"),
        (["classify", "--top-k", "0", "x.wav"], "error: Invalid value for '--top-k' / '-k': 0 is not in the range x>=1 (see 'specnet classify --help')"),
    ]:
        code, _, err = run(capsys, *args)
        assert code == 2 and err == line + "\n", err


def test_summary_of_an_unknown_name_says_what_it_takes(capsys):
    code, _, err = run(capsys, "summary", "nosuch")
    assert code == 1 and err.startswith("error: nosuch: not an architecture (cnn, ") and err.count("\n") == 1
    assert "a bundled model (" in err and err.endswith(") or a model file\n")


def test_summary_of_a_path_that_is_not_there_says_the_file_is_not_found(capsys, tmp_path):
    # "./vgg11" was "not an architecture (..., vgg11, ...)": the name of a file, not an architecture.
    for given, named in [("./vgg11", "vgg11"), (str(tmp_path / "cnn"), str(tmp_path / "cnn"))]:
        code, _, err = run(capsys, "summary", given)
        assert (code, err) == (1, f"error: {named}: model file not found\n")


def test_summary_of_too_small_or_too_large_an_input_is_one_line(capsys):
    from specnet import cli, modelspec

    code, _, err = run(capsys, "summary", "vgg11", "--input-size", "0", "8")
    assert code == 2 and "0 is not in the range" in err
    # Not a 40 GB allocation that fails inside torch: the sizes a model file may hold.
    code, _, err = run(capsys, "summary", "vgg11", "--input-size", "100000", "100000")
    assert code == 2 and err == ("error: Invalid value for '--input-size': 100000 x 100000 is more than the 4096 x 4096 "
                                 "cells a summary takes (see 'specnet summary --help')\n"), err
    code, out, _ = run(capsys, "summary", "cnn", "--input-size", "64", "5001")  # an audio width is frames: 50 s at a 10 ms hop
    assert code == 0 and "(None, 1, 64, 5001)" in out
    code, _, err = run(capsys, "summary", "cnn", "--in-chans", "65")
    assert code == 2 and "65 is not in the range 1<=x<=64" in err, err
    assert (cli.MAX_IN_CHANS, cli.MAX_IMAGE_SIDE) == (modelspec.MAX_IN_CHANS, modelspec.MAX_IMAGE_SIDE)


def test_summary_of_a_model_file_takes_only_the_input_sizes_it_sees(capsys, tmp_path_factory, model_file):
    from corpus import tiny_image_model

    image_model = str(tiny_image_model(tmp_path_factory))
    code, _, err = run(capsys, "summary", image_model, "--input-size", "64", "64")
    assert code == 2 and f"--input-size: {image_model} resizes every image to 16 x 16; leave it out" in err
    code, out, _ = run(capsys, "summary", image_model, "--input-size", "16", "16")
    assert code == 0 and "(None, 3, 16, 16)" in out
    n_mels = specnet.load_model(model_file).config.features.n_mels
    code, _, err = run(capsys, "summary", model_file, "--input-size", str(n_mels + 1), "40")
    assert code == 2 and f"makes spectrograms of {n_mels} mel bands, so the height is {n_mels}" in err
    code, out, _ = run(capsys, "summary", model_file, "--input-size", str(n_mels), "40")  # a longer clip: more frames
    assert code == 0 and f"(None, 1, {n_mels}, 40)" in out


def test_image_size_range_is_a_usage_error(capsys, tmp_path):
    from specnet import cli, modelspec

    assert cli.MAX_IMAGE_SIDE == modelspec.MAX_IMAGE_SIDE
    for size in (("0", "32"), ("32", str(modelspec.MAX_IMAGE_SIDE + 1))):
        code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--image-size", *size)
        assert code == 2 and "Invalid value for '--image-size'" in err and err.count("\n") == 1, err


def test_summary_vgg16_without_top(capsys):
    # Parameter counts do not depend on the input size; 32 x 32 keeps the forward pass quick.
    code, out, _ = run(capsys, "summary", "vgg16", "--in-chans", "3", "--no-top", "--input-size", "32", "32")
    assert code == 0
    assert "Total params: 14,714,688" in out


def test_summary_of_an_architecture_beside_a_folder_or_file_of_its_name(capsys, tmp_path, monkeypatch, model_file):
    # A folder "cnn_tiny" in the current folder made `specnet summary cnn_tiny` "is a directory, not a model file".
    monkeypatch.chdir(tmp_path)
    Path("cnn_tiny").mkdir()
    shutil.copy(model_file, "vgg11")
    code, out, err = run(capsys, "summary", "cnn_tiny")
    assert code == 0 and "Total params:" in out, err
    code, out, err = run(capsys, "summary", "vgg11", "--input-size", "32", "32")
    assert code == 0 and "block1_conv1" in out, err
    code, out, err = run(capsys, "summary", "./vgg11")  # the file, named as a path
    assert code == 0 and "features.0.conv1" in out, err


def test_summary_list_and_model_file(capsys, model_file):
    code, out, _ = run(capsys, "summary", "--list")
    assert code == 0 and {"cnn_tiny", "vgg16"} <= set(out.split())
    code, out, _ = run(capsys, "summary", model_file)
    assert code == 0 and "features.0.conv1" in out and "Total params:" in out
    assert run(capsys, "summary")[1] == run(capsys, "summary", "--list")[1]


@pytest.mark.skipif(not (Path(specnet.__file__).parent / "bundled" / "fsdd.safetensors").exists(), reason="bundled models not built (recipes/)")
def test_summary_of_a_bundled_model(capsys):
    code, out, _ = run(capsys, "summary", "fsdd")
    assert code == 0 and "Total params: 298,842" in out


def test_spectrogram_without_a_model_draws_what_train_gives_a_model_by_default(capsys, clips, tmp_path, monkeypatch):
    import specnet.plots

    drawn = {}
    monkeypatch.setattr(specnet.plots, "plot_spectrogram", lambda logmel, output, **kw: drawn.update(logmel=logmel, **kw))
    code, _, _ = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(tmp_path / "s.png"))
    from specnet.trainconfig import TrainConfig

    features = TrainConfig().feature_config()
    assert code == 0 and drawn["sample_rate"] == features.sample_rate and drawn["logmel"].shape[0] == features.n_mels
    assert drawn["logmel"].max() == pytest.approx(0.0, abs=1e-4) and drawn["logmel"].min() >= -features.top_db - 1e-4  # relative dB, floored


def test_spectrogram_png(capsys, clips, model_file, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, err = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(out))
    assert code == 0 and (stdout, err) == ("", f"wrote {out}\n")  # stdout is for results; what was written is said on stderr
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 1000
    code, _, err = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(out))
    assert code == 1 and "already exists" in err
    code, _, _ = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(out), "--model", model_file, "--overwrite")
    assert code == 0 and out.read_bytes().startswith(PNG_MAGIC)
    # The suffix names the format; a name without one gets a PNG, another suffix is refused.
    code, _, _ = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(tmp_path / "out.jpg"))
    assert code == 0 and (tmp_path / "out.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    code, _, _ = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(tmp_path / "out.svg"))
    assert code == 0 and b"<svg" in (tmp_path / "out.svg").read_bytes()[:1000]
    code, stdout, err = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(tmp_path / "out.webp"))
    assert code == 2 and not (tmp_path / "out.webp").exists()
    assert err == f"error: {tmp_path / 'out.webp'}: .webp is not a picture format specnet writes (png, jpg, jpeg, svg, pdf)\n"
    code, _, err = run(capsys, "spectrogram", clip_paths(clips)[2], "-o", str(tmp_path / "picture"))
    assert code == 0 and err == f"wrote {tmp_path / 'picture'} (a PNG)\n"
    assert (tmp_path / "picture").read_bytes().startswith(PNG_MAGIC)


def test_spectrogram_of_a_silent_quiet_or_short_file_says_what_the_picture_shows(capsys, tmp_path):
    rng = np.random.default_rng(0)
    cases = {
        "silent": (np.zeros(8000, np.float32), "silent (no sample above -90 dBFS): the picture shows nothing but the floor"),
        "quiet": ((rng.standard_normal(8000) * 1e-5).astype(np.float32),
                  "nearly silent (loudest sample -88 dBFS): the picture shows mostly its rounding noise"),
        "short": (np.full(80, 0.3, np.float32),
                  "0.005 s is shorter than one FFT frame (0.032 s): the picture is 1 frame, mostly padding"),
        "shorter_than_a_frame": (np.full(500, 0.3, np.float32),  # centred frames every 160 samples: 4 of them
                                 "0.03125 s is shorter than one FFT frame (0.032 s): the picture is 4 frames, mostly padding"),
        "tone": (S.class_clip("tone", 1), None),
    }
    for name, (samples, warning) in cases.items():
        path = write_audio(tmp_path / f"{name}.wav", samples, 16000, subtype="FLOAT")
        code, out, err = run(capsys, "spectrogram", str(path), "-o", str(tmp_path / f"{name}.png"))
        assert code == 0 and out == ""
        assert err == ("" if warning is None else f"warning: {path}: {warning}\n") + f"wrote {tmp_path / name}.png\n"


def test_spectrogram_of_a_file_shorter_than_an_uncentred_frame_is_one_line_naming_it(capsys, tmp_path):
    from specnet.featureconfig import FeatureConfig
    from specnet.modelfile import save_model_file
    from specnet.network import SpecNet
    from specnet.modelspec import ModelSpec

    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b"),
                     features=FeatureConfig(center=False), clip_seconds=1.0)
    model = save_model_file(SpecNet(spec), tmp_path / "uncentred.safetensors")
    path = write_audio(tmp_path / "short.wav", np.full(500, 0.3, np.float32), 16000, subtype="FLOAT")
    code, out, err = run(capsys, "spectrogram", str(path), "-m", str(model), "-o", str(tmp_path / "short.png"))
    assert (code, out) == (1, "") and not (tmp_path / "short.png").exists()
    assert err == (f"error: {path}: 0.03125 s is shorter than one FFT frame (0.032 s), which the front-end takes whole "
                   "(center=False): there is no frame to draw\n")


# ------------------------------------------------------------------ train and evaluate


@pytest.mark.parametrize(("value", "shown"), [('"loud"', "'loud'"), ("-3", "-3")])
def test_train_config_top_db_must_be_a_floor(capsys, tmp_path, value, shown):
    config = tmp_path / "train.toml"
    config.write_text(f"top_db = {value}\n")
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config))
    assert code == 1
    assert err == f"error: {config}: top_db={shown} must be a number of dB >= 0 (0: absolute dB, no floor)\n"


@pytest.mark.parametrize(("name", "text", "says"), [
    ("t.toml", 'features = "x"\n', "features must be a table of setting = value ([features] in TOML), not 'x'"),
    ("t.toml", "augment_args = 5\n", "augment_args must be a table of setting = value ([augment_args] in TOML), not 5"),
    ("t.yaml", "arch_args: [1, 2]\n", "arch_args must be a table of setting = value ([arch_args] in TOML), not [1, 2]"),
    ("t.yaml", "1: x\n", "option names are words, not 1"),
    ("t.yaml", "- 1\n", "config must be a table of option = value"),
    ("t.toml", "epochs = \n", "invalid TOML"),
    ("t.yaml", "a: [\n", "invalid YAML (expected the node content, but found '<stream end>' (at line 2, column 1))\n"),
    # An option given twice, where one value was dropped without a word (TOML refused only its own duplicate keys).
    ("t.yaml", "epochs: 2\nepochs: 3\n", "invalid YAML ('epochs' is given twice (at line 2, column 1))\n"),
    ("t.yaml", "features:\n  n_mels: 32\n  n_mels: 40\n", "invalid YAML ('n_mels' is given twice (at line 3, column 3))\n"),
    ("t.toml", "val-split = 0.3\nval_split = 0.1\n", "val-split and val_split are the same option: give it once\n"),
    ("t.toml", "n_mels = 32\n[features]\nn_mels = 48\n", "n_mels at the top and n_mels in [features] set the same thing: give one\n"),
    ("t.yaml", "top_db: 30\nfeatures:\n  ref_peak: false\n", "top_db at the top and ref_peak in [features] set the same thing: give one\n"),
])
def test_train_config_file_of_the_wrong_shape_is_one_line(capsys, tmp_path, name, text, says):
    config = tmp_path / name
    config.write_text(text)
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config))
    assert code == 1 and err.startswith(f"error: {config}: {says}") and err.count("\n") == 1, err


def test_train_top_db_flag_must_be_finite(capsys, tmp_path):
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--top-db", "inf")
    assert code == 2 and "Invalid value for '--top-db': 'inf' is not a finite number (see 'specnet" in err  # a usage error


def test_a_config_table_left_empty_is_an_empty_table(tmp_path):
    from specnet.cli import _read_config_file

    (tmp_path / "c.yaml").write_text("epochs: 2\nfeatures:\n#  n_mels: 40\n")
    assert _read_config_file(str(tmp_path / "c.yaml")) == {"epochs": 2, "features": {}}


def test_a_config_files_paths_from_the_home_folder_are_in_it(tmp_path, monkeypatch):
    # They were taken for paths beside the file: "configs/~/data: folder not found".
    from specnet.cli import _read_config_file

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.toml").write_text('data_dir = "~/data"\nval_dir = "~/val"\nmanifest = "m.csv"\n')
    assert _read_config_file(str(tmp_path / "configs" / "c.toml")) == {
        "data_dir": str(tmp_path / "home" / "data"), "val_dir": str(tmp_path / "home" / "val"),
        "manifest": str(tmp_path / "configs" / "m.csv")}


@pytest.mark.parametrize(("text", "option"), [("data_dir = 5\n", "data_dir"), ('manifest = ["a.csv"]\n', "manifest"),
                                             ("val_dir = 3\n", "val_dir"), ("weights = 3\n", "weights"), ("init = true\n", "init")])
def test_a_config_files_path_that_is_no_text_is_one_line(capsys, tmp_path, text, option):
    import tomllib

    # data_dir, manifest and val_dir were an internal TypeError; weights and init were blamed on no file.
    config = tmp_path / "train.toml"
    config.write_text(text)
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "run"), "--config", str(config))
    value = repr(tomllib.loads(text)[option])
    assert code == 2 and err == f"error: {config}: {option} must be a file or folder name (text), not {value}\n", err


def test_a_yaml_config_may_override_the_keys_it_merges(tmp_path):
    from specnet.cli import _read_config_file

    (tmp_path / "c.yaml").write_text("defaults: &defaults\n  epochs: 2\n  lr: 0.01\n<<: *defaults\nepochs: 3\n")
    assert _read_config_file(str(tmp_path / "c.yaml")) == {"defaults": {"epochs": 2, "lr": 0.01}, "epochs": 3, "lr": 0.01}


def test_interrupted_training_says_how_to_continue(capsys, tmp_path, monkeypatch):
    import shlex

    import specnet.training

    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    out = tmp_path / "my runs" / "first"
    save = specnet.training.save_checkpoint

    def ctrl_c_after_the_checkpoint(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("specnet.training.save_checkpoint", ctrl_c_after_the_checkpoint)
    code, _, err = run(capsys, "train", str(data), "--out", str(out), "--arch", "cnn_tiny", "--epochs", "2", "--device", "cpu")
    assert code == 130 and err.splitlines()[-1] == f"interrupted; continue with: specnet train --out '{out}' --resume", err
    # A name that cannot be pasted as shown (a line break, a byte that is not UTF-8) is not shown as one.
    odd = tmp_path / "odd\nname"
    code, _, odd_err = run(capsys, "train", str(data), "--out", str(odd), "--arch", "cnn_tiny", "--epochs", "2", "--device", "cpu")
    assert code == 130 and odd_err.splitlines()[-1] == "interrupted; continue with --resume and the same --out", odd_err

    monkeypatch.setattr("specnet.training.save_checkpoint", save)
    code, _, err = run(capsys, *shlex.split(err.splitlines()[-1].split(": ", 1)[1])[1:])  # the command it gave
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    # Stopped before it wrote a checkpoint of its own: resumed, the one there is still this run's ...
    def ctrl_c_while_decoding(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("specnet.training.decode_split", ctrl_c_while_decoding)
    code, _, err = run(capsys, "train", "--out", str(out), "--resume", "--epochs", "3")
    assert code == 130 and err.splitlines()[-1] == f"interrupted; continue with: specnet train --out '{out}' --resume", err
    # ... overwritten, it is the old run's, so no advice.
    code, _, err = run(capsys, "train", str(data), "--out", str(out), "--arch", "cnn_tiny", "--epochs", "2", "--overwrite")
    assert code == 130 and err.splitlines()[-1] == "interrupted", err


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
def test_sigterm_is_one_line_and_releases_the_run_lock(capsys, tmp_path, monkeypatch):
    import signal

    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    before = signal.getsignal(signal.SIGTERM)

    def terminated_while_decoding(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a job scheduler would
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr("specnet.training.decode_split", terminated_while_decoding)
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run"), "--arch", "cnn_tiny", "--epochs", "1")
    assert code == 143 and err.splitlines()[-1] == "terminated"
    assert not (tmp_path / "run").exists()  # the lock released and the empty run folder removed
    assert signal.getsignal(signal.SIGTERM) == before  # main() put the process's handler back


def test_paths_in_a_config_file_are_relative_to_its_folder(capsys, tmp_path, monkeypatch):
    recipe = tmp_path / "recipe"
    data = S.make_audio_dataset(recipe / "data", per_class=2)
    rows = [f"data/{p.relative_to(data).as_posix()},{p.parent.name},{i % 2}" for i, p in enumerate(sorted(data.rglob("*.wav")))]
    (recipe / "m.csv").write_text("path,label,fold\n" + "\n".join(rows) + "\n")
    config = recipe / "train.toml"
    config.write_text('manifest = "m.csv"\nval_fold = 0\narch = "cnn_tiny"\nepochs = 1\nnum_workers = 1\ninit = "esc10"\n')
    (recipe / "esc10").mkdir()  # a folder named like the bundled model: init stays the name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # The manifest is found beside the file and its files decoded: the run then stops at the
    # architecture the bundled init model (a name, not a path) does not have.
    code, _, err = run(capsys, "train", "--out", "run", "--config", str(config))
    # Both came from the file: named as the file names them, and the file blamed.
    assert code == 2 and err == (
        f"error: {config}: esc10: a model started from init keeps its architecture and front-end, but arch is "
        "'cnn_tiny' here and 'cnn_small' in the model: leave these options out, or train from scratch\n"), err
    assert not (elsewhere / "run").exists()
    # A flag is named as a flag; the file is blamed for what it set.
    code, _, err = run(capsys, "train", "--out", "run", "--config", str(config), "--init", "fsdd", "--n-mels", "32",
                       "--arch-arg", "drop_rate=0.1")
    assert code == 2 and err.startswith(
        f"error: {config}: fsdd: a model started from --init keeps its architecture and front-end, but arch is 'cnn_tiny' "
        "here and 'cnn_small' in the model; --arch-arg drop_rate is 0.1 here and 0.3 in the model; --n-mels is 32 here"), err
    code, _, err = run(capsys, "train", str(data), "--out", "run", "--init", "fsdd", "--arch", "cnn", "--epochs", "1")
    assert code == 2 and err.startswith("error: fsdd: a model started from --init keeps its architecture and front-end, "
                                        "but --arch is 'cnn' here and 'cnn_small' in the model"), err


def test_train_option_errors_name_options_as_given_and_hints_as_flags(capsys, tmp_path):
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--freeze-backbone")
    assert code == 2 and err == "error: --freeze-backbone needs a trained backbone: pass --pretrained, --weights FILE or --init MODEL\n"
    config = tmp_path / "train.toml"
    config.write_text("freeze_backbone = true\n")
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config))
    assert code == 2 and err == f"error: {config}: freeze_backbone needs a trained backbone: pass --pretrained, --weights FILE or --init MODEL\n"
    # Words that are option names but say something else stay words.
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--arch-arg", "num_classes=3")
    assert code == 2 and "ImageNet weights from pretrained/weights" in err and "the data, in_chans" in err, err
    config.write_text("keep = \"last\"\n")
    code, _, err = run(capsys, "train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config), "--patience", "3")
    assert code == 2 and err == (f"error: {config}: --patience stops at the best validation epoch, which keep='last' never looks for; "
                                 "use keep='best'\n")


def test_an_init_conflict_over_the_floor_is_said_as_top_db(capsys, tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run"), "--init", "fsdd", "--top-db", "0")
    assert code == 2 and err == ("error: fsdd: a model started from --init keeps its architecture and front-end, but --top-db "
                                 "is 0 here and 35.0 in the model: leave these options out, or train from scratch\n"), err


def test_audio_options_for_images_are_named_as_given(capsys, tmp_path):
    data = S.make_image_dataset(tmp_path / "images", per_class=2)
    config = tmp_path / "train.toml"
    config.write_text("clip_seconds = 1.0\n[features]\nn_mels = 40\n")
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run"), "--config", str(config), "--top-db", "30")
    assert code == 2 and err == (f"error: {config}: the data holds image files, and n_mels, --top-db, clip_seconds apply to audio: "
                                 "leave them out\n"), err  # options to leave out: a usage error, as other refused combinations


def test_image_channels_other_than_grey_or_rgb_are_refused_before_decoding(capsys, tmp_path):
    # Image files are read as grey or RGB: in_chans = 2 skipped every file, one warning each,
    # then blamed the data ("no usable file left for classes ...: every one was skipped").
    data = S.make_image_dataset(tmp_path / "images", per_class=2)
    config = tmp_path / "train.toml"
    config.write_text("in_chans = 2\n")
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run"), "--config", str(config))
    assert code == 2 and err == f"error: {config}: in_chans=2 must be 1 (grey) or 3 (RGB) for image files\n", err
    assert not (tmp_path / "run").exists()


def test_options_the_data_or_front_end_rule_out_are_named_as_given(capsys, tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    out = str(tmp_path / "run")
    code, _, err = run(capsys, "train", str(data), "--out", out, "--image-size", "32", "32")
    assert code == 2 and err == "error: the data holds audio files, and --image-size applies to images: leave it out\n", err
    window = "is shorter than one FFT window (512 samples = 0.032 s at 16000 Hz)"
    code, _, err = run(capsys, "train", str(data), "--out", out, "--clip-seconds", "0.01")
    assert code == 2 and err == f"error: --clip-seconds 0.01 {window}\n", err
    config = tmp_path / "train.toml"
    config.write_text("clip_seconds = 0.01\n")
    code, _, err = run(capsys, "train", str(data), "--out", out, "--config", str(config))
    assert code == 2 and err == f"error: {config}: clip_seconds=0.01 {window}\n", err
    assert not (tmp_path / "run").exists()


def test_resume_alone_continues_a_run_with_its_own_data_and_options(capsys, tmp_path, monkeypatch):
    S.make_audio_dataset(tmp_path / "data", per_class=4)
    config = tmp_path / "train.toml"
    config.write_text(f'arch = "cnn_tiny"\nbatch_size = 2\nlr = 0.003\naugment = false\nnum_workers = 1\ndevice = "cpu"\n'
                      f"amp = false\nclip_seconds = {S.CLIP_SECONDS}\nval_split = 0.25\n[features]\n"
                      + "".join(f"{k} = {v}\n" for k, v in S.FEATURES.items()))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", "data", "--out", "run", "--config", str(config), "--epochs", "1", "--n-mels", "16")
    assert code == 0, err
    code, _, err = run(capsys, "train", "data", "--out", "reference", "--config", str(config), "--epochs", "2", "--n-mels", "16")
    assert code == 0, err

    # From another folder, with neither the data, the file nor the flags: all come from run/config.json.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, stdout, err = run(capsys, "train", "--out", "../run", "--resume", "--epochs", "2")
    assert code == 0, err
    assert "kept epoch" in stdout
    resumed, reference = json.loads(Path("../run/config.json").read_text()), json.loads(Path("../reference/config.json").read_text())
    assert resumed["epochs"] == 2 and resumed["features"]["n_mels"] == 16 and resumed["batch_size"] == 2
    assert resumed["data"] == reference["data"]
    rows = [json.loads(line) for line in Path("../run/metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in Path("../reference/metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["train_loss"] for row in rows] == pytest.approx([row["train_loss"] for row in expected], abs=1e-6)

    # Options given again must match the run's; the message says what each was.
    code, _, err = run(capsys, "train", "--out", "../run", "--resume", "--epochs", "3", "--lr", "0.01")
    assert code == 1 and "(--lr: 0.003 then, 0.01 now)" in err and "leave them out to resume with the run's own" in err, err
    code, _, err = run(capsys, "train", "--out", "../run", "--resume", "--epochs", "3", "--val-split", "0.5")
    assert code == 1 and "was written with different options (--val-split: 0.25 then, 0.5 now) and was trained on other data (" in err, err  # named as given: a flag
    # The file given again is read as given: its n_mels (32) is not the run's (the flag's 16) ...
    code, _, err = run(capsys, "train", "--out", "../run", "--resume", "--epochs", "3", "--config", str(config))
    assert code == 1 and err.startswith(f"error: {config}: ../run/checkpoint.pt: was written with different options (n_mels: 16 then, 32 now)"), err
    # ... and with the flag as well, nothing differs.
    code, _, err = run(capsys, "train", "--out", "../run", "--resume", "--epochs", "3", "--config", str(config), "--n-mels", "16")
    assert code == 0, err
    assert len(Path("../run/metrics.jsonl").read_text().splitlines()) == 3
    # Without a run there is nothing to take the data from.
    code, _, err = run(capsys, "train", "--out", "../nothing", "--resume")
    assert code == 2 and err == "error: ../nothing: holds no run to resume (no config.json or checkpoint.pt); give the data to start one\n", err
    Path("../damaged").mkdir()
    Path("../damaged/config.json").write_text("{not json")
    code, _, err = run(capsys, "train", "--out", "../damaged", "--resume")
    assert code == 1 and err.startswith("error: ../damaged/config.json: cannot be read as a run's options ("), err


def test_train_with_config_file_flags_win(capsys, tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    config = tmp_path / "train.toml"
    config.write_text(
        "\n".join(
            [
                'arch = "cnn_tiny"',
                "epochs = 3",
                "batch_size = 2",
                "lr = 0.003",
                "augment = false",
                "num_workers = 1",
                'device = "cpu"',
                f"clip_seconds = {S.CLIP_SECONDS}",
                "val_split = 0.25",
                f"sample_rate = {S.SR}",
                "top_db = 35",  # as --top-db gives it: 35 dB below each clip's peak
                "[features]",
                *(f"{k} = {v}" for k, v in S.FEATURES.items() if k != "sample_rate"),
            ]
        )
        + "\n"
    )
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", str(data), "--out", str(out), "--config", str(config), "--epochs", "1",
                            "--n-mels", "16")
    assert code == 0, err
    assert "kept epoch 1" in stdout
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["epochs"] == 1  # the flag
    assert resolved["batch_size"] == 2 and resolved["arch"] == "cnn_tiny"  # the file
    assert resolved["features"]["n_mels"] == 16  # the flag
    assert resolved["features"]["sample_rate"] == S.SR and resolved["features"]["n_fft"] == 256  # the file
    assert resolved["val_split"] == 0.25
    assert resolved["features"]["ref_peak"] is True and resolved["features"]["top_db"] == 35  # the file
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert specnet.load_model(out / "model.safetensors").config.features.n_mels == 16

    code, _, err = run(capsys, "train", str(data), "--out", str(out), "--config", str(config))
    assert code == 1 and "--resume" in err and "--overwrite" in err
    code, _, err = run(capsys, "train", str(data), "--out", str(out), "--config", str(config), "--resume", "--overwrite")
    assert code == 2 and "--resume continues the run in --out and --overwrite replaces it: give one of them" in err

    # A validation flag replaces the file's val_split; two validation flags are refused.
    val = tmp_path / "val"
    shutil.copytree(data, val)
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run3"), "--config", str(config), "--val-dir", str(val))
    assert code == 0, err
    resolved = json.loads((tmp_path / "run3" / "config.json").read_text())
    assert resolved["val_dir"] == str(val) and resolved["val_split"] is None
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run4"), "--config", str(config), "--val-dir", str(val),
                       "--val-split", "0.3")
    assert code == 2 and err == "error: --val-dir and --val-split each choose the validation data: give one of them\n"

    # DATA_DIR replaces the file's manifest, and with it the file's val_fold (a folder has no folds).
    manifest = tmp_path / "folds.csv"
    wavs = sorted(data.rglob("*.wav"))
    manifest.write_text("path,label,fold\n" + "".join(f"{p},{p.parent.name},{i % 2}\n" for i, p in enumerate(wavs)))
    by_folds = tmp_path / "folds.toml"
    by_folds.write_text(config.read_text().replace("val_split = 0.25\n", f'manifest = "{manifest}"\nval_fold = 1\n'))
    for given, fold in (([str(data)], None), ([], 1)):
        run_dir = tmp_path / f"by_folds_{fold}"
        code, _, err = run(capsys, "train", *given, "--out", str(run_dir), "--config", str(by_folds), "--epochs", "1")
        assert code == 0, err
        resolved = json.loads((run_dir / "config.json").read_text())
        assert resolved["val_fold"] == fold and (resolved["manifest"] is None) == (fold is None)
        assert resolved["val_split"] == (None if fold else 0.1)  # the folder's: the default share, one file per class
        assert resolved["data"]["val_files"] == (len(wavs) // 2 if fold else 3)

    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 2\nepoch = 1\n")
    code, _, err = run(capsys, "train", str(data), "--out", str(tmp_path / "run2"), "--config", str(bad))
    assert code == 2 and err.startswith(f"error: {bad}: unknown training option epoch; known: ")
    assert ", epochs, " in err and ", sample_rate, " in err and ", data_dir, " in err

    # A bad value is said as it was given: under its flag, or naming the file that set it.
    run5 = str(tmp_path / "run5")
    bad.write_text("lr = -1\npatience = 3\n\n[features]\nn_mels = 0\n")
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--n-mels", "8")
    assert code == 2 and err == f"error: {bad}: lr=-1 must be a positive number\n"
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--lr", "0.1")
    assert code == 2 and err == f"error: {bad}: n_mels=0 must be an integer in [1, 1024]\n"
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--lr", "0", "--n-mels", "8")
    assert code == 2 and err == "error: --lr=0.0 must be a positive number\n"
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--lr", "0.1", "--n-mels", "8", "--keep", "last")
    assert code == 2 and err.startswith(f"error: {bad}: patience stops at the best validation epoch, which --keep='last' never")
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--patience", "2", "--keep", "last")
    assert code == 2 and err.startswith("error: --patience stops at the best validation epoch, which --keep='last' never")
    # Unknown names are the user's own keys, beside the list of right ones: never rewritten.
    bad.write_text("[augment_args]\nseed = 1\n")
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--seed", "3", "--n-mels", "8")
    assert code == 2 and err.startswith(f"error: {bad}: unknown augmentation setting seed; known: ") and "--" not in err
    bad.write_text("[features]\nhop = 100\n")
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad), "--n-mels", "8")
    assert code == 2 and err.startswith(f"error: {bad}: unknown feature setting hop; known: ") and ", n_mels, " in err
    bad.write_text("[features]\nn-mels = 32\n")  # the file's own spelling: the file is named all the same
    code, _, err = run(capsys, "train", str(data), "--out", run5, "--config", str(bad))
    assert code == 2 and err.startswith(f"error: {bad}: unknown feature setting n-mels; known: "), err


FAST_FLAGS = [
    "--arch", "cnn_tiny", "--epochs", "1", "--batch-size", "4", "--no-augment", "--device", "cpu",
    "--num-workers", "1", "--clip-seconds", str(S.CLIP_SECONDS), "--sample-rate", str(S.SR),
    "--n-fft", "256", "--hop-length", "80", "--n-mels", "32", "--f-max", "4000", "--quiet",
]


def test_what_train_and_evaluate_print_names_a_folder_on_one_line(capsys, tmp_path):
    # The run's folder went out as it is: a newline split the line, and a byte that is not UTF-8 stopped a
    # finished training with an internal UnicodeEncodeError (exit code 1) where standard output is strict UTF-8.
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    out = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9\nrun")
    flags = [flag for flag in FAST_FLAGS if flag != "--quiet"]
    code, stdout, err = run(capsys, "train", str(data), "--out", out, *flags)
    assert code == 0 and stdout.splitlines()[-1].endswith(f"; model in {tmp_path}/caf\\xe9\\nrun/model.safetensors"), err
    code, stdout, err = run(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert code == 0 and f"resuming {tmp_path}/caf\\xe9\\nrun after epoch 1\n" in stdout, err
    model = os.path.join(out, "model.safetensors")
    code, stdout, err = run(capsys, "evaluate", model, str(data))
    assert code == 0 and stdout.splitlines()[0].endswith(f"model {tmp_path}/caf\\xe9\\nrun/model.safetensors"), err
    code, stdout, err = run(capsys, "classify", "-m", model, str(data / "tone" / "tone_0.wav"))
    assert code == 0 and stdout.splitlines()[0].endswith(f"model {tmp_path}/caf\\xe9\\nrun/model.safetensors)"), err


def test_train_top_db_sets_the_front_ends_reference_and_floor(capsys, tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    cases = {"default": ([], (True, 60.0)), "35": (["--top-db", "35"], (True, 35.0)), "0": (["--top-db", "0"], (False, None))}
    for name, (flag, (ref_peak, top_db)) in cases.items():
        out = tmp_path / name
        code, _, err = run(capsys, "train", str(data), "--val-split", "0", "--out", str(out), *FAST_FLAGS, *flag)
        assert code == 0, (name, err)
        features = specnet.load_model(out / "model.safetensors").config.features
        assert (features.ref_peak, features.top_db) == (ref_peak, top_db), name
    code, _, err = run(capsys, "train", str(data), "--top-db", "-3", "--out", str(tmp_path / "x"))
    assert code == 2 and "--top-db" in err


def test_train_validation_flags(capsys, tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    manifest = tmp_path / "folds.csv"
    manifest.write_text("path,label,fold\n" + "".join(
        f"data/{label}/{label}_{i}.wav,{label},{1 if i == 0 else 0}\n" for label in S.AUDIO_CLASSES for i in range(4)
    ))
    val = S.make_audio_dataset(tmp_path / "val", per_class=1)
    cases = {
        "fold": (["--manifest", str(manifest), "--val-fold", "1"], (9, 3)),  # folds of unequal size
        "dir": ([str(data), "--val-dir", str(val)], (12, 3)),
        "none": ([str(data), "--val-split", "0"], (12, 0)),
        "split": ([str(data), "--val-split", "0.5"], (6, 6)),
    }
    for name, (args, (n_train, n_val)) in cases.items():
        out = tmp_path / name
        code, stdout, err = run(capsys, "train", *args, "--out", str(out), *FAST_FLAGS)
        assert code == 0, (name, err)
        assert stdout == ""  # --quiet
        counts = json.loads((out / "config.json").read_text())["data"]
        assert (counts["train_files"], counts["val_files"]) == (n_train, n_val), name
    code, _, err = run(capsys, "train", str(data), "--val-split", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--val-split" in err


def test_train_data_error_is_one_line(capsys, tmp_path):
    (tmp_path / "data" / "only").mkdir(parents=True)
    write_audio(tmp_path / "data" / "only" / "a.wav", S.class_clip("tone", 0), S.SR)
    code, out, err = run(capsys, "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "two classes" in err
    assert not (tmp_path / "run").exists()  # the failed run left no empty folder behind


def test_a_name_that_is_not_utf8_shows_as_xnn_in_an_error(capsys, tmp_path):
    data = os.fsencode(tmp_path) + b"/donn\xe9es"
    for label in ("a", "b"):
        os.makedirs(data + b"/" + label.encode())
    shutil.copy(write_audio(tmp_path / "a.wav", S.class_clip("tone", 0), S.SR), os.fsdecode(data + b"/a/a.wav"))
    code, _, err = run(capsys, "train", os.fsdecode(data), "--out", str(tmp_path / "run"))  # as sys.argv holds it
    assert code == 1 and err.startswith(f"error: {tmp_path}/donn\\xe9es: class folder b holds no audio or image files (")


def test_train_manifest_error_names_the_line_and_keeps_an_existing_folder(capsys, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.wav,dog\nb.wav\nc.wav,cat\n")
    (tmp_path / "run").mkdir()  # the user's folder, made before the run: it stays
    code, _, err = run(capsys, "train", "--manifest", str(manifest), "--out", str(tmp_path / "run"))
    assert code == 1 and err == f"error: {manifest}:3: empty path or label\n"
    assert (tmp_path / "run").is_dir() and not any((tmp_path / "run").iterdir())


def test_evaluate_table_json_and_out(capsys, model_file, clips, tmp_path):
    code, out, _ = run(capsys, "evaluate", model_file, str(clips), "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["n"] == 3 and result["classes"] == list(S.AUDIO_CLASSES)
    assert result["accuracy"] == specnet.evaluate(model_file, clips)["accuracy"]

    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", model_file, str(clips), "--out", str(report))
    assert code == 0 and err == f"wrote {report / 'metrics.json'} and {report / 'confusion.png'}\n"  # on stderr: not the report
    assert out.startswith(f"accuracy {result['accuracy']:.4f}")
    for label in S.AUDIO_CLASSES:
        assert any(line.startswith(label) for line in out.splitlines())
    assert json.loads((report / "metrics.json").read_text())["n"] == 3
    assert (report / "confusion.png").read_bytes().startswith(PNG_MAGIC)
    code, _, err = run(capsys, "evaluate", model_file, str(clips), "--out", str(report))
    assert code == 1 and "already exists" in err


def test_evaluate_out_is_checked_before_any_work_and_never_half_written(capsys, model_file, clips, tmp_path, monkeypatch):
    report = tmp_path / "report"
    report.mkdir()
    (report / "confusion.png").write_bytes(b"the user's own picture")
    import specnet.evaluation

    monkeypatch.setattr(specnet.evaluation, "load_model", lambda *a, **k: pytest.fail("loaded the model first"))
    code, _, err = run(capsys, "evaluate", model_file, str(clips), "--out", str(report))
    assert code == 1 and err == f"error: {report / 'confusion.png'}: already exists; pass --overwrite to replace it\n"
    assert sorted(p.name for p in report.iterdir()) == ["confusion.png"]  # no metrics.json on its own
    assert (report / "confusion.png").read_bytes() == b"the user's own picture"


def test_evaluate_one_class_and_skipped_files(capsys, model_file, clips, tmp_path):
    # Scoring on one class's files is allowed; a file that cannot be decoded is skipped, said, and
    # makes the exit code 1 after the scores of the rest are printed.
    data = tmp_path / "data"
    (data / "tone").mkdir(parents=True)
    write_audio(data / "tone" / "a.wav", S.class_clip("tone", 31), S.SR)
    write_audio(data / "tone" / "b.wav", S.class_clip("tone", 32), S.SR)
    (data / "tone" / "broken.wav").write_bytes(b"\x00" * 100)
    code, out, err = run(capsys, "evaluate", model_file, str(data), "--format", "json")
    assert code == 1
    result = json.loads(out)
    assert result["n"] == 2 and result["per_class"]["tone"]["support"] == 2
    assert [s["path"] for s in result["skipped"]] == [str(data / "tone" / "broken.wav")]
    assert err.splitlines()[-1] == "1 of 3 files skipped"
    (data / "tone" / "broken.wav").unlink()
    code, out, _ = run(capsys, "evaluate", model_file, str(data))
    assert code == 0 and out.startswith("accuracy ")


def test_evaluate_table_aligns_and_leaves_absent_classes_blank(capsys, model_file, clips, tmp_path):
    manifest = tmp_path / "no_hiss.csv"
    manifest.write_text("path,label\n" + "".join(f"{next((clips / c).iterdir())},{c}\n" for c in ("click", "tone")))
    code, out, _ = run(capsys, "evaluate", model_file, "--manifest", str(manifest))
    assert code == 0
    header, *rows = out.splitlines()[1:]
    assert header.split() == ["class", "precision", "recall", "f1", "support"]
    assert all(len(row) == len(header) for row in rows)  # numbers end under their headings
    by_class = {row.split()[0]: row.split()[1:] for row in rows}
    assert by_class["hiss"][1:] == ["-", "-", "0"]
    assert by_class["click"][-1] == by_class["tone"][-1] == "1" and "-" not in by_class["tone"]


def test_evaluate_class_mismatch_is_a_clear_error(capsys, model_file, tmp_path):
    for label in ("tone", "bird"):
        (tmp_path / "data" / label).mkdir(parents=True)
        write_audio(tmp_path / "data" / label / "a.wav", S.class_clip("tone", 1), S.SR)
    code, _, err = run(capsys, "evaluate", model_file, str(tmp_path / "data"))
    assert code == 1
    assert "class 'bird' that" in err and "(it knows 'click', 'hiss', 'tone')" in err and err.count("\n") == 1


def test_evaluation_table_lines_up_wide_class_names(capsys):
    # A name in Chinese characters counted one column per character and pushed its row's scores right.
    from specnet.cli import _print_evaluation
    from specnet.paths import columns

    row = {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    _print_evaluation({"accuracy": 0.75, "macro_f1": 0.7, "n": 4, "model": "m", "classes": ["猫犬", "dog"],
                       "per_class": {"猫犬": row, "dog": row}})
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [columns(line) for line in lines] == [columns(lines[0])] * 3
    assert [columns(line.split("1.0000")[0]) for line in lines[1:]] == [columns(lines[0].split("precision")[0]) + 3] * 2  # right-aligned under it


@pytest.mark.parametrize(("error", "says"), [
    (RuntimeError("first\nsecond"), "error: internal error RuntimeError: first\\nsecond (rerun with --debug for the traceback)\n"),
    (PermissionError(13, "Permission denied", "/x/y\nz"), "error: /x/y\\nz: Permission denied\n"),
    (OSError(28, "No space left on device"), "error: No space left on device\n"),
])
def test_an_unexpected_error_is_one_line_and_a_traceback_under_debug(capsys, monkeypatch, error, says):
    from specnet.cli import cli

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli.commands["models"], "callback", fails)
    monkeypatch.delenv("SPECNET_DEBUG", raising=False)
    assert run(capsys, "models") == (1, "", says)
    monkeypatch.setenv("SPECNET_DEBUG", "1")  # as --debug sets it: the error itself, for a bug report
    with pytest.raises(type(error)):
        main(["models"])


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_interrupted_batch_keeps_the_rows_it_wrote(capsys, monkeypatch, model_file, clips, fmt):
    # CSV and JSON were printed only once every file was scored: Ctrl-C lost them all.
    from specnet.inference import Model

    predict_iter = Model.predict_iter

    def stopped_after_two(self, *args, **kwargs):
        results = predict_iter(self, *args, **kwargs)
        yield next(results)
        yield next(results)
        raise KeyboardInterrupt

    paths = clip_paths(clips)
    code, whole, _ = run(capsys, "classify", "-m", model_file, "-k", "1", "--format", fmt, *paths)
    monkeypatch.setattr(Model, "predict_iter", stopped_after_two)
    stopped, out, err = run(capsys, "classify", "-m", model_file, "-k", "1", "--format", fmt, *paths)
    assert (code, stopped) == (0, 130) and err.split() == ["interrupted"]
    if fmt == "csv":
        assert out == "".join(whole.splitlines(keepends=True)[:3])  # the header and the first two files' rows
    else:  # the first two items, and the array closed: still one valid JSON document
        assert out == whole[: whole.index(",\n  {", whole.index(",\n  {") + 1)] + "\n]\n"
        assert json.loads(out) == json.loads(whole)[:2]

        def stopped_at_once(self, *args, **kwargs):
            raise KeyboardInterrupt
            yield

        monkeypatch.setattr(Model, "predict_iter", stopped_at_once)
        stopped, out, err = run(capsys, "classify", "-m", model_file, "--format", fmt, *paths)
        assert stopped == 130 and out == "[]\n"  # stopped before the first item: an empty array, not nothing


def test_a_model_file_among_the_inputs_is_named_as_one(capsys, model_file, clips, tmp_path):
    # "unsupported audio format '.safetensors'" did not say the file was meant as --model.
    code, out, err = run(capsys, "classify", model_file, *clip_paths(clips)[:1])
    assert code == 1 and f"error: {model_file}: a model file, not audio; give it with --model\n" in err
    assert "1 of 2 inputs failed" in err and out.count("model esc10") == 1
    others = {"m.onnx": "an ONNX model (run it with onnxruntime)", "checkpoint.pt": "a PyTorch file", "weights.pth": "a PyTorch file",
              "last.ckpt": "a checkpoint file"}
    paths = [tmp_path / name for name in others]  # not beside the shared run's own checkpoint.pt
    for path in paths:
        path.write_bytes(b"not audio")
    code, out, err = run(capsys, "classify", *map(str, paths))
    assert code == 1 and err.splitlines() == [
        *(f"error: {path}: {what}, not audio; specnet takes its own .safetensors model files with --model"
          for path, what in zip(paths, others.values())), "4 of 4 inputs failed"]
    exported = paths[0]
    exported.unlink()
    code, out, err = run(capsys, "classify", str(exported))  # gone: not found, whatever its name
    assert code == 1 and err == f"error: {exported}: file not found\n"


def test_evaluate_names_a_file_given_as_its_data(capsys, model_file, clips, tmp_path):
    # The arguments the wrong way round said "Directory ... is a file" under '[DATA_DIR]'.
    code, out, err = run(capsys, "evaluate", str(clips), model_file)
    assert code == 2 and out == "" and err.startswith(f"error: Invalid value for DATA_DIR: {model_file} is a model file: MODEL comes first")
    code, out, err = run(capsys, "evaluate", "esc10", model_file)  # the model first, and a second model: not swapped
    assert code == 2 and f"{model_file} is a model file: give one model, then the data" in err
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n")
    code, out, err = run(capsys, "evaluate", model_file, str(manifest))
    assert code == 2 and "is a file, not a folder of class folders (a CSV manifest is given with --manifest)" in err
    code, out, err = run(capsys, "train", model_file, "--out", str(tmp_path / "run"))
    assert code == 2 and f"{model_file} is a model file: to start from a model, give it with --init" in err
    assert not (tmp_path / "run").exists()
