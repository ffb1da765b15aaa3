"""Tests for specnet/data.py: class folders, manifests, splits and decoding."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import make_class_folders, make_image, make_tone

from specnet.audio import load_audio
from specnet.data import (
    LabelledFiles,
    decode_all,
    file_kind,
    find_class_folders,
    read_manifest,
    split_by_fold,
    stratified_split,
)
from specnet.errors import AudioError, DataError, ParameterError

# --- class folders -------------------------------------------------------------


def _touch(path: Path) -> Path:
    """An empty file: find_class_folders looks at names only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_class_folders_sorted_classes_and_targets(tmp_path):
    root = make_class_folders(tmp_path / "data", {"dog": 2, "cat": 3, "bird": 1}, seconds=0.05)
    data = find_class_folders(root)
    assert data.classes == ["bird", "cat", "dog"]
    assert data.class_to_idx == {"bird": 0, "cat": 1, "dog": 2}
    assert data.kind == "audio" and data.folds is None
    assert data.targets == [0, 1, 1, 1, 2, 2]
    assert [p.name for p in data.paths] == [
        "bird_0.wav", "cat_0.wav", "cat_1.wav", "cat_2.wav", "dog_0.wav", "dog_1.wav",
    ]
    assert all(p.parent.name == data.classes[t] for p, t in data.samples)
    assert data.class_counts() == {"bird": 1, "cat": 3, "dog": 2}


def test_find_class_folders_ignores_hidden_and_other_files_and_recurses(tmp_path):
    root = tmp_path / "data"
    _touch(root / "a" / "one.wav")
    _touch(root / "a" / "deep" / "er" / "two.FLAC")  # nested, upper-case suffix
    _touch(root / "a" / ".hidden.wav")
    _touch(root / "a" / "._one.wav")  # macOS resource fork
    _touch(root / "a" / ".cache" / "three.wav")  # inside a hidden folder
    _touch(root / "a" / "notes.txt")
    _touch(root / "b" / "x.ogg")
    _touch(root / ".git" / "y.wav")  # hidden folder is not a class
    _touch(root / "README.wav")  # files at the root are not in a class
    data = find_class_folders(root)
    assert data.classes == ["a", "b"]
    assert [p.relative_to(root).as_posix() for p in data.paths] == ["a/deep/er/two.FLAC", "a/one.wav", "b/x.ogg"]
    assert data.targets == [0, 0, 1]


def test_find_class_folders_images(tmp_path):
    root = tmp_path / "imgs"
    for label in ("x", "y"):
        (root / label).mkdir(parents=True)
        make_image(root / label / "p.png", size=(4, 4))
    data = find_class_folders(root)
    assert data.kind == "image" and data.targets == [0, 1]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found") as err:
        find_class_folders(tmp_path / "nope")
    assert "nope" in str(err.value)
    _touch(tmp_path / "file.wav")
    with pytest.raises(DataError, match="not a folder"):
        find_class_folders(tmp_path / "file.wav")


def test_no_class_subfolders(tmp_path):
    _touch(tmp_path / "loose.wav")
    with pytest.raises(DataError, match="no class subfolders") as err:
        find_class_folders(tmp_path)
    assert "<class>/<file>" in str(err.value)


def test_empty_class_is_named_with_the_extensions(tmp_path):
    _touch(tmp_path / "a" / "one.wav")
    _touch(tmp_path / "b" / "readme.txt")
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError) as err:
        find_class_folders(tmp_path)
    message = str(err.value)
    assert ": class folders b, c hold no audio or image files (" in message
    for ext in (".wav", ".flac", ".mp3", ".png", ".jpg"):
        assert ext in message


def test_single_class(tmp_path):
    _touch(tmp_path / "only" / "one.wav")
    with pytest.raises(DataError, match="only class 'only'; at least two"):
        find_class_folders(tmp_path)


def test_a_class_folder_with_a_blank_name_is_refused(tmp_path):
    # Its class would be named " ", and a model file with a blank class name is refused on load.
    for name in ("dog/a.wav", " /b.wav"):
        _touch(tmp_path / name)
    with pytest.raises(DataError, match=r"^.*: class folder ' ' has a blank name; rename it: a class needs a name to show$"):
        find_class_folders(tmp_path)


