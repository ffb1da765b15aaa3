"""Tests for specnet/paths.py: how file names are shown, how folders are walked, how files are opened."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from helpers import make_unreadable

from specnet.errors import AudioError
from specnet.paths import (columns, display_name, glob_paths, one_line, open_for_reading, padded, path_of_text, text_name,
                           unreadable_folder, walk_files)


def test_display_name_escapes_only_what_breaks_a_line_or_a_terminal():
    assert display_name("two\nlines\r.wav") == "two\\nlines\\r.wav"
    assert display_name("\x1b[31mred.wav") == "\\x1b[31mred.wav"
    assert display_name("a\u2028b.wav") == "a\\u2028b.wav"  # a Unicode line separator
    # Valid names stay as they are, so JSON and npz paths still open the file.
    for name in ("caf\u00e9.wav", "a\u00a0b.wav", "\u4f60\u597d\u3000.wav", "\U0001f469\u200d\U0001f52c.wav"):
        assert display_name(name) == name
    assert display_name(os.fsdecode(b"caf\xe9.wav")) == "caf\\xe9.wav"  # not UTF-8: the byte shown
    assert display_name(b"caf\xe9.wav") == "caf\\xe9.wav"


def test_one_line_shows_a_name_in_a_message_as_display_name_does():
    name = os.fsdecode(b"/data/donn\xe9es")  # as sys.argv holds it
    assert one_line(f"{name}: folder not found") == f"{display_name(name)}: folder not found" == "/data/donn\\xe9es: folder not found"
    assert one_line("a\ud800b") == "a\\ud800b"  # a lone surrogate no byte stands for


def test_walk_files_order_hidden_links_and_loops(tmp_path):
    root = tmp_path / "root"
    for rel in ("take/1.wav", "take-2/1.wav", "take.4/1.wav", "b.wav", ".hidden.wav", ".git/x.wav", "sub/.cache/y.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.wav").write_bytes(b"x")
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken.wav").symlink_to(tmp_path / "gone.wav")
    found = [os.path.relpath(f, root) for f in walk_files(root)]
    # Path order, component by component ("take" before "take-2"), as sorted(Path) gives;
    # the link to a folder followed, the loop walked once, the broken link listed so it is reported.
    assert found == ["b.wav", "broken.wav", "linked/o.wav", "take/1.wav", "take-2/1.wav", "take.4/1.wav"]


class _Listing:
    """``os.scandir``'s iterator with its entries sorted by name (reversed if asked)."""

    def __init__(self, entries, reverse):
        self.entries = iter(sorted(entries, key=lambda e: e.name, reverse=reverse))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.entries)


@pytest.mark.parametrize("reverse", [False, True])
def test_a_folder_a_link_also_reaches_is_named_without_the_link_in_any_listing_order(tmp_path, monkeypatch, reverse):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "1.wav").write_bytes(b"x")
    (tree / "b").mkdir()
    (tree / "b" / "link").symlink_to("../a", target_is_directory=True)
    scandir = os.scandir

    def listed(path="."):
        with scandir(path) as entries:
            return _Listing(list(entries), reverse)

    monkeypatch.setattr(os, "scandir", listed)  # as the file system lists folders: b before a, or after
    assert walk_files(tree) == [str(tree / "a" / "1.wav")]
    assert glob_paths(str(tree / "**" / "*.wav")) == [str(tree / "a" / "1.wav")]
    assert walk_files(tree / "b") == [str(tree / "b" / "link" / "1.wav")]  # from b, only the link reaches it


def test_glob_paths_follows_each_real_folder_once_and_otherwise_matches_as_glob(tmp_path, monkeypatch):
    root = tmp_path / "root"
    for rel in ("a.wav", "x/a.wav", "x/y/a.wav", "x/y/b.flac", ".git/a.wav", "x/.cache/a.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "x" / "loop").symlink_to(root, target_is_directory=True)  # glob: root/x/loop/x/loop/... 40 deep
    (root / "x" / "again").symlink_to(root / "x", target_is_directory=True)  # two loops: glob's paths double per level

    def found(pattern):
        return [os.path.relpath(f, root) for f in glob_paths(str(root / pattern))]

    assert found("**/a.wav") == ["a.wav", "x/a.wav", "x/y/a.wav"]  # each real folder once, hidden ones left out
    assert found("x/**/*.flac") == ["x/y/b.flac"]
    assert found("*/**/a.wav") == ["x/a.wav", "x/loop/a.wav", "x/y/a.wav"]  # from x, root is a folder of its own
    assert found("**/y/**/b.*") == ["x/y/b.flac"]
    assert found("**") == ["."]  # the folder, which stands for everything under it
    assert found("x/**/**/a.wav") == ["x/a.wav", "x/loop/a.wav", "x/y/a.wav"]  # several "**": each file still once
    assert found("x/*.wav") == ["x/a.wav"] and found("nothing/**/a.wav") == []
    monkeypatch.chdir(root)  # a relative pattern gives relative names, as glob does
    assert glob_paths("**/b.flac") == ["x/y/b.flac"] and glob_paths("**") == ["a.wav", "x"]  # as glob names them


def test_text_name_keeps_every_character_but_bytes_that_are_not_utf8():
    assert text_name("two\nlines\t.wav") == "two\nlines\t.wav"
    assert text_name(b"caf\xe9.wav") == text_name(os.fsdecode(b"caf\xe9.wav")) == "caf\\xe9.wav"
    assert text_name(Path("d") / "é.wav") == "d/é.wav"


def test_path_of_text_opens_what_text_name_named(tmp_path):
    latin = os.fsencode(tmp_path) + b"/caf\xe9"  # not UTF-8
    os.mkdir(latin)
    stored = text_name(latin)
    assert stored.endswith("caf\\xe9") and path_of_text(stored) == os.fsdecode(latin)
    # A name that holds the text "\xe9" itself is that name; one that names nothing stays as it is.
    (tmp_path / "caf\\xe9").mkdir()
    assert path_of_text(stored) == stored
    assert path_of_text(str(tmp_path / "gone\\xe9")) == str(tmp_path / "gone\\xe9")
    assert path_of_text(text_name(tmp_path / "é")) == str(tmp_path / "é")
    # "\x41" beside a byte that is not UTF-8: only the byte was escaped.
    mixed = os.fsencode(tmp_path) + b"/A\\x41-\xff"
    os.mkdir(mixed)
    assert path_of_text(text_name(mixed)) == os.fsdecode(mixed)


def _open_within(path, seconds=10.0):
    """open_for_reading(path) in a thread: the error it raises (None if it opened the file);
    fails if it is still waiting after ``seconds``."""
    outcome = []

    def target():
        try:
            open_for_reading(path, display_name(path), AudioError, "an audio file").close()
            outcome.append(None)
        except AudioError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if os.path.exists(path):  # a writer lets a blocked open() of a named pipe return
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"open_for_reading({path!r}) still waiting after {seconds} s")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_open_for_reading_refuses_a_named_pipe_without_waiting(tmp_path):
    fifo = tmp_path / "take.wav"
    os.mkfifo(fifo)
    assert str(_open_within(fifo)) == f"{fifo}: not a regular file (a named pipe)"
    (tmp_path / "link.wav").symlink_to(fifo)  # by a link too: stat follows it
    assert str(_open_within(tmp_path / "link.wav")) == f"{tmp_path / 'link.wav'}: not a regular file (a named pipe)"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null here")
