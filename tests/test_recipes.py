"""Tests for the recipes' prepare scripts, on small stand-in datasets the tests make:
the layout and folds they write, and that they never change (or write into) the dataset."""

from __future__ import annotations

import csv
import os
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_tone

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("george", "jackson", "lucas")


def prepare(recipe: str, *args: object) -> subprocess.CompletedProcess:
    script = REPO / "recipes" / recipe / "prepare.py"
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=60)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def fsdd(tmp_path) -> Path:
    """``fsdd/recordings/{digit}_{speaker}_{take}.wav``: two digits, three speakers, takes 0-6."""
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in (0, 1):
        for speaker in SPEAKERS:
            for take in range(7):
                make_tone(recordings / f"{digit}_{speaker}_{take}.wav", 300 + 100 * digit, 0.05, 8000)
    return tmp_path / "fsdd"


@pytest.fixture
def esc10(tmp_path) -> Path:
    """``esc10/meta.csv`` and ``audio/<class>/<file>.wav``: two classes, two clips in each of folds 1-2."""
    root = tmp_path / "esc10"
    rows = []
    for label in ("dog", "rain"):
        (root / "audio" / label).mkdir(parents=True)
        for fold in (1, 2):
            for take in "AB":
                name = f"{fold}-{label}{take}-{take}-0.wav"
                make_tone(root / "audio" / label / name, 440, 0.05, 16000)
                rows.append({"filename": name, "fold": fold, "category": label, "src_file": "1", "take": take})
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_fsdd_official_split_and_speaker_folds(fsdd, tmp_path):
    before = fingerprint(fsdd)
    result = prepare("fsdd", tmp_path / "out", "--data", fsdd)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    official = read_rows(out / "official.csv")
    assert len(official) == 2 * 3 * 7
    for row in official:  # takes 0-4 are the test fold 0, the rest train (fold 1)
        take = int(Path(row["path"]).stem.split("_")[2])
        assert row["fold"] == ("0" if take <= 4 else "1") and row["label"] == Path(row["path"]).name[0]
        assert (out / row["path"]).resolve() == fsdd.resolve() / "recordings" / Path(row["path"]).name
    loso = read_rows(out / "loso.csv")
    assert {(r["speaker"], r["fold"]) for r in loso} == {("george", "1"), ("jackson", "2"), ("lucas", "3")}
    assert fingerprint(fsdd) == before


def test_fsdd_refuses_to_write_into_the_dataset(fsdd):
    before = fingerprint(fsdd)
    for out in (fsdd, fsdd / "recordings", fsdd / "inside"):
        result = prepare("fsdd", out, "--data", fsdd, "--force")
        assert result.returncode == 2 and "must not be the input folder or inside it" in result.stderr
    assert fingerprint(fsdd) == before and sorted(p.name for p in fsdd.iterdir()) == ["recordings"]


def test_esc10_manifest_links_and_rerun(esc10, tmp_path):
    before = fingerprint(esc10)
    for _ in range(2):  # a second run finds its own links and keeps them
        result = prepare("esc10", tmp_path / "out", "--data", esc10)
        assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "folds.csv")
    assert [(Path(r["path"]).name, r["label"], r["fold"]) for r in rows] == [
        (f"{fold}-{label}{take}-{take}-0.wav", label, str(fold)) for fold in (1, 2) for label in ("dog", "rain") for take in "AB"
    ]
    link = tmp_path / "out" / "all" / "dog" / "1-dogA-A-0.wav"
    assert link.is_symlink() and link.resolve() == (esc10 / "audio" / "dog" / "1-dogA-A-0.wav").resolve()
    assert fingerprint(esc10) == before


def test_esc10_never_replaces_a_dataset_file_through_a_linked_class_folder(esc10, tmp_path):
    before = fingerprint(esc10)
    (tmp_path / "out" / "all").mkdir(parents=True)
    (tmp_path / "out" / "all" / "dog").symlink_to(esc10 / "audio" / "dog", target_is_directory=True)
    result = prepare("esc10", tmp_path / "out", "--data", esc10)
    assert result.returncode == 2 and "leads into the dataset" in result.stderr
    assert fingerprint(esc10) == before
    assert not any(p.is_symlink() for p in (esc10 / "audio").rglob("*"))


def test_esc10_creates_nothing_in_the_dataset_through_a_linked_output_folder(esc10, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "all").symlink_to(esc10, target_is_directory=True)  # all/dog would be esc10/dog
    result = prepare("esc10", tmp_path / "out", "--data", esc10)
    assert result.returncode == 2 and "all/dog: leads into the dataset" in result.stderr
    assert sorted(p.name for p in esc10.iterdir()) == ["audio", "meta.csv"]


@pytest.mark.parametrize("recipe", ["esc10", "fsdd"])
def test_output_folder_must_be_a_folder_outside_the_repository(recipe, esc10, fsdd, tmp_path):
    data = esc10 if recipe == "esc10" else fsdd
    result = prepare(recipe, REPO / "recipes" / "never_made", "--data", data)
    assert result.returncode == 2 and "is inside the repository; give a folder outside it" in result.stderr
    assert not (REPO / "recipes" / "never_made").exists()
    (tmp_path / "a_file").write_text("mine")
    result = prepare(recipe, tmp_path / "a_file", "--data", data)
    assert result.returncode == 2 and result.stderr.splitlines()[-1].endswith("a_file: exists and is not a folder")
    assert (tmp_path / "a_file").read_text() == "mine"