def test_a_class_folder_reached_from_another_class_through_a_link_is_refused(tmp_path):
    for name in ("one/a.wav", "one/b.wav", "two/c.wav"):
        _touch(tmp_path / name)
    for link, target in (("two/alias", "../one"), ("two/up", ".."), ("zz_copy_of_two", "two")):
        (tmp_path / link).symlink_to(target, target_is_directory=True)
        with pytest.raises(DataError, match=r": the folder .* of class '\w+', reached through a link from class '\w+'; each file belongs to one class$"):
            find_class_folders(tmp_path)
        (tmp_path / link).unlink()
    # Linked files are kept, as copies would be: a content-addressed store links equal files to one blob.
    (tmp_path / "two" / "again.wav").symlink_to("c.wav")
    (tmp_path / "two" / "from_one.wav").symlink_to("../one/b.wav")
    assert len(find_class_folders(tmp_path).samples) == 5


def test_an_output_folder_inside_the_data_is_refused(tmp_path):
    from specnet.data import check_outside_the_data

    check_outside_the_data(tmp_path / "data2", [None, tmp_path / "data"])  # a name that only starts alike
    for out in (tmp_path / "data", tmp_path / "data" / "runs" / "mine", tmp_path / "data" / ".runs"):  # even hidden: strict
        with pytest.raises(DataError, match="inside the data folder"):
            check_outside_the_data(out, [None, tmp_path / "data"])
    # A class folder linked from elsewhere: a run written there (through the link or not) lands among its files.
    (tmp_path / "elsewhere" / "click").mkdir(parents=True)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "click").symlink_to(tmp_path / "elsewhere" / "click", target_is_directory=True)
    check_outside_the_data(tmp_path / "elsewhere" / "run", [tmp_path / "linked"])  # beside the class folder: fine
    for out in (tmp_path / "elsewhere" / "click" / "run", tmp_path / "linked" / "click" / "run"):
        with pytest.raises(DataError, match=f"^{re.escape(str(out))}: inside the data folder {re.escape(str(tmp_path / 'linked'))}, "):
            check_outside_the_data(out, [tmp_path / "linked"])
    # Deeper in, as the data search follows links at any depth; a link loop ends.
    (tmp_path / "takes").mkdir()
    (tmp_path / "data" / "hiss").mkdir(parents=True)
    (tmp_path / "data" / "hiss" / "more").symlink_to(tmp_path / "takes", target_is_directory=True)
    (tmp_path / "takes" / "again").symlink_to(tmp_path / "data" / "hiss", target_is_directory=True)
    check_outside_the_data(tmp_path / "run", [tmp_path / "data"])
    with pytest.raises(DataError, match="inside the data folder"):
        check_outside_the_data(tmp_path / "takes" / "run", [tmp_path / "data"])


def test_audio_and_images_mixed(tmp_path):
    _touch(tmp_path / "a" / "one.wav")
    _touch(tmp_path / "b" / "two.png")
    with pytest.raises(DataError, match=rf"^{tmp_path}: mixes audio and image files \(1 audio, e.g. {tmp_path / 'a' / 'one.wav'}; "
                                        rf"1 image, e.g. {tmp_path / 'b' / 'two.png'}\); use one kind per dataset$"):
        find_class_folders(tmp_path)