def test_open_for_reading_refuses_a_device():
    assert str(_open_within("/dev/null")) == "/dev/null: not a regular file (a character device)"


def test_open_for_reading_keeps_its_other_messages(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "broken.wav").symlink_to(tmp_path / "gone.wav")
    assert str(_open_within(tmp_path / "missing.wav")) == f"{tmp_path / 'missing.wav'}: file not found"
    assert str(_open_within(tmp_path / "broken.wav")) == f"{tmp_path / 'broken.wav'}: file not found (broken symbolic link)"
    assert str(_open_within(tmp_path)) == f"{tmp_path}: is a directory, not an audio file"
    assert str(_open_within(tmp_path / "empty.wav")) == f"{tmp_path / 'empty.wav'}: file is empty (0 bytes)"
    (tmp_path / "ok.wav").write_bytes(b"RIFF")
    assert _open_within(tmp_path / "ok.wav") is None


def test_a_folder_that_cannot_be_searched_is_listed_so_that_reading_it_reports_it(tmp_path, monkeypatch):
    for name in ("rec/day1/a.wav", "rec/day2/b.wav", "rec/day2/deeper/c.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    make_unreadable(monkeypatch, tmp_path / "rec" / "day2")
    rec = str(tmp_path / "rec")
    assert walk_files(rec) == [f"{rec}/day1/a.wav", f"{rec}/day2"]
    assert glob_paths(f"{rec}/**/*.wav") == [f"{rec}/day1/a.wav", f"{rec}/day2"]
    assert unreadable_folder(f"{rec}/day2") == "cannot read this folder (Permission denied)"
    assert unreadable_folder(f"{rec}/day1") is None
    # Reached through a link as well, it is named once, by its name without the link.
    (tmp_path / "rec" / "alink").symlink_to("day2", target_is_directory=True)
    assert walk_files(rec) == [f"{rec}/day1/a.wav", f"{rec}/day2"]
    # The current folder itself, for a "**" pattern: named ".", not "".
    monkeypatch.chdir(tmp_path / "rec" / "day2")
    assert glob_paths("**/*.wav") == ["."]


def test_a_folder_that_lists_its_names_but_cannot_be_searched_lists_them_so_reading_reports_it(tmp_path, monkeypatch):
    # Read permission without execute: the names are listed, but nothing under them can be looked at.
    (tmp_path / "noexec").mkdir()
    (tmp_path / "noexec" / "c.wav").write_bytes(b"")
    monkeypatch.setattr(os.path, "lexists", lambda p: os.path.dirname(os.fsdecode(p)) != str(tmp_path / "noexec"))
    monkeypatch.setattr(os.path, "isfile", lambda p: False)
    assert walk_files(tmp_path) == [str(tmp_path / "noexec" / "c.wav")]


def test_tables_pad_names_to_the_columns_a_terminal_gives_them():
    # Chinese, Japanese and Korean characters fill two columns, a combining accent none.
    assert [columns(t) for t in ("dog", "日本語", "e\u0301t\u00e9", "😀", "")] == [3, 6, 3, 2, 0]
    # A Hangul syllable decomposed as macOS names files, a thumb with a skin tone, a soft hyphen.
    assert [columns(t) for t in ("\u1112\u1161\u11ab", "\U0001f44d\U0001f3fd", "a\u00adb")] == [2, 2, 3]
    rows = [padded(name, 8) + "|" for name in ("dog", "日本語", "e\u0301t\u00e9")]
    assert rows == ["dog     |", "日本語  |", "e\u0301t\u00e9     |"]
    assert padded("longer than", 4) == "longer than"
