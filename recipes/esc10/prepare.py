#!/usr/bin/env python3
"""Prepare ESC-10 for specnet: a 5-fold manifest and a folder of class links.

    python recipes/esc10/prepare.py OUT_DIR [--data ../shared/data/esc10]

Writes, in OUT_DIR (outside the repository and the dataset):

- ``folds.csv``: ``path,label,fold`` for the 400 clips, from ``meta.csv``;
  paths are absolute, so the manifest can live anywhere.
- ``all/<class>/<file>.wav``: symbolic links to every clip, one folder per
  class, for training the shipped model on all 400 clips; links an earlier
  run left for clips meta.csv no longer lists are removed (links only).

The dataset folder is only read, never changed. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "esc10"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created; e.g. /tmp/esc10)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the ESC-10 folder holding meta.csv and audio/ (default: %(default)s)")
    args = parser.parse_args(argv)

    data = args.data.resolve()
    meta = data / "meta.csv"
    if not meta.is_file():
        parser.error(f"{meta}: not found; pass --data /path/to/esc10")
    with open(meta, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    out = args.out.resolve()
    if out == data or data in out.parents:
        parser.error(f"{out}: the output folder must not be inside the dataset")
    if out == REPO or REPO in out.parents:
        parser.error(f"{out}: is inside the repository; give a folder outside it (e.g. /tmp/esc10)")
    if out.exists() and not out.is_dir():
        parser.error(f"{out}: exists and is not a folder")
    folds_csv = out / "folds.csv"
    if folds_csv.exists() and not folds_csv.read_text("utf-8", errors="replace").startswith("path,label,fold\n"):
        parser.error(f"{folds_csv}: exists and is not a manifest prepare.py wrote; move it away or give another folder")
    out.mkdir(parents=True, exist_ok=True)
    all_dir = out / "all"

    manifest, missing, links = [], [], set()
    for row in rows:
        label, name, fold = row["category"], row["filename"], int(row["fold"])
        source = data / "audio" / label / name
        if not source.is_file():
            missing.append(str(source))
            continue
        manifest.append((str(source), label, fold))
        link = all_dir / label / name
        links.add(link)
        # A folder on the way that is a link into the dataset would make `link` a dataset file:
        # checked before anything is created there.
        if data == link.parent.resolve() or data in link.parent.resolve().parents:
            parser.error(f"{link.parent}: leads into the dataset; give an output folder of its own")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            if Path(os.readlink(link)) == source:
                continue
            link.unlink()  # only ever a link this script made, never a file
        elif link.exists():
            parser.error(f"{link}: exists and is not a link; give an empty output folder")
        link.symlink_to(source)
    if missing:
        print(f"error: {len(missing)} clips listed in {meta} are missing, e.g. {missing[0]}", file=sys.stderr)
        return 1
    # Links an earlier run made for clips this meta.csv does not list (other --data) would be
    # trained on by the final stage: removed, and class folders left empty with them.
    folders = all_dir.iterdir() if all_dir.is_dir() and not all_dir.is_symlink() else []
    for folder in [p for p in folders if p.is_dir() and not p.is_symlink()]:
        for path in folder.iterdir():
            if path.is_symlink() and path not in links:
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()

    manifest.sort(key=lambda r: (r[2], r[1], r[0]))
    tmp = out / "folds.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "fold"])
        writer.writerows(manifest)
    os.replace(tmp, folds_csv)

    folds = Counter(f for _, _, f in manifest)
    classes = sorted({label for _, label, _ in manifest})
    print(f"{len(manifest)} clips, {len(classes)} classes, folds " + ", ".join(f"{k}: {folds[k]}" for k in sorted(folds)))
    print(f"wrote {folds_csv} and {all_dir}/<class>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
