"""Tests for specnet/fileio.py: atomic writes, overwrite refusals and run-folder locks."""

from __future__ import annotations

import errno
import os
from pathlib import Path
import re
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from specnet import fileio
from specnet.errors import ParameterError, SpecnetError
from specnet.fileio import RunLock, atomic_write, check_output_path

OURS = f"{os.getpid()}\n{socket.gethostname()}\n"  # what a lock this process holds says


def test_atomic_write_bytes_and_text(tmp_path):
    path = atomic_write(tmp_path / "sub" / "dir" / "a.bin", b"\x00\x01\x02")
    assert path == tmp_path / "sub" / "dir" / "a.bin"
    assert path.read_bytes() == b"\x00\x01\x02"
    atomic_write(path, "héllo")
    assert path.read_bytes() == "héllo".encode("utf-8")
    assert os.listdir(path.parent) == ["a.bin"]


def test_atomic_write_failure_keeps_old_contents(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(SpecnetError) as err:
        atomic_write(path, b"new contents that never land")
    message = str(err.value)
    assert str(path) in message and "disk full" in message and "unchanged" in message
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.safetensors"]  # the temp file was removed


def test_atomic_write_interrupted_keeps_old_contents(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_overwrite_false(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, "first", overwrite=False)
    assert os.listdir(tmp_path) == ["f.txt"]  # published by a link: the temporary name is gone
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~fileio._UMASK
    with pytest.raises(SpecnetError, match=f"^{re.escape(str(path))}: already exists; pass overwrite=True to replace it$"):
        atomic_write(path, "second", overwrite=False)
    assert path.read_text() == "first"
    atomic_write(path, "third")
    assert path.read_text() == "third"


def test_atomic_write_never_replaces_a_file_that_appears_while_writing(tmp_path, monkeypatch):
    # Another process creates the output after the early check, while the data is written.
    path = tmp_path / "out.npz"
    real_mkstemp = fileio.tempfile.mkstemp

    def mkstemp_then_another_writer(**kwargs):
        path.write_text("theirs")
        return real_mkstemp(**kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp_then_another_writer)
    with pytest.raises(SpecnetError, match=f"^{re.escape(str(path))}: already exists; pass overwrite=True to replace it$"):
        atomic_write(path, "ours", overwrite=False)
    assert path.read_text() == "theirs"
    assert os.listdir(tmp_path) == ["out.npz"]  # the temporary file was removed


def test_publish_without_overwrite_refuses_an_existing_name(tmp_path):
    tmp, path = tmp_path / ".new.tmp", tmp_path / "taken.txt"
    tmp.write_text("new")
    path.write_text("old")
    with pytest.raises(SpecnetError, match=f"^{re.escape(str(path))}: already exists; pass overwrite=True to replace it$"):
        fileio._publish(str(tmp), path, overwrite=False)
    assert path.read_text() == "old" and tmp.read_text() == "new"  # tmp is the caller's to remove
    fileio._publish(str(tmp), path, overwrite=True)
    assert path.read_text() == "new" and not tmp.exists()


def test_publish_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "link", no_links)
    path = atomic_write(tmp_path / "f.txt", "first", overwrite=False)  # falls back to an exclusive create
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["f.txt"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~fileio._UMASK
    tmp = tmp_path / ".g.tmp"
    tmp.write_text("second")
    with pytest.raises(SpecnetError, match="already exists"):
        fileio._publish(str(tmp), path, overwrite=False)
    assert path.read_text() == "first"
    # A name taken between a check and the publishing is not taken over (it was, by a rename).
    real_lexists = os.path.lexists
    monkeypatch.setattr(fileio.os.path, "lexists", lambda p: False if os.fspath(p) == str(path) else real_lexists(p))
    with pytest.raises(SpecnetError, match="already exists"):
        fileio._publish(str(tmp), path, overwrite=False)
    assert path.read_text() == "first"
    # So two run locks are never both held.
    first, second = fileio.RunLock(tmp_path / "run"), fileio.RunLock(tmp_path / "run")
    first.acquire()
    with pytest.raises(SpecnetError, match="is using this run folder"):
        second.acquire()
    first.release()


def test_atomic_write_leaves_the_umask_alone(tmp_path, monkeypatch):
    # Setting the umask to read it, even for a moment, gives files other threads create mode 0666.
    def umask(mask):
        raise AssertionError(f"os.umask({mask:#o}) called while writing")

    monkeypatch.setattr(fileio.os, "umask", umask)
    path = atomic_write(tmp_path / "a.txt", "x", overwrite=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~fileio._UMASK


def test_files_get_the_mode_the_process_umask_gives(tmp_path):
    script = textwrap.dedent(f"""
        import os, stat
        os.umask(0o027)
        from specnet.fileio import atomic_write
        path = atomic_write({str(tmp_path / "f.txt")!r}, "x", overwrite=False)
        print(oct(stat.S_IMODE(os.stat(path).st_mode)), oct(os.umask(0o027)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0o640", "0o27"]  # the mode the umask gives; the umask unchanged


def test_atomic_write_where_no_folder_can_be_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecnetError, match="cannot write here"):
        atomic_write(tmp_path / "file" / "out.txt", "data")


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new.csv", overwrite=False) == tmp_path / "new.csv"
    (tmp_path / "old.csv").write_text("x")
    with pytest.raises(SpecnetError, match="already exists"):
        check_output_path(tmp_path / "old.csv", overwrite=False)
    assert check_output_path(tmp_path / "old.csv", overwrite=True) == tmp_path / "old.csv"
    with pytest.raises(SpecnetError, match="is a directory"):
        check_output_path(tmp_path, overwrite=True)


def test_output_names_of_any_encoding_are_written_and_other_objects_refused(tmp_path):
    import numpy as np

    import specnet

    name = os.fsencode(tmp_path) + b"/conf\xff.png"  # not UTF-8: kept as bytes, as input names may be
    assert specnet.plot_confusion(np.eye(2, dtype=int), ["a", "b"], name) == Path(os.fsdecode(name))
    assert os.path.exists(name)
    assert atomic_write(os.fsencode(tmp_path) + b"/x\xfe.txt", "data").read_text() == "data"
    for wrong in (None, 5, ["x.png"]):
        with pytest.raises(ParameterError, match=f"output file name must be a str, bytes or os.PathLike, got {type(wrong).__name__}"):
            check_output_path(wrong, overwrite=True)
        with pytest.raises(ParameterError, match="output file name must be"):
            specnet.plot_confusion(np.eye(2, dtype=int), ["a", "b"], wrong)
    for empty in ("", b""):
        with pytest.raises(ParameterError, match="empty output file name"):
            atomic_write(empty, "data")


def test_check_output_path_under_a_file(tmp_path):
    audio = tmp_path / "some_file.wav"
    audio.write_bytes(b"RIFF")
    for output in (audio / "x.npz", audio / "sub" / "x.npz"):
        with pytest.raises(SpecnetError, match=f"^{re.escape(f'{output}: cannot write here ({audio} is not a folder)')}$"):
            check_output_path(output, overwrite=True)
    # A missing folder is fine: atomic_write makes it.
    assert check_output_path(tmp_path / "new" / "x.npz", overwrite=False) == tmp_path / "new" / "x.npz"


def test_check_output_path_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    shut = tmp_path / "shut"
    shut.mkdir()
    shut.chmod(0o555)
    try:
        if os.access(shut, os.W_OK):  # root may write anywhere: say what a read-only file system says
            access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **ids: False if Path(path) == shut else access(path, mode, **ids))
        for output in (shut / "x.npz", shut / "new" / "x.npz"):
            with pytest.raises(SpecnetError, match=f"^{re.escape(f'{output}: cannot write here ({shut} is not writable)')}$"):
                check_output_path(output, overwrite=True)
    finally:
        shut.chmod(0o755)


def test_run_lock_second_acquire_names_the_pid(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.path.read_text() == OURS
        with pytest.raises(SpecnetError) as err:
            RunLock(tmp_path / "run").acquire()
        assert f"pid {os.getpid()}" in str(err.value) and str(tmp_path / "run") in str(err.value)
        assert lock.path.exists()  # the failed attempt did not break the holder's lock
    assert not (tmp_path / "run" / ".lock").exists()
    with RunLock(tmp_path / "run"):  # free again after release
        pass


def test_run_lock_takes_over_a_stale_lock(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid now names no process
    lock_path = tmp_path / ".lock"
    lock_path.write_text(str(child.pid))
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock_path.read_text() == OURS
    lock.release()
    assert not lock_path.exists()


def test_two_runs_taking_over_one_stale_lock_never_both_hold_it(tmp_path):
    # Both read the dead run's lock; the first takes over before the second removes it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = f"{child.pid}\n{socket.gethostname()}\n"
    (tmp_path / ".lock").write_text(stale)
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first._remove_stale(stale)
    first.acquire()
    second._remove_stale(stale)  # the second run, late: it moves the new lock aside, sees it is not the stale one
    assert (tmp_path / ".lock").read_text() == OURS and os.listdir(tmp_path) == [".lock"]
    with pytest.raises(SpecnetError, match="is using this run folder"):
        second.acquire()
    first.release()
    assert os.listdir(tmp_path) == []


def test_a_lock_that_is_not_a_file_is_named_not_taken_over(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(SpecnetError, match=r"\.lock: not a lock file specnet wrote; if no run uses .*, delete it$"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").is_dir() and os.listdir(tmp_path) == [".lock"]


def test_run_lock_with_this_pid_but_not_held_here_is_stale(tmp_path):
    # A killed run's lock whose pid the new process happens to have (containers: pid 1).
    (tmp_path / ".lock").write_text(str(os.getpid()))
    with RunLock(tmp_path) as lock:
        assert lock.path.read_text() == OURS
        with pytest.raises(SpecnetError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()  # now it is held here: refused


def test_run_lock_of_another_host_is_never_taken_over(tmp_path):
    # A shared run folder: the pid of a process on another machine says nothing about it here.
    (tmp_path / ".lock").write_text("1\nother-machine\n")
    with pytest.raises(SpecnetError, match=f"locked by specnet process 1 on host other-machine; if that run has ended, delete {tmp_path / '.lock'}"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == "1\nother-machine\n"


def test_run_lock_is_never_seen_without_its_owner(tmp_path, monkeypatch):
    # A second run starting while the first is taking the lock: it used to find the lock file
    # created but still empty, take it for a stale one, and both runs held the folder.
    import specnet.fileio as fileio

    real_hostname = socket.gethostname
    second = RunLock(tmp_path)

    def hostname_while_a_second_run_starts() -> str:
        monkeypatch.setattr(fileio.socket, "gethostname", real_hostname)
        second.acquire()
        return real_hostname()

    monkeypatch.setattr(fileio.socket, "gethostname", hostname_while_a_second_run_starts)
    first = RunLock(tmp_path)
    with pytest.raises(SpecnetError, match=f"another specnet process \\(pid {os.getpid()}\\)"):
        first.acquire()
    assert second._held and not first._held and (tmp_path / ".lock").read_text() == OURS
    second.release()
    assert os.listdir(tmp_path) == []  # no temporary file left


def test_run_lock_unreadable_owner_is_stale(tmp_path):
    (tmp_path / ".lock").write_text("not a pid")
    with RunLock(tmp_path) as lock:
        assert lock.path.read_text() == OURS


def test_release_only_removes_a_lock_it_holds(tmp_path):
    holder = RunLock(tmp_path)
    holder.acquire()
    other = RunLock(tmp_path)
    with pytest.raises(SpecnetError):
        other.acquire()
    other.release()
    assert holder.path.exists()
    holder.release()


def test_atomic_write_where_the_file_system_refuses_modes(tmp_path, monkeypatch):
    # FAT and some network shares refuse chmod: the file is still written, in the mode they give,
    # and the temporary file's descriptor is closed.
    def refused(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "fchmod", refused)
    before = set(os.listdir("/proc/self/fd"))
    path = atomic_write(tmp_path / "out.json", "{}")
    assert path.read_text() == "{}" and os.listdir(tmp_path) == ["out.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # mkstemp's, which the file system kept
    assert set(os.listdir("/proc/self/fd")) == before
