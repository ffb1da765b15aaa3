#!/usr/bin/env python3
"""Lay out the Free Spoken Digit Dataset for specnet (standard library only).

    python recipes/fsdd/prepare.py OUT [--data ../shared/data/fsdd] [--copy] [--force]

Reads DATA/recordings/{digit}_{speaker}_{take}.wav (never changes it) and
writes to OUT (a folder outside the repository, e.g. /tmp/fsdd):

- train/<digit>/*.wav  official training takes (5-49), symlinks (or copies);
- test/<digit>/*.wav   official test takes (0-4);
- official.csv         path,label,fold: fold 0 = test takes, fold 1 = training
                       takes (train with --manifest official.csv --val-fold 0);
- loso.csv             path,label,fold,speaker: fold K = speaker K (1..6, in
                       sorted speaker order, printed below) for
                       leave-one-speaker-out (--manifest loso.csv --val-fold K).

Paths in the CSVs are relative to OUT, so OUT can be moved as a whole.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
from pathlib import Path

NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
TEST_TAKES = range(0, 5)  # takes 0-4 inclusive are the official test set
OFFICIAL_HEADER = ["path", "label", "fold"]
LOSO_HEADER = ["path", "label", "fold", "speaker"]


def place(digit: str, take: int, name: str) -> str:
    """Where a recording goes, relative to OUT: ``test/<digit>/name`` for takes 0-4, else ``train/...``."""
    return f"{'test' if take in TEST_TAKES else 'train'}/{digit}/{name}"


def not_written_here(target: Path, header: list[str], written: set[str]) -> Path | None:
    """The first thing in ``target`` this script would not have written (None if none): a CSV
    must hold ``header`` and rows of paths in ``written``; a folder (train/, test/) only the
    digit folders and recordings of ``written`` (paths relative to OUT)."""
    if target.suffix == ".csv":
        if target.is_symlink() or not target.is_file():
            return target
        with open(target, newline="", encoding="utf-8", errors="replace") as handle:
            rows = csv.reader(handle)
            if next(rows, None) != header or any(not row or row[0] not in written for row in rows):
                return target
        return None
    if target.is_symlink() or not target.is_dir():
        return target
    for path in sorted(target.rglob("*")):
        if path.parent == target:  # a digit folder
            if path.is_symlink() or not path.is_dir() or not re.fullmatch(r"\d", path.name):
                return path
        elif path.relative_to(target.parent).as_posix() not in written:
            return path
    return None


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    """Writes ``path`` whole or not at all: a temporary file beside it, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (created; must not be inside the input)")
    parser.add_argument("--data", default=str(here.parents[2] / "shared" / "data" / "fsdd"),
                        help="FSDD folder holding recordings/ (default: %(default)s)")
    parser.add_argument("--copy", action="store_true", help="copy the WAV files instead of symlinking them")
    parser.add_argument("--force", action="store_true", help="replace what an earlier run wrote in OUT (train/, test/ and the CSVs)")
    args = parser.parse_args(argv)

    recordings = Path(args.data) / "recordings"
    if not recordings.is_dir():
        parser.error(f"{recordings}: folder not found (pass --data DIR, the folder holding recordings/)")
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    if out == data or data in out.parents:
        parser.error(f"{out}: must not be the input folder or inside it")
    if out == here.parents[1] or here.parents[1] in out.parents:
        parser.error(f"{out}: is inside the repository; give a folder outside it (e.g. /tmp/fsdd)")
    if out.exists() and not out.is_dir():
        parser.error(f"{out}: exists and is not a folder")

    files = []
    for path in sorted(recordings.iterdir()):
        match = NAME.match(path.name)
        if match:
            digit, speaker, take = match.group(1), match.group(2), int(match.group(3))
            files.append((path.resolve(), digit, speaker, take))
        elif path.suffix.lower() == ".wav":
            print(f"warning: skipping {path.name}: name is not digit_speaker_take.wav", file=sys.stderr)
    if not files:
        parser.error(f"{recordings}: no digit_speaker_take.wav files")

    targets = {out / "train": [], out / "test": [], out / "official.csv": OFFICIAL_HEADER, out / "loso.csv": LOSO_HEADER}
    present = [t for t in targets if t.exists() or t.is_symlink()]
    if present and not args.force:
        parser.error(f"{present[0]}: already exists; pass --force to replace what an earlier run wrote")
    written = {place(digit, take, src.name) for src, digit, _, take in files}
    for target in present:  # --force: only what this script writes, never a file of the user's
        foreign = not_written_here(target, targets[target], written)
        if foreign:
            parser.error(f"{foreign}: not written by prepare.py; move it away or give another folder")
    for target in present:
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    speakers = sorted({speaker for _, _, speaker, _ in files})
    speaker_fold = {name: i for i, name in enumerate(speakers, start=1)}
    official, loso = [], []
    for src, digit, speaker, take in files:
        rel = place(digit, take, src.name)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if args.copy:
            shutil.copy2(src, dest)
        else:
            os.symlink(src, dest)
        official.append((rel, digit, 0 if take in TEST_TAKES else 1))
        loso.append((rel, digit, speaker_fold[speaker], speaker))

    write_csv(out / "official.csv", OFFICIAL_HEADER, official)
    write_csv(out / "loso.csv", LOSO_HEADER, loso)

    n_test = sum(1 for row in official if row[2] == 0)
    print(f"{len(files)} recordings, {len(speakers)} speakers, {len(official) - n_test} train / {n_test} test "
          f"({'copied' if args.copy else 'linked'} into {out})")
    print("loso.csv folds: " + ", ".join(f"{k}={name}" for name, k in speaker_fold.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
