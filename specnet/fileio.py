"""Files handled safely: atomic replace, no silent overwrite, run-folder locks, torch files loaded without unpickling code."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from .errors import ModelFileError, ParameterError, SpecnetError
from .paths import display_name


def output_path(path: str | bytes | os.PathLike) -> Path:
    """An output file's name as a Path; bytes (a name that is not UTF-8) are decoded as
    ``os.fsdecode`` does. An empty name or anything else (None, a number) is a ParameterError."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ParameterError(f"an output file name must be a str, bytes or os.PathLike, got {type(path).__name__}")
    name = os.fsdecode(path)
    if not name:  # Path("") would be the current folder
        raise ParameterError("empty output file name")
    return Path(name)


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)`` as every JSON reader takes it: each NaN or infinite float
    written as null, as a score with no value is. json.dumps writes them as bare NaN and Infinity,
    which are not JSON: only Python reads them back."""
    return json.dumps(_finite_or_null(value), allow_nan=False, **options)


def _finite_or_null(value: Any) -> Any:
    """``value`` with each NaN or infinite float in its dicts, lists and tuples as None."""
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def atomic_write(path: str | bytes | os.PathLike, data: bytes | str, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader (or a crash) sees the old file or the new one, never half of one.
    With ``overwrite=False`` an existing file is an error, even one that appears while
    the data is written.
    """
    path = output_path(path)
    if not overwrite and os.path.lexists(path):  # fail before the work; _publish checks again
        raise _exists_error(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SpecnetError(f"{display_name(path)}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # owns fd from here: closed whatever fails
            with contextlib.suppress(OSError):  # a file system without modes (FAT, some shares) refuses it
                os.fchmod(handle.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; a user's file gets the usual mode
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path, overwrite=overwrite)
    except OSError as exc:
        _remove_quietly(tmp)
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise SpecnetError(
            f"{display_name(path)}: cannot write ({reason}); earlier contents are unchanged"
        ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


# Errors of os.link that mean the file system has no hard links (FAT, some network and FUSE
# mounts), rather than that the name is taken.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


def _publish(tmp: str, path: Path, *, overwrite: bool) -> None:
    """Give the finished temporary file ``tmp`` the name ``path``, in one step.

    With ``overwrite`` a rename replaces any file there. Without it a hard link, which
    the OS refuses if the name exists (even if it appeared a moment ago): then a
    SpecnetError, ``path`` untouched and ``tmp`` left to the caller. Where the file system
    has no hard links, an exclusive create and a copy: the name is still never taken from
    another writer, though a reader may see the file before its last byte.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _copy_to_new_file(tmp, path)
    _remove_quietly(tmp)  # the data is published under path; only the extra name goes


def _copy_to_new_file(tmp: str, path: Path) -> None:
    """Copy ``tmp`` to ``path``, which must not exist (O_EXCL: the OS refuses a name taken even
    a moment ago); a copy cut short is removed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except FileExistsError:
        raise _exists_error(path) from None
    try:
        with open(tmp, "rb") as source, os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target)
            target.flush()
            os.fsync(target.fileno())
    except BaseException:
        _remove_quietly(str(path))
        raise


def _exists_error(path: Path) -> SpecnetError:
    """The error for an output that exists when ``overwrite`` was not given."""
    return SpecnetError(f"{display_name(path)}: already exists; pass overwrite=True to replace it")


def _process_umask() -> int:
    """The process's file-creation mask (reading it means setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import, before any decoding thread runs: a file another thread created
# while the mask was 0 would get mode 0666.
_UMASK = _process_umask()


def check_output_path(path: str | bytes | os.PathLike, *, overwrite: bool, suffix: str | None = None, holds: str = "") -> Path:
    """Refuse, before any work, an output that cannot be written: an existing file unless
    ``overwrite``, a folder, a name under a file or in a folder this process may not write in
    (read-only, or another user's), or a name without ``suffix`` (the format ``holds`` names is
    written there); return it as a Path. Missing folders are fine (:func:`atomic_write` makes them)."""
    path = output_path(path)
    if suffix and path.suffix.lower() != suffix:
        raise ParameterError(f"{display_name(path)}: {holds} are written as {suffix} files: name the output *{suffix}")
    if os.path.isdir(path):
        raise ParameterError(f"{display_name(path)}: is a directory; give a file name")
    for folder in path.parents:  # the nearest one that exists must be a folder
        if os.path.lexists(folder):
            if not os.path.isdir(folder):
                raise SpecnetError(f"{display_name(path)}: cannot write here ({display_name(folder)} is not a folder)")
            # As this process writes: its effective ids (a setuid program's, say); a read-only file system too.
            if not os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
                raise SpecnetError(f"{display_name(path)}: cannot write here ({display_name(folder)} is not writable)")
            break
    if os.path.lexists(path) and not overwrite:
        raise _exists_error(path)
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# Lock files this process holds, so that one naming this process's pid but not held by it
# (left by a killed run whose pid was reused, as in containers where every run is pid 1) is stale.
_HELD_HERE: set[Path] = set()


class RunLock:
    """An exclusive lock file in a run folder, naming the process that holds it.

    A lock left by a process that no longer exists is stale and taken over.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / ".lock"
        self._key = self.path.absolute()  # the same lock whatever the working directory
        self._held = False

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecnetError(f"{self.path.parent}: cannot create the run folder ({exc.strerror or exc})") from None
        for _ in range(2):
            if not self._create():
                owner, host, text = self._owner()
                if host is not None and host != socket.gethostname():  # its pid means nothing here
                    raise SpecnetError(
                        f"{self.path.parent}: locked by specnet process {owner} on host {host}; "
                        f"if that run has ended, delete {self.path}"
                    ) from None
                if owner == os.getpid() and self._key not in _HELD_HERE:
                    owner = None  # this pid on this host, but not this process's lock: a reused pid
                if owner is not None and _process_alive(owner):
                    raise SpecnetError(
                        f"{self.path.parent}: another specnet process (pid {owner}) is using this run folder"
                    ) from None
                self._remove_stale(text)  # its process is gone
                continue
            self._held = True
            _HELD_HERE.add(self._key)
            return
        raise SpecnetError(f"{self.path.parent}: cannot lock the run folder")

    def release(self) -> None:
        if self._held:
            _HELD_HERE.discard(self._key)
            _remove_quietly(str(self.path))
            self._held = False

    def _create(self) -> bool:
        """Create the lock file naming this process, in one step: a reader never finds it
        empty (and takes it for a stale one). False if it exists."""
        text = f"{os.getpid()}\n{socket.gethostname()}\n"
        try:
            atomic_write(self.path, text, overwrite=False)
        except SpecnetError as exc:
            if os.path.lexists(self.path):
                return False
            raise SpecnetError(f"{self.path.parent}: cannot lock the run folder ({exc})") from None
        return True

    def _owner(self) -> tuple[int | None, str | None, str | None]:
        """The pid and host the lock file names (host None: a lock written without one), and
        its text (None: no file to read)."""
        try:
            text = self.path.read_text()
        except OSError:
            return None, None, None
        try:
            pid, *host = text.split()
            return int(pid), (host[0] if host else None), text
        except ValueError:
            return None, None, text

    def _remove_stale(self, stale_text: str | None) -> None:
        """Remove the stale lock that read ``stale_text``, and only it. Two runs finding the same
        stale lock both come here: the file is moved aside in one step first, and if what was
        moved is a new lock (the other run took over between the read and the move), it is put
        back, so the run holding it keeps it."""
        if not self.path.is_file() and os.path.lexists(self.path):
            raise SpecnetError(f"{self.path}: not a lock file specnet wrote; if no run uses {self.path.parent}, delete it")
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # already taken over: the next try sees the new lock
            return
        try:
            try:
                moved = aside.read_text()
            except OSError:
                moved = None
            if moved != stale_text:
                # A lock made since the read: back it goes. (A third run taking the name in the
                # moment between the move and this is left with it; three runs racing for one
                # stale lock within microseconds is the one case this does not cover.)
                with contextlib.suppress(SpecnetError):
                    _publish(str(aside), self.path, overwrite=False)
        finally:
            _remove_quietly(str(aside))

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def torch_load_safely(path: str | os.PathLike, *, what: str, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only,
    so nothing in the file runs. Any failure (damaged data, Python objects, a pickle that
    torch's safe unpickler does not read) is one ModelFileError saying the file is not
    ``what`` specnet can load safely, then ``hint``; torch's warnings and its advice to
    pass weights_only=False (which would run the file's code) are not shown."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain data
        raise ModelFileError(
            f"{path}: not {what} specnet can load safely (it holds more than tensors and plain "
            f"containers, or is damaged: {type(exc).__name__}){hint}"
        ) from None
