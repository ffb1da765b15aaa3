"""File names as users give them: str, bytes or os.PathLike, UTF-8 or not."""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Union

from .errors import ParameterError, SpecnetError

PathLike = Union[str, bytes, os.PathLike]

# Unicode categories display_name escapes: control characters, line and paragraph separators,
# surrogates (which no UTF-8 text holds).
_ESCAPED = frozenset({"Cc", "Zl", "Zp", "Cs"})


def display_name(path: PathLike) -> str:
    """``path`` as one line of text: bytes that are not UTF-8 show as ``\\xNN``, control
    characters and line breaks (a newline, a terminal escape) as ``\\n``, ``\\x1b``; every
    other character, a no-break space or an emoji, as it is."""
    return one_line(text_name(path))


def one_line(text: str) -> str:
    """``text`` with control characters and line breaks escaped (``\\n``, ``\\x1b``), as
    :func:`display_name` shows a name: for a message built from names and other user text.
    A name given as ``str`` holds a byte that is not UTF-8 as a lone surrogate (as ``sys.argv``
    does); it shows as ``\\xNN`` here too, as in :func:`text_name`."""
    if text.isprintable():  # no character of a category in _ESCAPED (the common case: 20x faster)
        return text
    return "".join(_shown(c) for c in text)


def _shown(char: str) -> str:
    """One character of :func:`one_line`'s text."""
    if "\udc80" <= char <= "\udcff":  # surrogateescape's stand-in for the byte 0x80-0xff
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1] if unicodedata.category(char) in _ESCAPED else char


def columns(text: str) -> int:
    """Terminal columns ``text`` fills: two for a wide character (Chinese, Japanese, Korean, most
    emoji), none for a combining mark, a format character (but a soft hyphen), a skin-tone modifier
    or the vowel and final consonant jamo of a decomposed Hangul syllable, one for any other (as
    terminals count, character by character: an emoji sequence joined by U+200D counts each part)."""
    if text.isascii():
        return len(text)
    return sum(_columns_of(c) for c in text)


def _columns_of(char: str) -> int:
    """The terminal columns of one character, as :func:`columns` counts them (0, 1 or 2)."""
    if (unicodedata.category(char) in ("Mn", "Me", "Cf") and char != "\u00ad") or "\u1160" <= char <= "\u11ff" \
            or "\ud7b0" <= char <= "\ud7ff" or "\U0001f3fb" <= char <= "\U0001f3ff":
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def padded(text: str, width: int) -> str:
    """``text`` and the spaces that make it fill ``width`` terminal columns (see :func:`columns`)."""
    return text + " " * max(0, width - columns(text))


