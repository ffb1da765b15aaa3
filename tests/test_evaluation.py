"""Tests for specnet/evaluation.py: scores on labelled files, the written report, class matching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import synthetic as S
from helpers import write_audio

import specnet
from specnet import inference
from specnet.errors import DataError, ParameterError, SpecnetError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def test_data(tmp_path_factory) -> Path:
    """4 unseen clips per class, the first of each a second long (scored over windows)."""
    root = tmp_path_factory.mktemp("eval") / "test"
    for label in S.AUDIO_CLASSES:
        (root / label).mkdir(parents=True)
        for i in range(4):
            write_audio(root / label / f"{label}_{i}.wav", S.class_clip(label, 30 + i, seconds=1.0 if i == 0 else 0.5), S.SR)
    return root


def check_consistent(result: dict, n: int) -> None:
    """Every number in an evaluation result follows from its confusion matrix."""
    confusion = np.array(result["confusion"])
    k = len(result["classes"])
    assert confusion.shape == (k, k)
    assert result["n"] == confusion.sum() == n
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / n)
    f1s = []
    for i, name in enumerate(result["classes"]):
        row = result["per_class"][name]
        tp, support, predicted = confusion[i, i], confusion[i].sum(), confusion[:, i].sum()
        assert row["support"] == support
        # Undefined scores (a zero denominator) are None, so JSON says null rather than a false 0.
        assert row["precision"] == (pytest.approx(tp / predicted) if predicted else None)
        if not support:
            assert row["recall"] is None and row["f1"] is None
            continue
        assert row["recall"] == pytest.approx(tp / support)
        p, r = row["precision"] or 0.0, row["recall"]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
        f1s.append(row["f1"])
    assert result["macro_f1"] == pytest.approx(np.mean(f1s))


def test_scores_are_consistent_and_high(audio_run, test_data):
    result = specnet.evaluate(audio_run.model, test_data, device="cpu")
    assert result["classes"] == list(S.AUDIO_CLASSES)
    check_consistent(result, 12)
    assert result["accuracy"] >= 0.9
    assert result["skipped"] == []
    assert result["model"] == str(audio_run.model)
    assert result["loss"] > 0 and np.isfinite(result["loss"])


def test_scores_are_classifys_file_by_file_even_for_a_streamed_file(audio_run, test_data, tmp_path, monkeypatch):
    # evaluate runs the files as `specnet classify` does, so its confusion matrix is
    # classify's top labels counted; a file over STREAM_SECONDS is streamed, never held whole.
    root = tmp_path / "data"
    shutil.copytree(test_data, root)
    long_clip = np.concatenate([S.class_clip("hiss", 50 + i, seconds=1.0) for i in range(4)])
    write_audio(root / "hiss" / "long.wav", long_clip, S.SR)
    monkeypatch.setattr(inference, "STREAM_SECONDS", 2.0)
    model = specnet.load_model(audio_run.model, device="cpu")
    predicted = {Path(p.path).name: p for p in model.predict(sorted(map(str, root.rglob("*.wav"))))}
    assert predicted["long.wav"].duration == pytest.approx(4.0)
    decoded = {}  # file name -> samples decoded in one piece
    real_load_audio = inference.load_audio

    def load_audio(path, **kwargs):
        samples, rate = real_load_audio(path, **kwargs)
        decoded[Path(path).name] = samples.shape[-1]
        return samples, rate

    monkeypatch.setattr(inference, "load_audio", load_audio)
    result = specnet.evaluate(audio_run.model, root, device="cpu")
    assert len(decoded) == 13 and max(decoded.values()) <= (inference.STREAM_SECONDS + 1) * S.SR
    expected = np.zeros((3, 3), dtype=int)
    for path in root.rglob("*.wav"):
        label = predicted[path.name].predictions[0]["label"]
        expected[S.AUDIO_CLASSES.index(path.parent.name), S.AUDIO_CLASSES.index(label)] += 1
    np.testing.assert_array_equal(result["confusion"], expected)
    true_probability = [predicted[p.name].probabilities[S.AUDIO_CLASSES.index(p.parent.name)] for p in root.rglob("*.wav")]
    assert result["loss"] == pytest.approx(-np.mean(np.log(true_probability)), rel=1e-6)
    check_consistent(result, 13)


def test_progress_bar_goes_to_stderr_and_changes_nothing(audio_run, test_data, capsys):
    quiet = specnet.evaluate(audio_run.model, test_data, device="cpu")
    assert capsys.readouterr().err == ""
    shown = specnet.evaluate(audio_run.model, test_data, device="cpu", progress=True)
    captured = capsys.readouterr()
    assert "evaluating:" in captured.err and "/12 [" in captured.err and captured.out == ""
    assert shown == quiet


def test_classes_are_matched_by_name(audio_run, tmp_path):
    # Only two of the model's three classes: folder index 0 is "tone" here but 2 in the model.
    root = tmp_path / "subset"
    for label in ("tone", "zz_click"):
        (root / label).mkdir(parents=True)
    for i in range(2):
        write_audio(root / "tone" / f"t{i}.wav", S.class_clip("tone", 40 + i), S.SR)
        write_audio(root / "zz_click" / f"c{i}.wav", S.class_clip("click", 40 + i), S.SR)
    with pytest.raises(DataError, match="zz_click") as error:
        specnet.evaluate(audio_run.model, root, device="cpu")
    assert "(it knows 'click', 'hiss', 'tone')" in str(error.value)  # says which classes the model knows

    (root / "zz_click").rename(root / "click")
    result = specnet.evaluate(audio_run.model, root, device="cpu")
    check_consistent(result, 4)
    confusion = np.array(result["confusion"])
    assert confusion[1].sum() == 0  # no "hiss" files
    assert confusion[0].sum() == 2 and confusion[2].sum() == 2
    assert result["per_class"]["hiss"]["support"] == 0


def test_out_writes_metrics_and_confusion(audio_run, test_data, tmp_path):
    out = tmp_path / "report"
    result = specnet.evaluate(audio_run.model, test_data, out=out, device="cpu")
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "metrics.json").read_text().endswith("}\n")  # a text file: `cat` leaves the prompt on its own line
    png = (out / "confusion.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    with pytest.raises(SpecnetError, match="already exists"):
        specnet.evaluate(audio_run.model, test_data, out=out, device="cpu")
    specnet.evaluate(audio_run.model, test_data, out=out, device="cpu", overwrite=True)


def test_unreadable_file_is_skipped_and_reported(audio_run, test_data, tmp_path):
    root = tmp_path / "data"
    for label in S.AUDIO_CLASSES:
        (root / label).mkdir(parents=True)
        for path in (test_data / label).iterdir():
            (root / label / path.name).write_bytes(path.read_bytes())
    (root / "hiss" / "broken.wav").write_bytes(b"RIFF but not really a wave file" * 20)
    (root / "tone" / "moved.wav").symlink_to(tmp_path / "gone.wav")  # a link whose file was moved
    result = specnet.evaluate(audio_run.model, root, device="cpu")
    assert {Path(s["path"]).name: s["reason"] for s in result["skipped"]} == {  # the name once, in "path"
        "broken.wav": "not a readable audio file (format not recognised)",
        "moved.wav": "file not found (broken symbolic link)",
    }
    check_consistent(result, 12)
    bad = root / "tone" / "two\nlines.wav"  # JSON keeps the name as it is
    bad.write_bytes(b"not audio")
    assert str(bad) in [s["path"] for s in specnet.evaluate(audio_run.model, root, device="cpu")["skipped"]]


def test_manifest_fold_and_errors(audio_run, test_data, tmp_path):
    manifest = test_data.parent / "folds.csv"
    rows = ["path,label,fold"]
    for label in S.AUDIO_CLASSES:
        for i, path in enumerate(sorted((test_data / label).iterdir())):
            rows.append(f"{path.relative_to(manifest.parent).as_posix()},{label},{1 if i == 0 else 0}")
    manifest.write_text("\n".join(rows) + "\n")
    result = specnet.evaluate(audio_run.model, manifest=manifest, fold=1, device="cpu")
    check_consistent(result, 3)  # each class's first file; fold 0 holds the other 9
    check_consistent(specnet.evaluate(audio_run.model, manifest=manifest, fold=0, device="cpu"), 9)
    with pytest.raises(ParameterError, match=r"^fold='1' must be an integer$"):
        specnet.evaluate(audio_run.model, manifest=manifest, fold="1", device="cpu")
    with pytest.raises(ParameterError, match="a fold= needs a manifest="):
        specnet.evaluate(audio_run.model, test_data, fold=1, device="cpu")
    with pytest.raises(ParameterError, match="data folder"):
        specnet.evaluate(audio_run.model, device="cpu")
    with pytest.raises(ParameterError, match="give a data folder or a manifest, not both"):
        specnet.evaluate(audio_run.model, test_data, manifest=manifest, device="cpu")
    no_folds = test_data.parent / "plain.csv"
    no_folds.write_text("\n".join(row.rsplit(",", 1)[0] for row in rows) + "\n")
    with pytest.raises(DataError, match=rf"^{no_folds}: fold 1: the data has no folds \(a manifest with a 'fold' column gives them\)$"):
        specnet.evaluate(audio_run.model, manifest=no_folds, fold=1, device="cpu")


def test_a_class_outside_the_scored_fold_does_not_matter(audio_run, test_data, tmp_path):
    manifest = tmp_path / "m.csv"
    rows = ["path,label,fold"] + [f"{p},{label},1" for label in S.AUDIO_CLASSES for p in sorted((test_data / label).iterdir())]
    shutil.copy(next((test_data / S.AUDIO_CLASSES[0]).iterdir()), tmp_path / "extra.wav")
    rows.append("extra.wav,a_class_the_model_lacks,2")
    manifest.write_text("\n".join(rows) + "\n")
    check_consistent(specnet.evaluate(audio_run.model, manifest=manifest, fold=1, device="cpu"), 12)
    with pytest.raises(DataError, match=r"has class 'a_class_the_model_lacks' that the model does not know \(it knows '"):
        specnet.evaluate(audio_run.model, manifest=manifest, fold=2, device="cpu")


def test_a_loaded_model_is_scored_as_its_file_is(audio_run, test_data):
    model = specnet.load_model(audio_run.model, device="cpu")
    assert specnet.evaluate(model, test_data) == specnet.evaluate(audio_run.model, test_data, device="cpu")


def test_a_report_inside_the_data_folder_is_refused(audio_run, test_data):
    out = test_data / S.AUDIO_CLASSES[0] / "report"
    with pytest.raises(DataError, match=r"report: inside the data folder .*choose a folder outside it$"):
        specnet.evaluate(audio_run.model, test_data, out=out, device="cpu")
    assert not out.exists()


def test_image_data_for_an_audio_model_is_refused(audio_run, tmp_path):
    data = S.make_image_dataset(tmp_path / "images", per_class=1)
    for name in ("checker", "horizontal", "vertical"):
        (data / name).rename(data / {"checker": "click", "horizontal": "hiss", "vertical": "tone"}[name])
    with pytest.raises(DataError, match=f"^{data}: holds image files, and the model \\({audio_run.model}\\) takes audio$"):
        specnet.evaluate(audio_run.model, data, device="cpu")
    for name in ("click", "hiss", "tone"):  # other class names: still the kind that is named first
        (data / name).rename(data / f"picture_{name}")
    with pytest.raises(DataError, match=f"^{data}: holds image files, and the model"):
        specnet.evaluate(audio_run.model, data, device="cpu")


def test_a_stray_picture_among_the_audio_is_left_out_with_one_warning(audio_run, test_data, tmp_path, caplog):
    # One cover.png in a class folder refused the whole test folder ("mixes audio and image files"),
    # where `specnet classify` of the same folder left it out.
    from helpers import make_image

    data = tmp_path / "data"
    shutil.copytree(test_data, data)
    make_image(data / "tone" / "cover.png")
    expected = specnet.evaluate(audio_run.model, test_data, device="cpu")
    with caplog.at_level("WARNING", logger="specnet"):
        result = specnet.evaluate(audio_run.model, data, device="cpu")
    assert [r.getMessage() for r in caplog.records] == [f"{data}: 1 image file left out (the model takes audio)"]
    assert result["n"] == expected["n"] and result["confusion"] == expected["confusion"] and result["skipped"] == []
    # A class folder holding nothing but a picture is a class without audio.
    shutil.rmtree(data / "hiss")
    (data / "hiss").mkdir()
    make_image(data / "hiss" / "cover.png")
    with pytest.raises(DataError, match=rf"^{data}: class folder hiss holds no audio files \(audio: [^;]*\.wav[^;]*\)$"):
        specnet.evaluate(audio_run.model, data, device="cpu")  # the audio suffixes only: images would not do


def test_report_stopped_while_drawing_leaves_no_metrics_alone(tmp_path, monkeypatch):
    """Drawing confusion.png takes a while: a Ctrl-C there writes neither file, not a metrics.json
    that a rerun then refuses to replace."""
    from matplotlib.figure import Figure

    from specnet.evaluation import write_report
    from specnet.metrics import Scores

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        write_report(Scores(("a", "b"), np.eye(2, dtype=int)), {"model": "m", "accuracy": 1.0}, out, overwrite=False)
    assert list(out.iterdir()) == []
