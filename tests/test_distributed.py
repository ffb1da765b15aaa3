"""Distributed training (specnet/training.py under torchrun): two CPU ranks with gloo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import synthetic as S
import torch
from safetensors.torch import load_file

import specnet

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = ["checkpoint.pt", "config.json", "curves.png", "metrics.jsonl", "model.safetensors"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

# Each rank trains through the public API and saves, outside the run folder, the state
# its model had after every epoch. Rank r > 0 gets its own run folder, so a file it
# wrote would show there.
DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import specnet

    data, out, dump, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    rank = int(os.environ["RANK"])
    states = {}

    def record(row, model):
        states[row["epoch"]] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    best = specnet.train(data, out if rank == 0 else f"{out}-rank{rank}", on_epoch_end=record, **options)
    world = int(os.environ["WORLD_SIZE"])  # train() has left the process group it joined
    torch.save({"best": best, "states": states, "world": world}, os.path.join(dump, f"rank{rank}.pt"))
    """
)


def torchrun(args: list[str], *, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node=2 ARGS``; the whole process group dies on timeout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # TMPDIR: torchrun's own temporary folders (torchelastic_*) go with the test's, not into /tmp for good.
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(cwd), **S.SUBPROCESS_ENV)
    env.pop("SPECNET_DEBUG", None)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too: a hung rank must not outlive the test
        out, err = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s (a rank waiting for the other?)\n{out}\n{err}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 12 clips, 9 for training: an odd count, so the ranks' shares can only match if
    # the trainer evens them out (otherwise one rank takes a step the other never joins).
    return S.make_audio_dataset(tmp_path_factory.mktemp("ddp") / "data", per_class=4)


def test_ranks_end_with_identical_weights_and_only_rank_0_writes(data, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    dump = tmp_path / "dump"
    dump.mkdir()
    out = tmp_path / "run"
    options = {**S.FAST, "epochs": 2}
    result = torchrun([str(driver), str(data), str(out), str(dump), json.dumps(options)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["best"] == ranks[1]["best"]  # validation scores are reduced over ranks
    assert ranks[0]["best"]["n"] == 3
    assert sorted(ranks[0]["states"]) == sorted(ranks[1]["states"]) == [0, 1]
    for epoch in (0, 1):
        first, second = ranks[0]["states"][epoch], ranks[1]["states"][epoch]
        assert first.keys() == second.keys()
        for key in first:  # parameters and buffers (batch-norm statistics) alike
            assert torch.equal(first[key], second[key]), (epoch, key)

    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert not (tmp_path / "run-rank1").exists()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    for key, value in ranks[0]["states"][1].items():
        assert torch.equal(saved[key], value), key
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["train_files"] == 9
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]


def test_torchrun_specnet_train_cli(data, tmp_path):
    out = tmp_path / "run"
    features = S.FEATURES
    shutil.copytree(data, tmp_path / "data")
    (tmp_path / "data" / "tone" / "broken.wav").write_text("not audio")  # each rank decodes it; one says so
    result = torchrun(
        [
            "-m", "specnet", "train", str(tmp_path / "data"), "--out", str(out), "--arch", "cnn_tiny", "--epochs", "1",
            "--batch-size", "2", "--no-augment", "--device", "cpu", "--num-workers", "1",
            "--clip-seconds", str(S.CLIP_SECONDS), "--sample-rate", str(features["sample_rate"]),
            "--n-fft", str(features["n_fft"]), "--hop-length", str(features["hop_length"]),
            "--n-mels", str(features["n_mels"]), "--f-max", str(features["f_max"]),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 1 is quiet: every line is printed once, warnings too.
    assert result.stderr.count("warning: skipping") == 1 and "broken.wav" in result.stderr
    assert result.stdout.count("training cnn_tiny on 9 audio files") == 1
    assert result.stdout.count("epoch   1/1") == 1
    assert result.stdout.count("kept epoch 1") == 1
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0
    state = load_file(str(out / "model.safetensors"))
    assert state["backbone.head.fc.weight"].shape[0] == 3


def test_a_run_refused_after_joining_the_group_leaves_it(data, tmp_path):
    # out is a file: every rank refuses the run after joining the group, and leaves it all the same.
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(
        """
        import sys
        import torch
        import specnet

        try:
            specnet.train(sys.argv[1], sys.argv[2], **{"device": "cpu", "arch": "cnn_tiny", "epochs": 1})
        except specnet.SpecnetError as exc:
            print(f"refused: {exc}; group left: {not torch.distributed.is_initialized()}")
        """
    ))
    (tmp_path / "a_file").write_text("mine")
    result = torchrun([str(driver), str(data), str(tmp_path / "a_file")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"refused: {tmp_path / 'a_file'}: exists and is not a folder; group left: True") == 2
    assert (tmp_path / "a_file").read_text() == "mine"


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_more_processes_than_gpus_stop_every_rank_with_one_line(tmp_path, monkeypatch, device):
    # torchrun --nproc_per_node=2 on a machine with one GPU: each rank would take the GPU of its
    # local rank, and rank 1 has none. Every rank says so before joining the group (no rank waits).
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    data = S.make_audio_dataset(tmp_path / "data", per_class=2)
    with pytest.raises(specnet.ParameterError, match=r"^torchrun started 2 processes on this machine, which has 1 CUDA device: "
                                                     r"one process per GPU \(--nproc_per_node 1\), or device='cpu' for all of them$"):
        specnet.train(data, tmp_path / "run", **{**S.FAST, "device": device})
    assert not torch.distributed.is_initialized() and not (tmp_path / "run").exists()