def test_esc10_keeps_a_folds_csv_it_did_not_write(esc10, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "folds.csv").write_text("my own notes\n")
    result = prepare("esc10", tmp_path / "out", "--data", esc10)
    assert result.returncode == 2 and "folds.csv: exists and is not a manifest prepare.py wrote" in result.stderr
    assert (tmp_path / "out" / "folds.csv").read_text() == "my own notes\n"
    assert not (tmp_path / "out" / "all").exists()  # refused before anything was made


def test_fsdd_force_replaces_only_what_an_earlier_run_wrote(fsdd, tmp_path):
    out = tmp_path / "out"
    assert prepare("fsdd", out, "--data", fsdd, "--copy").returncode == 0
    assert prepare("fsdd", out, "--data", fsdd, "--force").returncode == 0  # copies replaced by links
    result = prepare("fsdd", out, "--data", fsdd)
    assert result.returncode == 2 and "already exists; pass --force" in result.stderr
    assert prepare("fsdd", out, "--data", fsdd, "--force").returncode == 0  # its own files: replaced
    official = (out / "official.csv").read_bytes()
    # Something of the user's anywhere it would delete: named, and nothing deleted.
    for mine, named in ((out / "train" / "1" / "notes.txt", out / "train" / "1" / "notes.txt"),
                        (out / "train" / "1" / "1_me_12.wav", out / "train" / "1" / "1_me_12.wav"),  # named like a recording
                        (out / "test" / "mine" / "a.wav", out / "test" / "mine"),
                        (out / "loso.csv", out / "loso.csv")):
        mine.parent.mkdir(parents=True, exist_ok=True)
        content = "the user's own" if mine.suffix != ".csv" else "path,label,fold,speaker\nmine.wav,1,1,me\n"  # our header, not our rows
        mine.write_text(content)
        result = prepare("fsdd", out, "--data", fsdd, "--force")
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1] == f"prepare.py: error: {named}: not written by prepare.py; move it away or give another folder"
        assert mine.read_text() == content and (out / "official.csv").read_bytes() == official
        assert sum(p.is_symlink() for p in (out / "train").rglob("*.wav")) == 2 * 3 * 2  # the earlier run's links still there
        if mine.name != "loso.csv":
            mine.unlink()
        if mine.parent.name == "mine":
            mine.parent.rmdir()


@pytest.mark.parametrize("step", ["loso", "adapt"])
def test_fsdd_run_stops_when_a_speaker_fold_fails_to_evaluate(step, tmp_path):
    """A fold whose ``specnet evaluate`` fails stops run.sh, even with an earlier run's results in WORK.

    The folds run as bash functions on the left of ``||``, where ``set -e`` does not apply, so each
    command must check its own status; a stand-in ``specnet`` on PATH fails at ``evaluate``.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "specnet"
    fake.write_text('#!/bin/sh\n[ "$1" = evaluate ] && { echo "evaluate: broken" >&2; exit 1; }\nexit 0\n')
    fake.chmod(0o755)
    work = tmp_path / "work"
    for kind in ("loso", "adapted"):  # stale results an earlier run left
        for k in range(1, 7):
            (work / "eval" / f"{kind}{k}").mkdir(parents=True)
            (work / "eval" / f"{kind}{k}" / "metrics.json").write_text('{"accuracy": 0.5}')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STEPS": step}
    result = subprocess.run(["bash", str(REPO / "recipes" / "fsdd" / "run.sh"), str(work)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    assert "speaker fold 1: evaluat" in result.stderr and "failed" in result.stderr
    assert "50.00 %" not in result.stdout  # the stale accuracies are not reported as this run's


def test_fsdd_bundle_step_asks_for_the_official_step_first(tmp_path):
    """``STEPS=bundle`` reads the official split's accuracy: without it, one line naming the step, not a traceback."""
    work = tmp_path / "work"
    env = {**os.environ, "STEPS": "bundle"}
    result = subprocess.run(["bash", str(REPO / "recipes" / "fsdd" / "run.sh"), str(work)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr == f"bundle: no {work}/eval/official/metrics.json; run the official step first (STEPS=\"official bundle\")\n"


def test_esc10_rerun_on_other_data_removes_the_links_it_no_longer_lists(esc10, tmp_path):
    """all/ is what the final stage trains on: it holds the clips of the last run's meta.csv only."""
    out = tmp_path / "out"
    assert prepare("esc10", out, "--data", esc10).returncode == 0
    (out / "all" / "dog" / "my_notes.txt").write_text("mine")  # not a link: kept
    dogs = tmp_path / "dogs"  # the same clips, without the rain class
    (dogs / "audio").mkdir(parents=True)
    (dogs / "audio" / "dog").symlink_to(esc10 / "audio" / "dog", target_is_directory=True)
    with open(esc10 / "meta.csv", newline="") as handle:
        lines = [line for line in handle if ",rain," not in line]
    (dogs / "meta.csv").write_text("".join(lines))
    result = prepare("esc10", out, "--data", dogs)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(out / "all").as_posix() for p in (out / "all").rglob("*")) == [
        "dog", "dog/1-dogA-A-0.wav", "dog/1-dogB-B-0.wav", "dog/2-dogA-A-0.wav", "dog/2-dogB-B-0.wav", "dog/my_notes.txt"]
    assert {r["label"] for r in read_rows(out / "folds.csv")} == {"dog"}
    assert sorted(p.name for p in (esc10 / "audio" / "rain").iterdir()) == ["1-rainA-A-0.wav", "1-rainB-B-0.wav", "2-rainA-A-0.wav", "2-rainB-B-0.wav"]
