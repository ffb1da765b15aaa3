"""Tests for specnet/paths.py: how file names are shown, and how folders are walked."""

from __future__ import annotations

import os
from pathlib import Path

from specnet.paths import display_name, text_name, walk_files


def test_display_name_escapes_only_what_breaks_a_line_or_a_terminal():
    assert display_name("two\nlines\r.wav") == "two\\nlines\\r.wav"
    assert display_name("\x1b[31mred.wav") == "\\x1b[31mred.wav"
    assert display_name("a\u2028b.wav") == "a\\u2028b.wav"  # a Unicode line separator
    # Valid names stay as they are, so JSON and npz paths still open the file.
    for name in ("caf\u00e9.wav", "a\u00a0b.wav", "\u4f60\u597d\u3000.wav", "\U0001f469\u200d\U0001f52c.wav"):
        assert display_name(name) == name
    assert display_name(os.fsdecode(b"caf\xe9.wav")) == "caf\\xe9.wav"  # not UTF-8: the byte shown
    assert display_name(b"caf\xe9.wav") == "caf\\xe9.wav"


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


def test_text_name_keeps_every_character_but_bytes_that_are_not_utf8():
    assert text_name("two\nlines\t.wav") == "two\nlines\t.wav"
    assert text_name(b"caf\xe9.wav") == text_name(os.fsdecode(b"caf\xe9.wav")) == "caf\\xe9.wav"
    assert text_name(Path("d") / "é.wav") == "d/é.wav"
