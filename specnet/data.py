"""Labelled datasets: class folders, CSV manifests with folds, splits, decoding once.

A dataset is a :class:`LabelledFiles`: sorted class names, ``(path, target)``
samples and, from a manifest, an optional fold per sample — the torchvision
``ImageFolder`` vocabulary (``classes``, ``class_to_idx``, ``samples``,
``targets``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from .audio import AUDIO_EXTENSIONS
from .checks import is_finite_number, is_integer
from .errors import DataError, ParameterError, SpecnetError, counted, listed
from .image import IMAGE_EXTENSIONS
from .paths import display_name, one_line, real_folders, unreadable_folder, walk_files

T = TypeVar("T")
log = logging.getLogger("specnet")


@dataclass
class LabelledFiles:
    """Files with class labels.

    classes : class names, sorted; a target is an index into it.
    samples : ``(path, target)`` pairs.
    kind : "audio" or "image".
    folds : one fold number per sample (from a manifest), or None.
    """

    classes: list[str]
    samples: list[tuple[Path, int]]
    kind: str
    folds: list[int] | None = None

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]

    def subset(self, indices: Sequence[int]) -> "LabelledFiles":
        return LabelledFiles(
            classes=self.classes,
            samples=[self.samples[i] for i in indices],
            kind=self.kind,
            folds=[self.folds[i] for i in indices] if self.folds is not None else None,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}


def file_kind(path: str | os.PathLike) -> str | None:
    """"audio", "image" or None, from the file name's extension."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


def _single_kind(paths: Sequence[Path], source: str) -> str:
    kinds = {file_kind(p) for p in paths} - {None}
    if len(kinds) > 1:
        audio = [p for p in paths if file_kind(p) == "audio"]
        images = [p for p in paths if file_kind(p) == "image"]
        raise DataError(f"{source}: mixes audio and image files ({len(audio)} audio, e.g. {display_name(audio[0])}; "
                        f"{len(images)} image, e.g. {display_name(images[0])}); use one kind per dataset")
    if not kinds:
        raise DataError(f"{source}: no audio or image files found")
    return kinds.pop()


def _other(kind: str) -> str:
    """The other kind of file: "image" for "audio", "audio" for "image"."""
    return "image" if kind == "audio" else "audio"


#: The share of a dataset's files that makes it one kind: the other kind's files are left out (with a
#: warning) when they are fewer than one in ten, and refused as a mix when more.
MOSTLY = 0.9


def _suffixes(kind: str | None) -> str:
    """The file suffixes of ``kind`` ("audio", "image"; None: both) as an error lists them:
    ``"audio: .aif, .aiff, ...; images: .bmp, ..."``."""
    said = {"audio": ("audio", AUDIO_EXTENSIONS), "image": ("images", IMAGE_EXTENSIONS)}
    return "; ".join(f"{name}: {', '.join(sorted(suffixes))}" for key, (name, suffixes) in said.items() if kind in (None, key))


def _main_kind(samples: Sequence[tuple[Path, int]]) -> str | None:
    """The kind of at least :data:`MOSTLY` of ``samples``' files when the others are strays (fewer than
    the kept files in every class: a class of pictures among recordings is a mix), else None."""
    kinds = Counter(file_kind(p) for p, _ in samples)
    if len(kinds) < 2:
        return None
    main, count = kinds.most_common(1)[0]
    kept = Counter(target for p, target in samples if file_kind(p) == main)
    left = Counter(target for p, target in samples if file_kind(p) != main)
    return main if count >= MOSTLY * len(samples) and all(left[t] < kept[t] for t in left) else None


def left_out_note(source: str | os.PathLike, count: int, kind: str) -> str:
    """The one warning for files a ``kind`` model cannot take, found in ``source``:
    ``"test: 1 image file left out (the model takes audio)"``."""
    return f"{display_name(source)}: {counted(count, _other(kind) + ' file')} left out (the model takes {'images' if kind == 'image' else 'audio'})"


