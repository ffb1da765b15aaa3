"""Files handled safely: atomic replace, no silent overwrite, run-folder locks, torch files loaded without unpickling code."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from .errors import ModelFileError, SpecnetError


def atomic_write(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader (or a crash) sees the old file or the new one, never half of one.
    With ``overwrite=False`` an existing file is an error.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise SpecnetError(f"{path}: already exists; pass --overwrite to replace it")
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SpecnetError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a user's file gets the usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise SpecnetError(f"{path}: cannot write ({reason}); earlier contents are unchanged") from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an existing output file unless ``overwrite``; return it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise SpecnetError(f"{path}: is a directory; give a file name")
    if path.exists() and not overwrite:
        raise SpecnetError(f"{path}: already exists; pass --overwrite to replace it")
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
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except OSError as exc:
                if not isinstance(exc, FileExistsError):
                    raise SpecnetError(f"{self.path.parent}: cannot lock the run folder ({exc.strerror or exc})") from None
                owner, host = self._owner()
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
                _remove_quietly(str(self.path))  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n{socket.gethostname()}\n")
            self._held = True
            _HELD_HERE.add(self._key)
            return
        raise SpecnetError(f"{self.path.parent}: cannot lock the run folder")

    def release(self) -> None:
        if self._held:
            _HELD_HERE.discard(self._key)
            _remove_quietly(str(self.path))
            self._held = False

    def _owner(self) -> tuple[int | None, str | None]:
        """The pid and host the lock file names (host None: a lock written without one)."""
        try:
            pid, *host = self.path.read_text().split()
            return int(pid), (host[0] if host else None)
        except (OSError, ValueError):
            return None, None

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
