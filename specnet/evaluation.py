"""Scoring a model file on labelled files: accuracy, macro-F1, per-class scores, confusion."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import LabelledFiles, check_one_source, check_outside_the_data, find_class_folders, read_manifest, split_by_fold
from .errors import DataError, ParameterError, SpecnetError, listed
from .fileio import atomic_write, check_output_path
from .inference import Failure, Model, load_model
from .metrics import Scores, log_loss_sum, score
from .paths import display_name, text_name, unnamed

log = logging.getLogger("specnet")


def evaluate(
    model: str | os.PathLike | Model | None,
    data_dir: str | os.PathLike | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    fold: int | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    num_workers: int = 2,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` (a file, a bundled name or a loaded :class:`~specnet.inference.Model`) on
    class folders or a manifest (one ``fold`` of it).

    The data's class names must all be classes of the model; they are matched
    by name. Long clips are windowed as ``specnet classify`` does. With ``out``,
    writes ``metrics.json`` and ``confusion.png`` there. ``progress`` shows a
    bar of files scored on standard error. ``device`` is as for
    :func:`~specnet.inference.load_model`. Returns the metrics dict (accuracy, macro_f1,
    n, per_class, classes, confusion, loss, model, skipped); a per-class score whose
    denominator is zero is None.
    """
    if out is not None:  # before any work: an existing report must not cost a whole evaluation
        check_outside_the_data(out, [data_dir])
        _report_paths(Path(out), overwrite=overwrite)
    loaded = model if isinstance(model, Model) else load_model(model, device=device)
    net = loaded.net
    files = _load_files(data_dir, manifest, fold, kind=net.spec.input_kind)
    if files.kind != net.spec.input_kind:  # before the class names, which then cannot match anyway
        takes = "images" if net.spec.input_kind == "image" else "audio"
        raise DataError(f"{display_name(manifest or data_dir)}: holds {files.kind} files, and the model ({loaded.name}) takes {takes}")
    unknown = sorted({files.classes[target] for target in files.targets} - set(net.classes))  # of the files scored
    if unknown:
        raise DataError(f"{display_name(manifest or data_dir)}: the data has {listed([repr(text_name(c)) for c in unknown], 'class', 'classes')} that the "
                        f"model does not know (it knows {', '.join(repr(text_name(c)) for c in net.classes)})")
    model_index = {name: i for i, name in enumerate(net.classes)}  # the data's classes, by name
    # Through Model.predict_iter, as `specnet classify` runs: the same windows and scores,
    # and only a few files' audio in memory at a time, however large the data.
    probabilities, targets, skipped = [], [], []
    from tqdm.auto import tqdm

    results = loaded.predict_iter(files.paths, top_k=1, batch_size=batch_size, num_workers=num_workers)
    bar = tqdm(results, total=len(files.samples), desc="evaluating", unit="file", disable=not progress, leave=False)
    for result, (path, target) in zip(bar, files.samples, strict=True):  # the results first: run to their end
        if isinstance(result, Failure):
            log.warning("skipping %s", result.message)
            skipped.append({"path": text_name(path), "reason": unnamed(path, result.reason)})  # the name once, exactly
        else:
            probabilities.append(result.probabilities)
            targets.append(model_index[files.classes[target]])
    if not targets:
        raise DataError(f"{display_name(manifest or data_dir)}: no usable file to evaluate on ({len(skipped)} skipped)")
    scores = score(targets, np.argmax(probabilities, axis=1), net.classes)
    loss = log_loss_sum(np.stack(probabilities), targets) / len(targets)
    result = scores.to_dict() | {"loss": loss, "model": loaded.name, "skipped": skipped}
    if out is not None:
        write_report(scores, result, Path(out), overwrite=overwrite)
    return result


def _load_files(data_dir, manifest, fold, *, kind: str) -> LabelledFiles:
    # One class is enough to score a model on (its recall); training needs two.
    check_one_source(data_dir, manifest)
    if manifest:
        files = read_manifest(manifest, min_classes=1)
        return split_by_fold(files, fold, manifest)[1] if fold is not None else files
    if fold is not None:
        raise ParameterError("a fold= needs a manifest=")
    if data_dir is None:
        raise ParameterError("give a data folder or manifest=FILE.csv")
    return find_class_folders(data_dir, min_classes=1, kind=kind)  # a stray picture among the audio is left out


def write_report(scores: Scores, result: dict[str, Any], out: Path, *, overwrite: bool) -> None:
    """``metrics.json`` and ``confusion.png`` in ``out``."""
    from .plots import plot_confusion

    metrics, picture = _report_paths(out, overwrite=overwrite)  # both, so neither is written alone
    out.mkdir(parents=True, exist_ok=True)
    title = f"{result['model']}: accuracy {100 * scores.accuracy:.1f} % on {scores.n} files"
    # The picture first: drawing it takes a while, and a Ctrl-C or error there leaves no metrics.json alone.
    plot_confusion(scores.confusion, scores.classes, picture, title=title, overwrite=overwrite)
    atomic_write(metrics, json.dumps(result, indent=2) + "\n", overwrite=overwrite)


def _report_paths(out: Path, *, overwrite: bool) -> tuple[Path, Path]:
    """``out/metrics.json`` and ``out/confusion.png``, refused if either exists (unless ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise SpecnetError(f"{out}: exists and is not a folder")
    return (check_output_path(out / "metrics.json", overwrite=overwrite),
            check_output_path(out / "confusion.png", overwrite=overwrite))