def find_class_folders(root: str | os.PathLike, *, min_classes: int = 2, kind: str | None = None) -> LabelledFiles:
    """One subfolder per class under ``root``, files found recursively in each
    (following links to folders; see :func:`~specnet.paths.walk_files`).

    Hidden files and files of other types are ignored. With ``kind`` ("audio" or "image":
    a model's input), files of the other kind are left out with one warning; without it, the
    kind of at least :data:`MOSTLY` of the files is kept in the same way (the others fewer than
    the kept ones in each class), and any other mix of both is refused. Raises ``DataError`` for
    a missing or empty root, fewer than ``min_classes`` classes (training needs two), or classes
    without files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder" if root.exists() else f"{root}: folder not found")
    if why := unreadable_folder(root):
        raise DataError(f"{root}: {why}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: has no class subfolders (expected {root}/<class>/<file>)")
    blank = [name for name in classes if not name.strip()]
    if blank:  # a model file with such a class is refused on load
        raise DataError(f"{root}: class folder {blank[0]!r} has a blank name; rename it: a class needs a name to show")
    samples: list[tuple[Path, int]] = []
    # The real folders each class reads: a link to another class's folder (or above it) would
    # give its files two labels. Linked files are left alone: a content-addressed store (the
    # Hugging Face cache, git-annex) links equal files to one blob, as copies would be.
    folder_class: dict[str, tuple[str, Path]] = {}
    for target, name in enumerate(classes):
        found = walk_files(root / name)
        if refused := next(filter(os.path.isdir, found), None):  # a folder it cannot search: its files would be left out
            raise DataError(f"{display_name(refused)}: {unreadable_folder(refused)}")
        files = [Path(f) for f in found if file_kind(f) is not None]
        for folder in dict.fromkeys(path.parent for path in files):  # each folder once, in order
            other, first = folder_class.setdefault(os.path.realpath(folder), (name, folder))
            if other != name:
                raise DataError(f"{display_name(folder)}: the folder {display_name(first)} of class {other!r}, "
                                f"reached through a link from class {name!r}; each file belongs to one class")
        samples.extend((p, target) for p in files)
    # A stray picture among a model's audio is left out; data of the other kind only is named as such (_single_kind).
    # Without a model, the kind of nine in ten files, when the others are strays (album art among recordings).
    keep = kind if kind is not None else _main_kind(samples)
    kept = [(p, target) for p, target in samples if file_kind(p) == keep] if keep else []
    if kept and len(kept) < len(samples):
        note = left_out_note(root, len(samples) - len(kept), keep) if kind is not None else (
            f"{display_name(root)}: {counted(len(samples) - len(kept), _other(keep) + ' file')} left out "
            f"({counted(len(kept), keep + ' file')} make it {'an audio' if keep == 'audio' else 'an image'} dataset)")
        log.warning("%s", note)
        samples = kept
    present = {target for _, target in samples}
    empty = [name for target, name in enumerate(classes) if target not in present]
    if empty:
        raise DataError(
            f"{root}: {listed(empty, 'class folder')} {'holds' if len(empty) == 1 else 'hold'} no {kind or 'audio or image'} files "
            f"({_suffixes(kind)})"
        )
    if len(classes) < min_classes:
        raise DataError(f"{root}: found only class {classes[0]!r}; at least two classes are needed")
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and file_kind(p) is not None)
    if stray:
        log.warning("%s: %s outside the class folders, not used (%s%s)", display_name(root), counted(len(stray), "file"),
                    display_name(stray[0]), ", ..." if len(stray) > 1 else "")
    kind = _single_kind([p for p, _ in samples], str(root))
    return LabelledFiles(classes=classes, samples=samples, kind=kind)


def read_manifest(csv_path: str | os.PathLike, *, min_classes: int = 2) -> LabelledFiles:
    """A CSV with columns ``path,label`` and optionally ``fold``; paths relative to the CSV,
    spaces around a field ignored (``dog.wav, dog`` labels it ``dog``).

    Raises ``DataError`` for a missing or unreadable file, a missing column, an
    empty field, a path that names neither an audio nor an image file, a file listed
    twice (as spelled, up to ``.`` and ``..``), a missing fold or one that is not an
    integer, or fewer than ``min_classes`` labels.
    """
    csv_path = Path(csv_path)
    try:
        # utf-8-sig: spreadsheet programs start their UTF-8 CSVs with a byte-order mark.
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
            rows = [(reader.line_num, {k: v.strip() if isinstance(v, str) else v for k, v in row.items()})
                    for row in reader]  # line_num counts blank lines too
    except FileNotFoundError:
        raise DataError(f"{csv_path}: manifest not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read manifest ({exc})") from None
    if not any(reader.fieldnames):
        raise DataError(f"{csv_path}: the manifest's first line is blank; it must be the header path,label[,fold]" if rows else
                        f"{csv_path}: manifest is empty; it needs a header line path,label[,fold] and a row per file")
    missing = [column for column in ("path", "label") if column not in reader.fieldnames]
    if missing:
        header = one_line(",".join(reader.fieldnames))
        raise DataError(f"{csv_path}: the manifest's header names {header if len(header) <= 80 else header[:77] + '...'}; "
                        f"it needs columns path,label[,fold] (no {' or '.join(missing)} column)")
    if not rows:
        raise DataError(f"{csv_path}: the manifest lists no files, only its header")
    has_fold = "fold" in reader.fieldnames
    for line, row in rows:
        if None in row:  # DictReader's key for the fields past the header's
            raise DataError(f"{csv_path}:{line}: {len(reader.fieldnames) + len(row[None])} fields, and the header names "
                            f"{len(reader.fieldnames)}; put a path or label with a comma in double quotes")
        if not row["path"] or not row["label"]:  # None: the row is shorter than the header
            raise DataError(f"{csv_path}:{line}: empty path or label")
        if file_kind(row["path"]) is None:  # class folders skip such files; a manifest names its files
            raise DataError(
                f"{csv_path}:{line}: {row['path']} is neither an audio nor an image file ({_suffixes(None)})"
            )
    first_line: dict[str, int] = {}
    for line, row in rows:  # a file listed twice would count twice, or sit in two folds at once
        key = os.path.normpath(csv_path.parent / row["path"])
        if first_line.setdefault(key, line) != line:
            raise DataError(f"{csv_path}:{line}: {row['path']} is listed again (first on line {first_line[key]})")
    classes = sorted({row["label"] for _, row in rows})
    if len(classes) < min_classes:
        raise DataError(f"{csv_path}: lists only one class; at least two are needed")
    index = {name: i for i, name in enumerate(classes)}
    samples, folds = [], []
    for line, row in rows:
        samples.append(((csv_path.parent / row["path"]), index[row["label"]]))
        if has_fold:
            if not row["fold"]:  # None: the row is shorter than the header
                raise DataError(f"{csv_path}:{line}: missing fold (the header has a fold column)")
            try:
                folds.append(int(row["fold"]))
            except ValueError:
                raise DataError(f"{csv_path}:{line}: fold {row['fold']!r} is not an integer") from None
    kind = _single_kind([p for p, _ in samples], str(csv_path))
    return LabelledFiles(classes=classes, samples=samples, kind=kind, folds=folds if has_fold else None)


def files_digest(*files: LabelledFiles | None) -> str:
    """A SHA-256 over each sample's class, real path and size in bytes: two lists of
    files get the same digest only if they name the same files with the same labels
    (and, most likely, the same contents)."""
    digest = hashlib.sha256()
    for labelled in filter(None, files):
        for path, target in labelled.samples:
            real = os.path.realpath(path)
            try:
                size = os.stat(real).st_size
            except OSError:  # a file that cannot be read: skipped, and listed apart
                size = -1
            digest.update(f"{labelled.classes[target]}\0{real}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def stratified_split(targets: Sequence[int], *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` with ``fraction`` of each class in val (at least one
    per class with two or more files), shuffled with ``seed``."""
    if not (is_finite_number(fraction) and 0 <= fraction < 1):
        raise ParameterError(f"val_split={fraction!r} must be a number in [0, 1)")
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    train, val = [], []
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        n_val = int(round(fraction * len(members)))
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) > 1 else 0
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def check_one_source(data_dir: str | os.PathLike | None, manifest: str | os.PathLike | None) -> None:
    """Refuse both a class-folder tree and a manifest: one of them would be silently left out."""
    if data_dir and manifest:
        raise ParameterError(f"give a data folder or a manifest, not both ({display_name(data_dir)}, {display_name(manifest)})")