def test_a_cover_picture_among_recordings_is_left_out(tmp_path, caplog):
    # Album art in a sound folder refused the whole dataset as a mix; nine in ten files of one kind make it that kind.
    for name in ("a", "b"):
        for i in range(5):
            _touch(tmp_path / name / f"{i}.wav")
    _touch(tmp_path / "b" / "cover.png")
    files = find_class_folders(tmp_path)
    assert files.kind == "audio" and len(files.samples) == 10 and not any(p.suffix == ".png" for p, _ in files.samples)
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path}: 1 image file left out (10 audio files make it an audio dataset)"]
    for i in range(5, 7):  # 3 pictures in 13 files: a mix, refused
        _touch(tmp_path / "a" / f"{i}.png")
    with pytest.raises(DataError, match="mixes audio and image files"):
        find_class_folders(tmp_path)
    # A class of pictures among many classes of recordings is a mix too, however few its files.
    for i in range(5, 7):
        (tmp_path / "a" / f"{i}.png").unlink()
    for name in "cdefghijklmnopqrstu":
        for i in range(5):
            _touch(tmp_path / name / f"{i}.wav")
    for i in range(3):
        _touch(tmp_path / "v" / f"{i}.png")
    with pytest.raises(DataError, match="mixes audio and image files"):
        find_class_folders(tmp_path)


def test_file_kind():
    assert file_kind("x/y.WAV") == "audio"
    assert file_kind("y.jpeg") == "image"
    assert file_kind("y.txt") is None and file_kind("noext") is None


# --- manifests -------------------------------------------------------------------


