"""Untrusted model files and careful output paths.

A pickle whose ``__reduce__`` would create a marker file is offered as a
model (classify --model, train --init, info) and as a run's checkpoint.pt
(train --resume): each is refused with a clear error and the marker never
appears. Safetensors files with bad specnet metadata or weights are refused
with a message saying what is wrong. Outputs never silently replace a file,
and a failed write leaves the earlier file as it was.
"""

from __future__ import annotations

import errno
import json
import pickle
from pathlib import Path

import pytest
import torch
from corpus import tiny_audio_model
from helpers import make_class_folders, make_tone
from safetensors.torch import load_file, save_file

import specnet
from specnet.cli import main
from specnet.errors import ModelFileError
from specnet.modelfile import load_model_file
from specnet.catalog import METADATA_KEY, read_metadata


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_audio_model(tmp_path_factory)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def error_line(code: int, err: str) -> str:
    """The one error line of a failed command (warnings about skipped files aside)."""
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- malicious pickles


class Marker:
    """Unpickling this creates ``path`` (a stand-in for running any code at all)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def evil_files(tmp_path, marker) -> dict[str, Path]:
    """The same payload as a raw pickle (protocols 0 and 4) and as torch.save's zip, under model-ish names."""
    files = {}
    for protocol in (0, 4):
        path = tmp_path / f"evil_p{protocol}.safetensors"
        path.write_bytes(pickle.dumps({"model": Marker(marker)}, protocol=protocol))
        files[f"pickle{protocol}"] = path
    path = tmp_path / "evil.pt"
    torch.save({"model": Marker(marker), "epoch": 0}, path)
    files["torch_save"] = path
    return files


def test_the_payload_really_runs_when_unpickled(evil_files, marker):
    # Guards the tests below: the marker does appear if anything unpickles these files.
    for path in evil_files.values():
        if path.suffix == ".pt":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()


def test_pickle_as_model_is_refused(capsys, evil_files, marker, tmp_path):
    make_tone(tmp_path / "clip.wav", 440.0, 0.3, 16000)
    for name, path in evil_files.items():
        for args in (["classify", "--model", path, tmp_path / "clip.wav"], ["info", path],
                     ["embed", "-m", path, "-o", tmp_path / "e.npz", tmp_path / "clip.wav"],
                     ["evaluate", path, tmp_path]):
            line = error_line(*run_cli(capsys, *args)[::2])
            assert str(path) in line, line
            assert "pickle" in line or "not a safetensors model file" in line, line
        with pytest.raises(ModelFileError):
            specnet.load_model(path, device="cpu")
        with pytest.raises(ModelFileError):
            read_metadata(path)
    assert not marker.exists()


def test_pickle_with_protocol_2_or_later_is_named_as_such(capsys, evil_files):
    line = error_line(*run_cli(capsys, "info", evil_files["pickle4"])[::2])
    assert "is a pickle/torch.save file; specnet refuses to unpickle model files" in line
    line = error_line(*run_cli(capsys, "info", evil_files["torch_save"])[::2])
    assert "is a pickle/torch.save file" in line


def test_pickle_as_init_is_refused(capsys, evil_files, marker, tmp_path):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2}, seconds=0.2)
    for path in evil_files.values():
        code, out, err = run_cli(capsys, "train", data, "-o", tmp_path / "run", "--init", path, "--epochs", "1")
        line = error_line(code, err)
        assert str(path) in line
        assert not (tmp_path / "run" / "model.safetensors").exists()
    assert not marker.exists()


def test_malicious_checkpoint_on_resume_is_refused(capsys, tmp_path, marker):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2}, seconds=0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    for flavour in ("torch_save", "pickle"):
        if flavour == "torch_save":
            torch.save({"model": Marker(marker), "epoch": 0}, run / "checkpoint.pt")
        else:
            (run / "checkpoint.pt").write_bytes(pickle.dumps({"epoch": Marker(marker)}, protocol=2))
        code, out, err = run_cli(capsys, "train", data, "-o", run, "--resume", "--arch", "cnn_tiny",
                                 "--epochs", "1", "--n-mels", "32", "--num-workers", "1")
        line = error_line(code, err)
        assert line.startswith(f"error: {run / 'checkpoint.pt'}: not a checkpoint specnet can load safely"), line
        assert "weights_only" not in line and "--overwrite" in line  # no advice to load it unsafely
        assert not marker.exists()
        assert not (run / "model.safetensors").exists()
        assert not (run / ".lock").exists()