def check_outside_the_data(out: str | os.PathLike, data_folders: Sequence[str | os.PathLike | None]) -> None:
    """Refuse an output folder inside a class-folder tree, or inside a class folder it links to:
    its files (pictures among them) would be read as data by the next run, a folder of them as a class."""
    run = os.path.realpath(out)
    for folder in filter(None, data_folders):
        for root in real_folders(folder):
            if run == root or run.startswith(root.rstrip(os.sep) + os.sep):
                raise DataError(f"{display_name(out)}: inside the data folder {display_name(folder)}, where what specnet "
                                "writes would be read as data next time; choose a folder outside it")


def split_by_fold(data: LabelledFiles, fold: int, source: str | os.PathLike) -> tuple[LabelledFiles, LabelledFiles]:
    """``(train, held-out)``: the samples of every other fold, and those of ``fold``; ``source``
    (the manifest or folder they came from) names the data in errors."""
    if not is_integer(fold):  # "2" or 2.0 would match no fold, or every one by luck
        raise ParameterError(f"fold={fold!r} must be an integer")
    if data.folds is None:
        raise DataError(f"{display_name(source)}: fold {fold}: the data has no folds (a manifest with a 'fold' column gives them)")
    if fold not in set(data.folds):
        raise DataError(f"{display_name(source)}: fold {fold} is not in the manifest (folds: {', '.join(map(str, sorted(set(data.folds))))})")
    held = [i for i, f in enumerate(data.folds) if f == fold]
    rest = [i for i, f in enumerate(data.folds) if f != fold]
    return data.subset(rest), data.subset(held)


def decode_all(
    paths: Sequence[Path],
    decode: Callable[[Path], T],
    *,
    num_workers: int = 2,
    progress: bool = False,
    desc: str = "decoding",
) -> tuple[list[T | None], list[tuple[str, str]]]:
    """Decode every file once, in threads (soundfile, soxr and Pillow release the GIL).

    Returns the decoded items in order (None where decoding failed) and
    ``(path, reason)`` for each failure; nothing is raised for a bad file.
    """

    def attempt(path: Path) -> tuple[T | None, str | None]:
        try:
            return decode(path), None
        except SpecnetError as exc:
            return None, str(exc)

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(
            tqdm(pool.map(attempt, paths), total=len(paths), desc=desc, disable=not progress, leave=False)
        )
    items = [item for item, _ in results]
    failures = [(str(p), reason) for p, (_, reason) in zip(paths, results) if reason is not None]
    return items, failures