def _manifest(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_read_manifest_relative_paths_and_folds(tmp_path):
    csv_path = _manifest(
        tmp_path / "meta" / "list.csv",
        "path,label,fold\nclips/1.wav,dog,1\nclips/2.wav,cat,2\n/abs/3.wav,dog,2\nclips/4.wav,cat,1\n",
    )
    data = read_manifest(csv_path)
    assert data.classes == ["cat", "dog"]
    assert data.paths == [
        tmp_path / "meta" / "clips" / "1.wav",
        tmp_path / "meta" / "clips" / "2.wav",
        Path("/abs/3.wav"),
        tmp_path / "meta" / "clips" / "4.wav",
    ]
    assert data.targets == [1, 0, 1, 0]
    assert data.folds == [1, 2, 2, 1]
    assert data.kind == "audio"


def test_read_manifest_without_fold_column(tmp_path):
    data = read_manifest(_manifest(tmp_path / "m.csv", "label,path\na,x.png\nb,y.png\n"))
    assert data.folds is None and data.kind == "image" and data.targets == [0, 1]


def test_read_manifest_refuses_a_file_listed_twice(tmp_path):
    csv_path = _manifest(tmp_path / "m.csv", "path,label,fold\nx.wav,a,1\ny.wav,b,1\nsub/../x.wav,a,2\n")
    with pytest.raises(DataError) as err:
        read_manifest(csv_path)
    assert str(err.value) == f"{csv_path}:4: sub/../x.wav is listed again (first on line 2)"


def test_read_manifest_bad_fold(tmp_path):
    csv_path = _manifest(tmp_path / "m.csv", "path,label,fold\nx.wav,a,1\ny.wav,b,two\n")
    with pytest.raises(DataError) as err:
        read_manifest(csv_path)
    assert "m.csv:3" in str(err.value) and "'two' is not an integer" in str(err.value)
    for rows in ("x.wav,a,1\ny.wav,b\n", "x.wav,a,1\ny.wav,b,\n"):  # a short row, an empty field
        with pytest.raises(DataError) as err:
            read_manifest(_manifest(tmp_path / "m.csv", "path,label,fold\n" + rows))
        assert str(err.value) == f"{tmp_path / 'm.csv'}:3: missing fold (the header has a fold column)"


def test_read_manifest_other_errors(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="only one class"):
        read_manifest(_manifest(tmp_path / "one.csv", "path,label\nx.wav,a\ny.wav,a\n"))
    with pytest.raises(DataError, match=r"empty\.csv:3: empty path or label"):
        read_manifest(_manifest(tmp_path / "empty.csv", "path,label\nx.wav,a\n,b\n"))
    with pytest.raises(DataError, match="mixes audio and image"):
        read_manifest(_manifest(tmp_path / "mixed.csv", "path,label\nx.wav,a\ny.png,b\n"))


def test_read_manifest_refuses_a_file_of_neither_kind_naming_its_line(tmp_path):
    # Class folders skip such files; a manifest names each file it means, so one is a mistake.
    with pytest.raises(DataError, match=r"notes\.csv:3: b\.txt is neither an audio nor an image file \(audio: .*\.wav.*; images: .*\.png"):
        read_manifest(_manifest(tmp_path / "notes.csv", "path,label\na.wav,dog\nb.txt,cat\nc.wav,cat\n"))


def test_read_manifest_ignores_spaces_around_fields(tmp_path):
    # Written by hand: "a.wav, dog" used to give a class " dog" beside "dog".
    csv_path = _manifest(tmp_path / "hand.csv", "path, label, fold\na.wav, dog, 1\nb.wav,dog ,2\n c.wav ,cat,1\n")
    data = read_manifest(csv_path)
    assert data.classes == ["cat", "dog"] and data.targets == [1, 1, 0] and data.folds == [1, 2, 1]
    assert data.paths == [tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "c.wav"]


def test_read_manifest_names_the_line_of_a_short_row(tmp_path):
    # A row without its label column, after a blank line: the error names the file's own line 4.
    with pytest.raises(DataError, match=r"short\.csv:4: empty path or label"):
        read_manifest(_manifest(tmp_path / "short.csv", "path,label\nx.wav,dog\n\nb.wav\ny.wav,cat\n"))


def test_read_manifest_accepts_a_byte_order_mark(tmp_path):
    # Spreadsheet programs write UTF-8 CSVs with a byte-order mark before the header.
    csv_path = tmp_path / "excel.csv"
    csv_path.write_bytes("path,label\nx.wav,dog\ny.wav,cat\n".encode("utf-8-sig"))
    data = read_manifest(csv_path)
    assert data.classes == ["cat", "dog"] and data.paths == [tmp_path / "x.wav", tmp_path / "y.wav"]


# --- splits ----------------------------------------------------------------------


def test_stratified_split_proportions_and_no_overlap():
    targets = [0] * 50 + [1] * 20 + [2] * 10
    train, val = stratified_split(targets, fraction=0.2, seed=0)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == list(range(80))
    val_counts = np.bincount(np.asarray(targets)[val], minlength=3)
    np.testing.assert_array_equal(val_counts, [10, 4, 2])
    assert train == sorted(train) and val == sorted(val)


def test_stratified_split_at_least_one_val_per_class():
    targets = [0] * 10 + [1] * 2 + [2] * 1
    train, val = stratified_split(targets, fraction=0.05, seed=3)
    val_counts = np.bincount(np.asarray(targets)[val], minlength=3)
    # 0.05 * 10 rounds to 0 but every class with >= 2 files gets one; a singleton stays in train.
    np.testing.assert_array_equal(val_counts, [1, 1, 0])
    assert 12 in train
    # A large fraction still leaves one file of each class for training.
    train, val = stratified_split([0, 0, 1, 1], fraction=0.9, seed=0)
    assert np.bincount(np.asarray([0, 0, 1, 1])[train]).tolist() == [1, 1]


def test_stratified_split_seed_reproducible():
    targets = [i % 4 for i in range(100)]
    assert stratified_split(targets, fraction=0.25, seed=7) == stratified_split(targets, fraction=0.25, seed=7)
    assert stratified_split(targets, fraction=0.25, seed=7) != stratified_split(targets, fraction=0.25, seed=8)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_stratified_split_bad_fraction(fraction):
    with pytest.raises(ParameterError, match=rf"^val_split={fraction} must be a number in \[0, 1\)$"):
        stratified_split([0, 1], fraction=fraction, seed=0)


def _with_folds() -> LabelledFiles:
    samples = [(Path(f"{i}.wav"), i % 2) for i in range(6)]
    return LabelledFiles(classes=["a", "b"], samples=samples, kind="audio", folds=[1, 2, 3, 1, 2, 3])


def test_split_by_fold():
    train, held = split_by_fold(_with_folds(), 2, "m.csv")
    assert [p.name for p in held.paths] == ["1.wav", "4.wav"]
    assert held.folds == [2, 2] and held.targets == [1, 0]
    assert [p.name for p in train.paths] == ["0.wav", "2.wav", "3.wav", "5.wav"]
    assert train.folds == [1, 3, 1, 3]
    assert train.classes == held.classes == ["a", "b"]


def test_split_by_fold_errors():
    with pytest.raises(DataError, match=r"^m.csv: fold 4 is not in the manifest \(folds: 1, 2, 3\)$"):
        split_by_fold(_with_folds(), 4, "m.csv")
    no_folds = LabelledFiles(classes=["a", "b"], samples=[(Path("x.wav"), 0)], kind="audio")
    with pytest.raises(DataError, match="^data: fold 1: the data has no folds"):
        split_by_fold(no_folds, 1, Path("data"))


# --- decoding --------------------------------------------------------------------


def test_decode_all_returns_failures_instead_of_raising(tmp_path):
    good = make_tone(tmp_path / "good.wav", 440.0, 0.05, 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00junk that is not a wave file")
    missing = tmp_path / "missing.wav"
    also_good = make_tone(tmp_path / "also.wav", 880.0, 0.1, 8000)
    paths = [good, bad, missing, also_good]

    items, failures = decode_all(paths, lambda p: load_audio(p)[0], num_workers=2)
    assert len(items) == 4
    assert items[0].shape == (400,) and items[3].shape == (800,)
    assert items[1] is None and items[2] is None
    assert [p for p, _ in failures] == [str(bad), str(missing)]
    assert all(reason for _, reason in failures)


def test_decode_all_keeps_order_and_lets_bugs_through():
    items, failures = decode_all([Path(str(i)) for i in range(20)], lambda p: int(p.name) * 2, num_workers=3)
    assert items == [i * 2 for i in range(20)] and failures == []

    def broken(path: Path) -> int:
        if path.name == "1":
            raise AudioError("1: broken")
        raise ZeroDivisionError  # a programming error is not a bad file

    with pytest.raises(ZeroDivisionError):
        decode_all([Path("1"), Path("2")], broken, num_workers=1)
    items, failures = decode_all([Path("1")], broken, num_workers=1)
    assert items == [None] and failures == [("1", "1: broken")]


def test_files_outside_the_class_folders_are_named_and_left_out(tmp_path, caplog):
    _touch(tmp_path / "a" / "one.wav")
    _touch(tmp_path / "b" / "two.wav")
    _touch(tmp_path / "stray.wav")
    _touch(tmp_path / "notes.txt")  # not audio: not mentioned
    with caplog.at_level(logging.WARNING, logger="specnet"):
        files = find_class_folders(tmp_path)
    assert [p.name for p in files.paths] == ["one.wav", "two.wav"]
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path}: 1 file outside the class folders, not used (stray.wav)"]


def test_a_manifest_row_with_more_fields_than_its_header_is_refused(tmp_path):
    _touch(tmp_path / "a,b.wav")
    (tmp_path / "m.csv").write_text("path,label\na,b.wav,dog\n")
    with pytest.raises(DataError, match=r"m.csv:2: 3 fields, and the header names 2; put a path or label with a comma in double quotes$"):
        read_manifest(tmp_path / "m.csv", min_classes=1)


def test_a_manifest_without_its_columns_or_rows_says_which(tmp_path):
    manifest = tmp_path / "m.csv"
    for text, says in (("", "manifest is empty; it needs a header line path,label[,fold] and a row per file"),
                       ("file,class\na.wav,dog\n", "the manifest's header names file,class; it needs columns path,label[,fold] "
                                                   "(no path or label column)"),
                       ("path,class\na.wav,dog\n", "the manifest's header names path,class; it needs columns path,label[,fold] "
                                                   "(no label column)"),
                       ("path,label,fold\n", "the manifest lists no files, only its header"),
                       ("\npath,label\na.wav,dog\n", "the manifest's first line is blank; it must be the header path,label[,fold]"),
                       ("  ,\na.wav,dog\n", "the manifest's first line is blank; it must be the header path,label[,fold]"),
                       ('"pa\nth",label\na.wav,dog\n', "the manifest's header names pa\\nth,label; it needs columns "
                                                        "path,label[,fold] (no path column)")):
        manifest.write_text(text)
        with pytest.raises(DataError) as err:
            read_manifest(manifest)
        assert str(err.value) == f"{manifest}: {says}"