# ---------------------------------------------------------------- bad safetensors files


def _rewrite(model_file: Path, out: Path, *, meta=None, state=None, metadata=None) -> Path:
    """A copy of ``model_file`` with its specnet metadata, weights or raw metadata replaced."""
    weights = load_file(str(model_file)) if state is None else state
    if metadata is None:
        metadata = {METADATA_KEY: json.dumps(meta if meta is not None else read_metadata(model_file))}
    save_file(weights, str(out), metadata=metadata)
    return out


def _bad_safetensors(model_file: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    meta = read_metadata(model_file)
    weights = load_file(str(model_file))
    key = next(k for k in weights if k.endswith("head.fc.weight"))

    def variant(name, expected, **changes):
        return name, (_rewrite(model_file, tmp_path / f"{name}.safetensors", **changes), expected)

    missing_classes = {k: v for k, v in meta.items() if k != "classes"}
    wrong_shape = {**weights, key: torch.zeros(weights[key].shape[0], weights[key].shape[1] + 1)}
    missing_weight = {k: v for k, v in weights.items() if k != key}
    extra_weight = {**weights, "backbone.extra": torch.zeros(3)}
    return dict([
        variant("no_metadata", "has no specnet metadata", metadata={}),
        variant("other_metadata", "has no specnet metadata", metadata={"format": "pt"}),
        variant("not_json", "specnet metadata is not valid JSON", metadata={METADATA_KEY: "{arch: cnn"}),
        variant("json_list", "specnet metadata must be a JSON object", metadata={METADATA_KEY: "[1, 2]"}),
        variant("no_version", "has no integer format_version", meta={**meta, "format_version": "1"}),
        variant("newer_version", "model format version 2 is newer than this specnet", meta={**meta, "format_version": 2}),
        variant("no_classes", "specnet metadata lacks classes", meta=missing_classes),
        variant("empty_classes", "'classes' must be a non-empty list", meta={**meta, "classes": []}),
        variant("duplicate_classes", "names a class twice", meta={**meta, "classes": ["a", "a"]}),
        variant("empty_class", "class 0 in 'classes' has an empty or blank name ('')", meta={**meta, "classes": ["", "b"]}),
        variant("blank_class", "class 1 in 'classes' has an empty or blank name (' \\t')", meta={**meta, "classes": ["a", " \t"]}),
        variant("bad_kind", "input_kind 'video' is not one of", meta={**meta, "input_kind": "video"}),
        variant("bad_features", "bad feature settings: n_mels='x'", meta={**meta, "features": {**meta["features"], "n_mels": "x"}}),
        variant("no_features", "an audio model needs feature settings", meta={**meta, "features": None}),
        variant("bad_in_chans", "in_chans='1' must be a positive integer", meta={**meta, "in_chans": "1"}),
        variant("bad_clip", "clip_seconds=-1 must be a positive number", meta={**meta, "clip_seconds": -1}),
        variant("bad_image_size", "image_size=[0, 5] must be [height, width]", meta={**meta, "image_size": [0, 5]}),
        variant("unknown_arch", "cannot build 'nope': unknown architecture 'nope'", meta={**meta, "arch": "nope"}),
        variant("bad_arch_args", "cannot build 'cnn_tiny'", meta={**meta, "arch_args": {"bogus": 1}}),
        variant("wrong_shape", f"{key} has shape", state=wrong_shape),
        variant("too_many_classes", "weights do not match the declared architecture",
                meta={**meta, "classes": ["a", "b", "c"]}),
        variant("missing_weight", f"missing {key}", state=missing_weight),
        variant("extra_weight", "unexpected backbone.extra", state=extra_weight),
    ])


def test_bad_specnet_metadata_and_weights_are_refused(capsys, model_file, tmp_path):
    for name, (path, expected) in _bad_safetensors(model_file, tmp_path).items():
        with pytest.raises(ModelFileError) as exc:
            load_model_file(path)
        assert str(exc.value).startswith(f"{path}: ") and expected in str(exc.value), name
        line = error_line(*run_cli(capsys, "classify", "-m", path, path)[::2])
        assert line == f"error: {exc.value}", name


#: The variants of :func:`_bad_safetensors` whose metadata, not weights, loading refuses.
METADATA_PROBLEMS = ("no_metadata", "not_json", "json_list", "no_version", "newer_version", "no_classes", "empty_classes",
                     "duplicate_classes", "empty_class", "blank_class", "bad_kind", "bad_features", "no_features",
                     "bad_in_chans", "bad_clip", "bad_image_size")


def test_info_reads_metadata_only(capsys, model_file, tmp_path):
    # `info` needs no weights: a file whose weights are wrong still describes itself, then
    # says, as its one error line, that it would not load ...
    bad = _bad_safetensors(model_file, tmp_path)
    code, out, err = run_cli(capsys, "info", bad["wrong_shape"][0])
    assert code == 1 and "classes:      a, b" in out
    assert error_line(code, err).startswith(f"error: {bad['wrong_shape'][0]}: weights do not match the declared architecture")
    # ... but metadata it cannot read, or would refuse to load, is an error (in `models`,
    # `spectrogram --model` and the API's model_metadata alike: one reading).
    for name in METADATA_PROBLEMS:
        path, expected = bad[name]
        line = error_line(*run_cli(capsys, "info", path)[::2])
        assert line.startswith(f"error: {path}: ") and expected in line, name
        line = error_line(*run_cli(capsys, "spectrogram", "-m", path, path, "-o", tmp_path / "s.png")[::2])
        assert line.startswith(f"error: {path}: ") and expected in line, name
    assert not (tmp_path / "s.png").exists()


def test_models_reports_a_bad_bundled_file_as_loading_does_and_lists_the_others(capsys, model_file, tmp_path, monkeypatch):
    # The listing read each bundled file's metadata unchecked: classes that are not names were an
    # internal error (TypeError), and the first file it could not read stopped the whole listing.
    from specnet import catalog

    bad = {name: path for name, (path, _) in _bad_safetensors(model_file, tmp_path).items() if name in METADATA_PROBLEMS}
    bad["numbered_classes"] = _rewrite(model_file, tmp_path / "numbered_classes.safetensors",
                                       meta={**read_metadata(model_file), "classes": [1, 2]})
    for name, path in bad.items():
        info_line = error_line(*run_cli(capsys, "info", path)[::2])
        monkeypatch.setattr(catalog, "bundled_models", lambda: {"bad": path, "good": model_file})
        code, out, err = run_cli(capsys, "models")
        assert (code, err.splitlines()) == (1, [info_line, "1 of 2 bundled models could not be read"]), name
        assert out.startswith("good: cnn_tiny\n  classes:  a, b\n"), name
    monkeypatch.setattr(catalog, "bundled_models", lambda: {"bad": path})
    assert run_cli(capsys, "models") == (1, "", info_line + "\n")


def test_models_leaves_out_provenance_it_cannot_show(capsys, model_file, tmp_path, monkeypatch):
    # Loading does not check a file's provenance: a dataset that is not a table was an internal
    # error (AttributeError), as was an accuracy that is a list; a line break went out as it was.
    from specnet import catalog

    meta = read_metadata(model_file)
    odd = {
        "text": {**meta, "dataset": "esc10", "metrics": [0.5]},
        "table": {**meta, "dataset": {"description": "two\nlines", "accuracy": [0.9], "license": "CC0", "credit": None}},
    }
    paths = {name: _rewrite(model_file, tmp_path / f"{name}.safetensors", meta=document) for name, document in odd.items()}
    monkeypatch.setattr(catalog, "bundled_models", lambda: paths)
    assert run_cli(capsys, "models") == (0, "text: cnn_tiny\n  classes:  a, b\n"
                                            "table: two\\nlines\n  classes:  a, b\n  license:  CC0\n", "")


def test_header_length_that_looks_like_a_pickle_still_loads(model_file, tmp_path):
    """A safetensors header of 128 + 256 k bytes starts with b"\\x80", the pickle protocol opcode."""
    weights = load_file(str(model_file))
    meta = json.dumps(read_metadata(model_file))
    path = tmp_path / "x80.safetensors"
    for pad in range(256):
        save_file(weights, str(path), metadata={METADATA_KEY: meta, "pad": "p" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    model = load_model_file(path)
    assert model.classes == ("a", "b")


# ---------------------------------------------------------------- output paths


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_tone(tmp_path / "clip.wav", 440.0, 0.3, 16000)


def _outputs(model_file, clip, out):
    """Command name -> (its args, the file it writes) for embed, spectrogram and export: ``out``
    with the suffix the command writes (a folder as it is)."""
    def named(suffix):
        return out if out.is_dir() else out.with_name(out.name + suffix)

    commands = {
        "embed": (["embed", "-m", model_file, "-o", named(".npz"), clip], named(".npz")),
        "spectrogram": (["spectrogram", clip, "-o", named(".png")], named(".png")),
    }
    try:
        import onnx  # noqa: F401

        import specnet.export  # noqa: F401
    except ImportError:
        pass
    else:
        commands["export"] = (["export", model_file, "-o", named(".onnx")], named(".onnx"))
    return commands


def test_outputs_never_overwrite_without_flag(capsys, model_file, clip, tmp_path):
    for name, (args, out) in _outputs(model_file, clip, tmp_path / "existing").items():
        out.write_bytes(b"earlier results")
        line = error_line(*run_cli(capsys, *args)[::2])
        assert line == f"error: {out}: already exists; pass --overwrite to replace it", name
        assert out.read_bytes() == b"earlier results", name
        code, _, err = run_cli(capsys, *args, "--overwrite")
        assert code == 0, err
        assert out.read_bytes() != b"earlier results", name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_output_under_a_regular_file_is_one_line(capsys, model_file, clip, tmp_path):
    blocker = tmp_path / "results"  # a file where a folder should be: as root, what a read-only place is to others
    blocker.write_text("earlier results")
    for name, (args, out) in _outputs(model_file, clip, blocker / "out").items():
        line = error_line(*run_cli(capsys, *args)[::2])
        assert line.startswith(f"error: {out}: cannot write"), (name, line)
        assert blocker.read_text() == "earlier results"


def test_output_to_a_folder_is_one_line(capsys, model_file, clip, tmp_path):
    for name, (args, _) in _outputs(model_file, clip, tmp_path).items():
        code, out, err = run_cli(capsys, *args)
        assert "Traceback" not in err and str(tmp_path) in err, name
        if code == 2:  # click refuses a folder for -o itself: a usage error, one line too
            assert err.count("\n") == 1 and err.startswith("error: Invalid value for"), (name, err)
        else:
            error_line(code, err)  # exactly one "error: ..." line


def test_failed_write_keeps_the_earlier_file(capsys, model_file, clip, tmp_path, monkeypatch):
    """Disk full (or read-only) at the last moment: the old file is intact and no temporary file is left."""
    import specnet.fileio

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    for name, (args, out) in _outputs(model_file, clip, tmp_path / "kept").items():
        out.write_bytes(b"earlier results")
        monkeypatch.setattr(specnet.fileio.os, "replace", full)
        code, _, err = run_cli(capsys, *args, "--overwrite")
        monkeypatch.undo()
        line = error_line(code, err)
        assert line == f"error: {out}: cannot write (disk full); earlier contents are unchanged", name
        assert out.read_bytes() == b"earlier results"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_read_only_folder_is_one_line(capsys, model_file, clip, tmp_path, monkeypatch):
    """mkstemp refused (a read-only folder for a normal user; simulated, as root ignores modes)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    for name, (args, out) in _outputs(model_file, clip, tmp_path / "ro" / "x").items():
        line = error_line(*run_cli(capsys, *args)[::2])
        assert line == f"error: {out}: cannot write here (Permission denied)", name
    assert list((tmp_path / "ro").iterdir()) == []


def test_evaluate_out_keeps_earlier_report(capsys, model_file, tmp_path):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2}, seconds=0.3)
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text('{"earlier": true}')
    line = error_line(*run_cli(capsys, "evaluate", model_file, data, "--out", report)[::2])
    assert line == f"error: {report / 'metrics.json'}: already exists; pass --overwrite to replace it"
    assert json.loads((report / "metrics.json").read_text()) == {"earlier": True}
    code, out, err = run_cli(capsys, "evaluate", model_file, data, "--out", report, "--overwrite")
    assert code == 0, err
    assert json.loads((report / "metrics.json").read_text())["n"] == 4