def text_name(path: PathLike) -> str:
    """``path`` as text for data (JSON, CSV, npz): every character as it is, a newline
    too, so the name survives; only bytes that are not UTF-8, which no text holds, show
    as ``\\xNN`` (as :func:`display_name` shows them)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def path_of_text(text: str) -> str:
    """The path :func:`text_name` gave ``text`` for, so a name stored as text opens again:
    ``text`` itself when it names something, else with each ``\\xNN`` back as the byte it
    stood for when that names something (a folder whose name is not UTF-8), else ``text``."""
    if os.path.lexists(text):
        return text
    # backslashreplace writes only bytes 0x80-0xff so; "\\x41" in a name is its own text.
    raw = re.sub(rb"\\x([89a-f][0-9a-f])", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8", "surrogateescape"))
    return os.fsdecode(raw) if os.path.lexists(raw) else text


def naming(path: PathLike, reason: str) -> str:
    """``reason`` as one line that names ``path``: as it is when it starts with the name
    already (the decoders' messages do), else ``name: reason``."""
    shown = display_name(path)
    return reason if reason.startswith(shown) else f"{shown}: {reason}"


def unnamed(path: PathLike, reason: str) -> str:
    """``reason`` without ``path``'s name in front, for data that gives the name beside it."""
    return reason.removeprefix(f"{display_name(path)}: ")


def unreadable_folder(path: PathLike) -> str | None:
    """Why the folder ``path`` cannot be searched (``"cannot read this folder (Permission
    denied)"``), or None when it can."""
    try:
        os.scandir(path).close()
    except OSError as exc:
        return f"cannot read this folder ({exc.strerror or exc})"
    return None


def _real_folders(folder: str, unreadable: list[str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """``(folder, its file names)`` for ``folder`` and every folder under it, following symbolic
    links to folders but visiting each real folder once (so a link loop ends), hidden folders
    (``.git``, ``.ipynb_checkpoints``) and everything under them left out. A folder that can be
    reached without a link is named that way, whichever way the walk reaches it first. Folders
    that cannot be searched (no permission) are appended to ``unreadable``."""
    linkless: dict[str, str] = {}  # real folder -> its name under ``folder`` through no link
    refused: dict[str, str] = {}  # the same for folders that cannot be searched, each named once

    def refuse(exc: OSError) -> None:
        refused.setdefault(os.path.realpath(exc.filename), exc.filename)

    for parent, folders, _ in os.walk(folder, onerror=refuse):
        folders[:] = [d for d in folders if not d.startswith(".")]
        linkless.setdefault(os.path.realpath(parent), parent)
    seen: set[str] = set()
    for parent, folders, names in os.walk(folder, followlinks=True, onerror=refuse):
        real = os.path.realpath(parent)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [d for d in folders if not d.startswith(".")]
        yield linkless.get(real, parent), names
    if unreadable is not None:
        unreadable.extend(refused.values())


def real_folders(folder: PathLike) -> set[str]:
    """The real path of ``folder`` and of every folder the search of :func:`walk_files` reaches
    under it (through links too: a class folder that lies elsewhere)."""
    return {os.path.realpath(folder)} | {os.path.realpath(parent) for parent, _ in _real_folders(os.fsdecode(folder))}


def walk_files(folder: PathLike) -> list[str]:
    """Every file under ``folder``, in path order, following symbolic links to folders (each
    real folder once, so a link loop ends). A broken link and a folder that cannot be searched
    (:func:`unreadable_folder`) are listed too, so that reading them reports them. Hidden files
    and everything under a hidden folder (``.git``, ``.ipynb_checkpoints``) are left out."""
    files: list[str] = []
    for parent, names in _real_folders(os.fsdecode(folder), files):
        for name in names:
            path = os.path.join(parent, name)
            # Not even there by lstat: a folder that lists its names but cannot be searched
            # (read without execute permission); listed, so that reading it reports that.
            if not name.startswith(".") and (os.path.isfile(path) or os.path.islink(path) or not os.path.lexists(path)):
                files.append(path)
    return sorted(files, key=Path)  # component by component: "take/1.wav" before "take-2/1.wav"


def glob_paths(pattern: str) -> list[str]:
    """What ``glob.glob(pattern, recursive=True)`` matches, sorted, except that ``**`` goes
    through the folders as :func:`walk_files` does: symbolic links to folders followed, each
    real folder once (glob would list a link loop's files at every depth it can reach).
    ``dir/**`` gives ``dir`` itself, which stands for everything under it (a bare ``**`` what
    ``*`` gives), and a file reached twice (through several ``**``) is given once."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return sorted(glob.glob(pattern))
    at = parts.index("**")
    head = os.sep.join(parts[:at]) or (os.sep if pattern.startswith(os.sep) else "")
    tail = os.sep.join(parts[at + 1 :])
    found: list[str] = []
    for top in sorted(glob.glob(head)) if glob.has_magic(head) else [head]:
        if not os.path.isdir(top or os.curdir):
            continue
        if not tail:
            found.extend([top] if top else glob.glob("*"))  # "**" names "a.wav", as glob does, not "./a.wav"
            continue
        unreadable: list[str] = []  # listed: a place the pattern could match but cannot be searched
        for folder, _ in _real_folders(top or os.curdir, unreadable):
            under = folder if top else folder[len(os.curdir) + 1 :]  # "**/x" names "a/x", as glob does, not "./a/x"
            found.extend(glob_paths(os.path.join(glob.escape(under), tail)))
        found.extend(folder if top or folder == os.curdir else folder[len(os.curdir) + 1 :] for folder in unreadable)
    # Several "**" reach a file more than once: keep its shortest spelling.
    return sorted(unique_files(sorted(found, key=lambda p: (p.count(os.sep), p))))


def unique_files(paths: Iterable[str]) -> list[str]:
    """``paths`` in order without a second name for a file: two names in the same real folder
    (``a/./x.wav`` and ``a/x.wav``, ``link/x.wav`` and ``real/x.wav``) are one file, and the
    first is kept."""
    once: dict[tuple[str, str], str] = {}
    for path in paths:
        once.setdefault((os.path.realpath(os.path.dirname(path) or os.curdir), os.path.basename(path)), path)
    return list(once.values())


def open_for_reading(path: PathLike, name: str, error: type[SpecnetError], what: str) -> BinaryIO:
    """Open ``path`` for reading, turning OS errors into ``error`` naming the file.

    Opening it ourselves (rather than handing the name to a decoder) gives
    precise messages and works for any name the OS accepts, UTF-8 or not.
    A named pipe, socket or device is refused before opening, where open() could
    wait forever for a writer.
    """
    refuse_special_file(path, name, error)
    try:
        fh = open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        # A pattern that find_inputs kept because no file matched it is a missing name here too.
        why = (" (broken symbolic link)" if os.path.islink(path) else
               " (and no file matches it as a glob pattern)" if glob.has_magic(os.fsdecode(path)) else "")
        raise error(f"{name}: file not found{why}") from None
    except IsADirectoryError:
        raise error(f"{name}: is a directory, not {what}") from None
    except PermissionError:
        raise error(f"{name}: permission denied") from None
    except OSError as exc:
        raise error(f"{name}: cannot open ({exc.strerror or exc})") from None
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise error(f"{name}: file is empty (0 bytes)")
    return fh


def refuse_special_file(path: PathLike, name: str, error: type[SpecnetError]) -> None:
    """Raise ``error`` if ``path`` is a named pipe, socket or device, which open() could wait on
    forever; a regular file, a folder or a name that cannot be stat'ed (open() says why) pass."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise error(f"{name}: not a regular file ({_special_kind(mode)})")


def _special_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, from its ``st_mode``."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def find_inputs(patterns: PathLike | Iterable[PathLike], *, kind: str = "audio") -> list[str]:
    """Files from paths, folders (searched recursively for ``kind`` files, "audio" or "image")
    and glob patterns (``"data/**/*.wav"``), in order, as ``specnet classify`` finds them.

    A folder and a pattern both give their ``kind`` files: files of the other kind are left out
    with one warning, other files silently. Names, patterns and folders that give no file are
    kept, so that ``Model.predict_iter`` on the list reports each as a failed input (``predict``
    raises the first).
    """
    if isinstance(patterns, (str, bytes, os.PathLike)):
        patterns = [patterns]
    if kind not in ("audio", "image"):
        raise ParameterError(f"kind={kind!r} must be 'audio' or 'image'")
    patterns = list(patterns) if isinstance(patterns, Iterable) else [None]
    if not all(isinstance(p, (str, bytes, os.PathLike)) for p in patterns):
        raise ParameterError("find_inputs() takes a path, folder or glob pattern, or a list of them")
    from .audio import is_audio_file
    from .image import is_image_file

    wanted, other = (is_audio_file, is_image_file) if kind == "audio" else (is_image_file, is_audio_file)

    def of_kind(files: list[str], source: str) -> list[str]:
        left_out = sum(map(other, files))
        if left_out:  # said once, not one line per file
            from .data import left_out_note

            logging.getLogger("specnet").warning("%s", left_out_note(source, left_out, kind))
        return [f for f in files if wanted(f) or os.path.isdir(f)]  # a folder here: one that cannot be searched

    found: list[str] = []
    for pattern in map(os.fsdecode, patterns):
        if os.path.isdir(pattern):
            found.extend(of_kind(walk_files(pattern), pattern) or [pattern])
        elif not os.path.lexists(pattern) and glob.has_magic(pattern):
            # A matched folder is searched like a folder argument; a file reached twice ("**/*"
            # matches sub and sub/a.wav, and the walk of sub gives sub/a.wav again) is listed once.
            matches = unique_files(f for m in glob_paths(pattern) for f in (walk_files(m) if os.path.isdir(m) else [m]))
            found.extend(of_kind(matches, pattern) or [pattern])
        else:
            found.append(pattern)
    return found
