"""Killing ``specnet train`` and resuming it; run-folder locks.

A training process is SIGKILLed at three points: in the middle of an epoch,
half-way through writing ``checkpoint.pt``, and during validation. The points
are hit deterministically by a driver script that, in the child process
only, wraps one function of specnet to kill itself at that moment and then
runs ``specnet.cli.main``. After each kill, the files in the run folder are
whole (they load), and ``specnet train --resume`` finishes the run with the
same metrics and weights as a run that was never interrupted (CPU, fixed
seed, one thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import CUDA_RTOL, ON_CUDA, make_class_folders

from specnet.cli import main
from specnet.errors import SpecnetError
from specnet.modelfile import load_model_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")

KILL_EPOCH = 1  # the second of three epochs: a checkpoint from epoch 0 exists when it dies

DRIVER = textwrap.dedent(
    '''
    """Run several `specnet train` commands side by side, each in a forked child.

    argv[1] is a JSON list of [kill_at, [args...]]. Each child wraps one specnet
    function so that it SIGKILLs itself at the point kill_at names ("" runs to
    the end), then runs specnet.cli.main(args). Importing torch once and forking
    saves a second or more of start-up per run. Prints the children's exit
    codes (-9: killed) as JSON.
    """
    import json
    import os
    import signal
    import sys

    import torch

    torch.set_num_threads(1)  # deterministic sums; no OpenMP threads exist when forking
    import torch._dynamo  # noqa: F401  (the first optimizer imports it: once here, not in every child)

    import specnet.fileio as fileio
    import specnet.plots as plots
    import specnet.training as training
    from specnet.cli import main

    EPOCH = int(os.environ["KILL_EPOCH"])


    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


    def kill_mid_epoch():
        """After the first optimizer step of epoch EPOCH: its weights exist only in memory."""
        real_epoch, real_crop = training._train_epoch, training.crop_batch

        def train_epoch(*args, epoch, **kwargs):
            if epoch == EPOCH:
                calls = []

                def crop(*a, **k):
                    calls.append(1)
                    if len(calls) == 2:
                        die()
                    return real_crop(*a, **k)

                training.crop_batch = crop
            return real_epoch(*args, epoch=epoch, **kwargs)

        training._train_epoch = train_epoch


    def kill_mid_checkpoint():
        """Half of epoch EPOCH's checkpoint bytes are in the temporary file, on disk."""
        real_fdopen = os.fdopen
        written = []

        class HalfThenDie:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def fileno(self):
                return self.handle.fileno()

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                os.fsync(self.handle.fileno())
                die()

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if name.startswith(".checkpoint.pt.") and name.endswith(".tmp"):
                written.append(name)
                if len(written) == EPOCH + 1:
                    return HalfThenDie(handle)
            return handle

        fileio.os.fdopen = fdopen


    def kill_mid_validation():
        """Inside epoch EPOCH's validation, after the network has scored the validation files."""
        real_evaluate = training.evaluate_split
        calls = []

        def evaluate_split(*args, **kwargs):
            calls.append(1)
            if len(calls) == EPOCH + 1:
                training.predict_split(*args, **kwargs)
                die()
            return real_evaluate(*args, **kwargs)

        training.evaluate_split = evaluate_split


    KILLS = {"epoch": kill_mid_epoch, "checkpoint": kill_mid_checkpoint, "validation": kill_mid_validation}
    # The curves are not under test, and matplotlib takes a second to import.
    plots.plot_curves = lambda history, path, **kwargs: None

    children = []
    for kill_at, args in json.loads(sys.argv[1]):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if kill_at:
                    KILLS[kill_at]()
                main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 3
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
    '''
)

POINTS = ("epoch", "checkpoint", "validation")


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", str(data), "--out", str(out), "--arch", "cnn_tiny", "--epochs", "3", "--batch-size", "2",
        "--n-mels", "32", "--clip-seconds", "0.3", "--num-workers", "1", "--seed", "7", "--quiet", *extra,
    ]


def _run_side_by_side(driver: Path, runs: list[tuple[str, list[str]]]) -> tuple[list[int], str]:
    """Exit codes of the driver's forked children, one per (kill_at, args), and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "KILL_EPOCH": str(KILL_EPOCH)}
    env.pop("SPECNET_DEBUG", None)
    done = subprocess.run([sys.executable, str(driver), json.dumps(runs)], env=env, cwd=driver.parent,
                          capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout.splitlines()[-1])
    assert len(codes) == len(runs), done.stderr
    return codes, done.stderr


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")  # wall-clock time, the one thing allowed to differ
    return rows


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model_file(run / "model.safetensors").state_dict()


def _check_whole(run: Path) -> None:
    """Every run file that exists after a kill loads; nothing half-written has a real name."""
    if (run / "model.safetensors").exists():
        load_model_file(run / "model.safetensors")
    if (run / "checkpoint.pt").exists():
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["epoch"] == KILL_EPOCH - 1
    json.loads((run / "config.json").read_text())
    if (run / "metrics.jsonl").exists():
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    data = make_class_folders(tmp_path / "data", {"a": 4, "b": 4}, seconds=0.3)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    # The reference run and the three doomed runs are independent: run them side by side.
    runs = [("", _train_args(data, tmp_path / "reference"))]
    runs += [(point, _train_args(data, tmp_path / point)) for point in POINTS]
    codes, err = _run_side_by_side(driver, runs)
    assert codes == [0] + [-signal.SIGKILL] * len(POINTS), err

    for point in POINTS:
        run = tmp_path / point
        _check_whole(run)
        assert (run / "checkpoint.pt").exists() and (run / "model.safetensors").exists()
        assert int((run / ".lock").read_text().split()[0]) > 0  # left behind by the dead process: stale
        leftovers = list(run.glob(".checkpoint.pt.*.tmp"))
        if point == "checkpoint":  # the kill really came half-way through the write
            assert len(leftovers) == 1
            assert 0 < leftovers[0].stat().st_size < (run / "checkpoint.pt").stat().st_size
        else:
            assert leftovers == []

    codes, err = _run_side_by_side(driver, [("", _train_args(data, tmp_path / point, "--resume")) for point in POINTS])
    assert codes == [0] * len(POINTS), err
    expected_metrics, expected_weights = _metrics(tmp_path / "reference"), _weights(tmp_path / "reference")
    assert [row["epoch"] for row in expected_metrics] == [0, 1, 2]
    for point in POINTS:
        run = tmp_path / point
        if ON_CUDA:  # see CUDA_RTOL
            assert _metrics(run) == [pytest.approx(row, rel=CUDA_RTOL) for row in expected_metrics], point
        else:
            assert _metrics(run) == expected_metrics, point
        weights = _weights(run)
        assert weights.keys() == expected_weights.keys()
        for key, value in expected_weights.items():
            if ON_CUDA:
                torch.testing.assert_close(weights[key], value, rtol=CUDA_RTOL, atol=CUDA_RTOL * value.float().abs().max().item(),
                                           msg=f"{point}: {key} differs")
            else:
                assert torch.equal(weights[key], value), f"{point}: {key} differs"
        assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
        assert not (run / ".lock").exists()
        assert list(run.glob(".*.tmp")) == []  # the dead run's temporary file was cleaned up


# ---------------------------------------------------------------- locks


def _run_main(args: list[str]) -> tuple[int, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            main(args)
        return 0, err.getvalue()
    except SystemExit as exc:
        return int(exc.code), err.getvalue()


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_live_lock_refuses_and_touches_nothing(tmp_path, sleeper):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2}, seconds=0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(str(sleeper))
    (run / "model.safetensors").write_bytes(b"the live run's model")
    (run / "checkpoint.pt").write_bytes(b"the live run's checkpoint")
    for extra in ([], ["--resume"], ["--overwrite"]):
        code, err = _run_main(_train_args(data, run, *extra))
        assert code == 1
        assert err.splitlines() == [f"error: {run}: another specnet process (pid {sleeper}) is using this run folder"]
        # --overwrite must not delete a live run's files before finding the lock.
        assert (run / "model.safetensors").read_bytes() == b"the live run's model"
        assert (run / "checkpoint.pt").read_bytes() == b"the live run's checkpoint"
        assert (run / ".lock").read_text() == str(sleeper)


def test_stale_lock_is_taken_over(tmp_path):
    data = make_class_folders(tmp_path / "data", {"a": 3, "b": 3}, seconds=0.2)
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(str(dead.pid))
    code, err = _run_main(_train_args(data, run, "--epochs", "1"))
    assert code == 0, err
    load_model_file(run / "model.safetensors")
    assert not (run / ".lock").exists()  # released at the end


def test_unusable_run_folder_is_one_line(tmp_path):
    data = make_class_folders(tmp_path / "data", {"a": 2, "b": 2}, seconds=0.2)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _run_main(_train_args(data, blocker / "run"))  # its parent is a regular file
    assert code == 1
    assert err.splitlines() == [f"error: {blocker / 'run'}: cannot create the run folder (Not a directory)"]
    import specnet

    with pytest.raises(SpecnetError, match="exists and is not a folder"):
        specnet.train(data, blocker, arch="cnn_tiny", epochs=1)
    assert blocker.read_text() == "not a folder"
