"""The training loop: labelled files in, a self-describing model file out.

Read it top to bottom: resolve options -> find the data -> build the model
(before decoding: its spec gives the sample rate or image size, and a bad
weight file or init model is said at once) -> decode the data once -> measure
normalisation statistics -> epochs of (batch, augment, step) -> validate ->
keep the best model -> checkpoint.

Every random draw of epoch ``e`` comes from generators seeded with
``(seed, e)``, so a run resumed from the checkpoint after epoch ``e - 1``
repeats what the uninterrupted run would have done: exactly on a CPU, and
closely on CUDA, whose fastest cuDNN kernels do not all repeat bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import augment as aug
from .audio import load_audio, resampled_to
from .checks import check_known_names, check_path, is_finite_number, is_integer
from .data import LabelledFiles, check_one_source, check_outside_the_data, decode_all, files_digest, find_class_folders, read_manifest, split_by_fold, stratified_split
from .devices import autocast_dtype, resolve_device
from .distributed import Dist, setup_distributed
from .errors import DataError, GivenValueError, ModelFileError, ParameterError, SpecnetError, TrainingError, counted, listed
from .features import clamp_to_peak
from .featureconfig import FeatureConfig
from .fileio import RunLock, atomic_write, json_text
from .image import load_image
from .inference import resolve_model
from .metrics import Scores, confusion_matrix, log_loss_sum
from .modelfile import load_model_file, save_model_file
from .modelspec import ModelSpec, clip_seconds_problem, spec_to_metadata
from .network import SpecNet
from .paths import display_name, naming, one_line, text_name, unnamed
from .runs import RunFiles, checked_resume, checkpoint_network, load_checkpoint, real_file, patience_stops, resume_trains, run_options, save_checkpoint, the_runs_setting, with_run_options
from .trainconfig import InitConflict, OptionsForOtherData, OptionValueError, TrainConfig, features_given, held_out_share, init_conflicts
from .windows import Windows, clip_mean, default_hop, fit_length, is_silence, loudest_sample, silent_windows

log = logging.getLogger("specnet")


#: Epochs when none are given: DEFAULT_EPOCHS, or more on a small training set, so that
#: training takes at least MIN_STEPS optimiser steps (at most MAX_DEFAULT_EPOCHS epochs).
#: ESC-10's 320 training clips are 10 steps an epoch: 60 epochs scored 90.00 % in 5-fold
#: cross-validation, 120 epochs 92.75 %, 240 epochs 93.50 % (recipes/esc10).
DEFAULT_EPOCHS = 30
MIN_STEPS = 2400
MAX_DEFAULT_EPOCHS = 300


#: Optimiser steps in a row with a non-finite loss or gradient after which training stops.
MAX_SKIPPED_STEPS = 10


# ---------------------------------------------------------------- data


@dataclass
class Split:
    """Decoded items and their targets: waveforms (list of (n,) float32) or images (N, C, H, W)."""

    items: list[np.ndarray] | torch.Tensor
    targets: torch.Tensor
    paths: list[str]

    def subset(self, indices: Sequence[int]) -> "Split":
        index = torch.as_tensor(indices, dtype=torch.long)
        items = self.items[index] if isinstance(self.items, torch.Tensor) else [self.items[i] for i in indices]
        return Split(items, self.targets[index], [self.paths[i] for i in indices])


def load_dataset(data_dir: str | None, config: TrainConfig) -> tuple[LabelledFiles, LabelledFiles | None]:
    """``(train, val)`` files from class folders or a manifest, split as configured.

    ``val`` is None when validation is a share of the training files: :func:`hold_out`
    takes it after decoding, so a file that cannot be read never takes a validation place.
    """
    check_one_source(data_dir, config.manifest)
    if config.manifest:
        data = read_manifest(config.manifest)
    elif data_dir:
        data = find_class_folders(data_dir)
    else:
        raise ParameterError("give a data folder or manifest=FILE.csv")
    if config.val_dir:
        # One class is enough to validate on, as to evaluate on; a cover picture per class is left out there too.
        val = find_class_folders(config.val_dir, min_classes=1, kind=data.kind)
        if val.kind != data.kind:  # before the class names, which then cannot match anyway
            raise DataError(f"{config.val_dir}: holds {val.kind} files but the training data holds {data.kind} files")
        unknown = sorted(set(val.classes) - set(data.classes))
        if unknown:
            raise DataError(f"{config.val_dir}: {listed(unknown, 'class', 'classes')} {'is' if len(unknown) == 1 else 'are'} not in the training data")
        index = data.class_to_idx
        val = LabelledFiles(
            classes=data.classes,
            samples=[(p, index[val.classes[t]]) for p, t in val.samples],
            kind=val.kind,
        )
        _check_apart(data, val, config.val_dir)
        return data, val
    if config.val_fold is not None:
        return split_by_fold(data, config.val_fold, config.manifest or data_dir)
    if config.val_split == 0:  # train on everything; the last epoch's model is kept
        return data, data.subset([])
    return data, None


def _check_apart(train: LabelledFiles, val: LabelledFiles, val_dir: str | os.PathLike) -> None:
    """DataError if a file of ``val`` is also one of ``train`` (``--val-dir`` naming the data
    folder, or a folder inside it, or a link to either): its score would be the training files'.
    Files are compared by the real path of their folder and their own name, so two names linked
    to one stored copy (a content-addressed store) stay two files."""
    real_folders: dict[Path, str] = {}  # each folder resolved once, not once per file

    def where(path: Path) -> str:
        if path.parent not in real_folders:
            real_folders[path.parent] = os.path.realpath(path.parent)
        return os.path.join(real_folders[path.parent], path.name)

    trained = {where(p) for p, _ in train.samples}
    shared = [p for p, _ in val.samples if where(p) in trained]
    if shared:
        raise DataError(f"{display_name(val_dir)}: {counted(len(shared), 'file')} of the validation folder "
                        f"{'is a training file' if len(shared) == 1 else 'are training files'} too (e.g. {display_name(shared[0])}); "
                        "validation needs files the model does not train on")


def hold_out(split: Split, config: TrainConfig) -> tuple[Split, Split]:
    """``(train, val)``: a stratified ``val_split`` share of the decoded ``split``, drawn with the run's seed."""
    share = held_out_share(config.to_dict())
    train_idx, val_idx = stratified_split(split.targets.tolist(), fraction=share, seed=config.seed)
    return split.subset(train_idx), split.subset(val_idx)


def decode_split(files: LabelledFiles, spec: ModelSpec, *, num_workers: int, progress: bool, desc: str,
                 training: bool = False) -> tuple[Split, list]:
    """Decode every file once; failures are skipped and returned as ``(path, reason)``. For the
    ``training`` files, :func:`warn_about_sample_rates` looks at their rates."""
    if files.kind == "audio":
        sample_rate = spec.features.sample_rate

        def decode(path: Path) -> tuple[np.ndarray, int]:  # the samples at the model's rate, and the file's rate
            samples, native_sr = load_audio(path)
            return resampled_to(samples, native_sr, sample_rate, display_name(path)), native_sr
    else:

        def decode(path: Path) -> np.ndarray:
            return load_image(path, channels=spec.in_chans, size=spec.image_size)

    items, failures = decode_all(files.paths, decode, num_workers=num_workers, progress=progress, desc=desc)
    for path, reason in failures:
        log.warning("skipping %s", naming(path, reason))
    keep = [i for i, item in enumerate(items) if item is not None]
    if files.kind == "audio":
        if training:
            warn_about_sample_rates([(files.classes[files.targets[i]], items[i][1]) for i in keep], spec.features)
        items = [None if item is None else item[0] for item in items]
    targets = torch.tensor([files.targets[i] for i in keep], dtype=torch.long)
    kept_items = [items[i] for i in keep]
    if files.kind == "image":
        kept_items = torch.stack(kept_items) if kept_items else torch.empty(0)
    return Split(kept_items, targets, [str(files.paths[i]) for i in keep]), failures


def warn_about_sample_rates(class_rates: list[tuple[str, int]], features: FeatureConfig) -> None:
    """Warn about training files' sample rates (``(class, Hz)`` per file) that a model with
    ``features`` would learn the wrong thing from: every file's bandwidth (half its rate) below the
    front-end's top frequency (its top mel bands hold nothing), or classes recorded with
    bandwidths no other class shares (the network can tell such classes apart by them alone).
    A bandwidth counts up to the front-end's top frequency: 44.1 and 48 kHz sound alike at 16 kHz."""
    if not class_rates:
        return
    top = features.max_frequency  # Hz the model hears

    def heard(rate: int) -> float:
        return min(rate / 2, top)

    highest = max(rate for _, rate in class_rates)
    if heard(highest) < top:
        log.warning("every training file is recorded at %d Hz or less, and the model hears up to %g Hz: its mel bands above "
                    "%g Hz hold nothing; features.sample_rate=%d suits these files", highest, top, highest / 2, highest)
    rates: dict[str, set[int]] = {}
    for name, rate in class_rates:
        rates.setdefault(name, set()).add(rate)
    bandwidths = {name: {heard(rate) for rate in its_rates} for name, its_rates in rates.items()}
    apart = [(a, b) for a, b in itertools.combinations(sorted(rates), 2) if not bandwidths[a] & bandwidths[b]]
    if apart:
        a, b = apart[0]

        def rates_of(name: str) -> str:
            return " or ".join(f"{rate} Hz" for rate in sorted(rates[name]))

        log.warning("class %r is recorded at %s and class %r at %s%s: a model can tell such classes apart by their "
                    "bandwidth alone; resample the files to one rate, or make sure the classes share their sources",
                    text_name(a), rates_of(a), text_name(b), rates_of(b), f" ({counted(len(apart) - 1, 'other pair')} too)" if len(apart) > 1 else "")


def warn_about_silence(class_peaks: list[tuple[str, float]]) -> None:
    """Warn about training files that are digital silence (``(class, loudest sample)`` per file:
    none above -90 dBFS), which the model would learn as a sound of their class, and name the
    classes that hold nothing else."""
    silent: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, peak in class_peaks:
        total[name] = total.get(name, 0) + 1
        silent[name] = silent.get(name, 0) + bool(is_silence(peak))
    count = sum(silent.values())
    if count:
        only = [name for name, n in silent.items() if n == total[name]]
        log.warning("%s of the training data %s digital silence (no sample above -90 dBFS), which the model learns as "
                    "a sound of %s class%s", counted(count, "file"), "is" if count == 1 else "are",
                    "its" if count == 1 else "their",
                    f"; {listed([repr(text_name(n)) for n in only], 'class', 'classes')} {'holds' if len(only) == 1 else 'hold'} nothing else" if only else "")


def check_classes(split: Split, files: LabelledFiles, source: str) -> None:
    """Refuse a class without a decoded file in ``split``: none listed in ``files`` (a manifest
    class whose rows are all in the validation fold), or every one unreadable."""
    classes = files.classes
    decoded = np.bincount(split.targets.numpy(), minlength=len(classes))
    in_manifest = np.bincount(np.asarray(files.targets, dtype=np.int64), minlength=len(classes))
    unlisted = [name for name, n in zip(classes, in_manifest) if n == 0]
    if unlisted:
        raise DataError(f"{source}: no file of {listed(unlisted, 'class', 'classes')}: the manifest lists {'it' if len(unlisted) == 1 else 'them'} only in the validation fold")
    empty = [name for name, n in zip(classes, decoded) if n == 0]
    if empty:
        raise DataError(f"{source}: no usable file left for {listed(empty, 'class', 'classes')}: every one was skipped")


def warn_about_unvalidated(classes: Sequence[str], val: Split) -> None:
    """Warn when validation has no file of some of ``classes``: a class with one usable file,
    which training keeps, or one a validation fold or folder lacks. Its accuracy is then unmeasured."""
    counts = np.bincount(val.targets.numpy(), minlength=len(classes))
    unseen = [repr(text_name(name)) for name, n in zip(classes, counts) if n == 0]
    if unseen:
        log.warning("validation has no file of %s: the validation scores say nothing of %s",
                    listed(unseen, "class", "classes"), "it" if len(unseen) == 1 else "them")


def crop_batch(waveforms: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """(B, length) random crops of longer clips; shorter clips placed at a random offset in zeros."""
    batch = np.zeros((len(waveforms), length), dtype=np.float32)
    for row, wave in zip(batch, waveforms):
        n = wave.shape[0]
        if n >= length:
            start = int(rng.integers(0, n - length + 1))
            row[:] = wave[start : start + length]
        else:
            start = int(rng.integers(0, length - n + 1))
            row[start : start + n] = wave
    return batch


# ---------------------------------------------------------------- model


def clip_seconds_for(durations: Sequence[float]) -> float:
    """Default training clip length: the 90th percentile duration rounded up to 0.1 s, in [0.1, 10] s."""
    seconds = float(np.percentile(durations, 90))
    return float(min(10.0, max(0.1, math.ceil(seconds * 10) / 10)))


def build_model(config: TrainConfig, classes: Sequence[str], kind: str, clip_seconds: float | None,
                base: SpecNet | None = None) -> SpecNet:
    """A new :class:`SpecNet` for ``classes``, from scratch or ImageNet weights; with ``config.init``,
    ``base`` (that model, loaded and checked to take ``kind``) made into one for ``classes``."""
    if base is not None:
        conflicts = init_conflicts(config, base.spec)
        if conflicts:
            raise InitConflict(config.init, conflicts)
        if tuple(classes) != base.spec.classes:  # a new final layer for new classes, even as many
            base.backbone.reset_classifier(len(classes))
        base.spec = dataclasses.replace(base.spec, classes=tuple(classes), clip_seconds=clip_seconds, extra={})
        return base
    in_chans = config.in_chans or (3 if kind == "image" else 1)
    features = config.feature_config() if kind == "audio" else None
    spec = ModelSpec(
        arch=config.model_arch(),
        arch_args=dict(config.arch_args),
        input_kind=kind,
        classes=tuple(classes),
        in_chans=in_chans,
        features=features,
        clip_seconds=clip_seconds if kind == "audio" else None,
        image_size=config.model_image_size() if kind == "image" else None,
    )
    return SpecNet(spec, pretrained=config.pretrained, weights=config.weights)


# ---------------------------------------------------------------- schedule


def get_lr(step: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to zero at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_split(model: SpecNet, split: Split, *, batch_size: int, device: torch.device, dist: Dist = Dist()) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (N, K) of every item, and the indices they belong to.

    Audio clips longer than the model's clip are cut into windows (hop = half a
    clip) whose probabilities are averaged, as ``specnet classify`` does: over the
    windows that are not digital silence, unless all of them are.
    With several ranks each rank scores every ``world_size``-th item.
    """
    model.eval()
    indices = list(range(dist.rank, len(split.targets), dist.world_size))
    if not indices:  # no data, or fewer items than ranks
        return torch.zeros(0, len(model.classes)), torch.tensor(indices, dtype=torch.long)
    if model.spec.input_kind == "image":
        probs = torch.zeros(len(indices), len(model.classes))
        for start in range(0, len(indices), batch_size):
            chunk = split.items[indices[start : start + batch_size]].to(device)
            probs[start : start + len(chunk)] = model(chunk).float().softmax(-1).cpu()
        return probs, torch.tensor(indices, dtype=torch.long)
    clip = model.spec.clip_samples
    hop = default_hop(clip)

    def windows() -> Iterator[tuple[int, np.ndarray]]:
        """(row, one window (clip,)), clip after clip, cut as ``specnet classify`` cuts them."""
        for row, i in enumerate(indices):
            cut = Windows(split.items[i], clip, hop)
            yield from ((row, cut[j]) for j in range(len(cut)))

    owners, silent, window_probs = [], [], []
    windows_left = windows()  # copied into one batch at a time: memory stays O(batch), however long the clips
    while chunk := list(itertools.islice(windows_left, batch_size)):
        batch = np.stack([w for _, w in chunk])
        owners += [row for row, _ in chunk]
        silent.append(silent_windows(batch))
        window_probs.append(model(torch.from_numpy(batch).to(device)).float().softmax(-1).cpu().numpy())
    probs, silent = np.concatenate(window_probs), np.concatenate(silent)
    bounds = np.searchsorted(owners, np.arange(len(indices) + 1))  # each clip's windows, in order, at least one
    means = np.stack([clip_mean(probs[a:b], silent[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])  # classify's mean
    return torch.from_numpy(means), torch.tensor(indices, dtype=torch.long)


def evaluate_split(model: SpecNet, split: Split, *, batch_size: int, device: torch.device, dist: Dist = Dist()) -> tuple[Scores, float]:
    """Scores and mean cross-entropy loss over ``split`` (reduced across ranks)."""
    probs, indices = predict_split(model, split, batch_size=batch_size, device=device, dist=dist)
    targets = split.targets[indices].numpy()
    confusion = torch.from_numpy(confusion_matrix(targets, probs.argmax(-1).numpy(), len(model.classes))).double()
    loss_sum = torch.tensor([log_loss_sum(probs.numpy(), targets)], dtype=torch.float64)
    dist.all_sum(confusion)
    dist.all_sum(loss_sum)
    scores = Scores(tuple(model.classes), confusion.long().numpy())
    return scores, float(loss_sum.item() / max(1, scores.n))


# ---------------------------------------------------------------- the run


def _loss_text(loss: float | None) -> str:
    return "skipped" if loss is None else f"{loss:.4f}"


def _print(message: str, *, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def train(
    data_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any], SpecNet], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a classifier on labelled files and write the run to ``out``.

    ``options`` are :class:`TrainConfig` fields; with ``config`` they replace its values. With
    ``resume=True`` and no ``config``, the data and each option not given (or given as None) are
    the run's own (:func:`run_options`), so ``train(None, out, resume=True)`` continues it. Returns
    the kept epoch's scores: ``epoch`` (from 0), ``train_loss`` (None if every step was skipped)
    and, with validation data, ``accuracy``, ``macro_f1``, ``loss`` and ``n`` (files) on it.
    Writes ``model.safetensors`` (kept model), ``checkpoint.pt`` (resume),
    ``config.json``, ``metrics.jsonl`` and ``curves.png``, each atomically.
    ``on_epoch_end(row, model)`` is called on every rank after each epoch's
    checkpoint, with that epoch's metrics row and the model they describe (the
    unwrapped model, or its weight average with ``ema_epochs``); an exception
    it raises stops the run, which ``resume=True`` continues.
    """
    if resume and overwrite:
        raise ParameterError("resume continues the run in out and overwrite replaces it: give one of them")
    check_path("data_dir", data_dir, what="a folder name", none=True)
    check_path("out", out, what="a folder name")
    if config is not None and not isinstance(config, TrainConfig):
        raise ParameterError(f"config must be a TrainConfig, got {type(config).__name__} "
                             "(or pass the options as keyword arguments: train(data_dir, out, epochs=5))")
    check_known_names(options, TrainConfig, "training option", tables={"features": FeatureConfig, "augment_args": aug.AugmentConfig})
    data_dir, config, device_of_the_run = _data_and_config(data_dir, out, config, options, resume=resume)
    check_outside_the_data(out, [data_dir, config.val_dir])
    device, dist = _device_and_processes(config, out, device_of_the_run=device_of_the_run)
    try:
        amp_dtype = autocast_dtype(device, config.amp)
        return _locked_run(data_dir, RunFiles(out), config, device, dist, amp_dtype, resume=resume, overwrite=overwrite,
                           quiet=quiet or not dist.is_main, on_epoch_end=on_epoch_end)
    finally:
        if dist.owns_group:
            # Leave the group before exit, however the run ended: a gloo group still alive at
            # interpreter shutdown can abort the process ("terminate called without an active exception").
            torch.distributed.destroy_process_group()


def _locked_run(data_dir, files: RunFiles, config: TrainConfig, device: torch.device, dist: Dist, amp_dtype: torch.dtype | None,
                *, resume: bool, overwrite: bool, quiet: bool, on_epoch_end) -> dict[str, Any]:
    """:func:`_run` in ``files.dir``, which rank 0 locks against other processes and prepares
    (``resume``, ``overwrite``); a run that fails before writing anything leaves no folder behind."""
    if files.dir.exists() and not files.dir.is_dir():
        raise SpecnetError(f"{files.dir}: exists and is not a folder")
    # A run that fails before writing anything leaves no empty folder: neither its own nor the
    # missing folders above it that the lock makes (innermost first).
    created = [folder for folder in (files.dir, *files.dir.parents) if not folder.exists()]
    # Lock first: --overwrite must not delete the files of a run another process is writing.
    lock = RunLock(files.dir) if dist.is_main else None
    if lock:
        lock.acquire()
    try:
        if dist.is_main:
            files.prepare(resume=resume, overwrite=overwrite)
        with cudnn_autotuned(device), _callers_random_streams_kept(device), _warnings_from_rank_0(dist):
            torch.manual_seed(config.seed)
            best = _run(data_dir, files, config, device, dist, amp_dtype, resume=resume, quiet=quiet, on_epoch_end=on_epoch_end)
        if dist.world_size > 1:
            torch.distributed.barrier()  # leave together: rank 0 still writes the curves
        return best
    finally:
        if lock:
            lock.release()
            with contextlib.suppress(OSError):  # not empty: the run wrote something, and its parents hold it
                for folder in created:
                    folder.rmdir()


def _data_and_config(data_dir: str | os.PathLike | None, out: str | os.PathLike, config: TrainConfig | None,
                     options: dict[str, Any], *, resume: bool) -> tuple[str | os.PathLike | None, TrainConfig, bool]:
    """The data folder and options of :func:`train`'s run: ``options`` over ``config`` (or over the
    defaults), and for a resume without ``config`` the run's own in ``out`` (:func:`run_options`)
    where not given. The third value says whether the device is the run's own, not given."""
    device_of_the_run = False
    if resume and config is None and (saved := run_options(out, required=not (data_dir or options.get("manifest")))):
        device_of_the_run = options.get("device") is None and "device" in saved
        options = with_run_options(saved, {"data_dir": data_dir, **options})  # the run's own options, unless given
        data_dir = options.pop("data_dir", None)
    config = dataclasses.replace(config, **options) if config else TrainConfig(**options)
    return data_dir, config, device_of_the_run


def _device_and_processes(config: TrainConfig, out: str | os.PathLike, *, device_of_the_run: bool) -> tuple[torch.device, Dist]:
    """The device this process trains on (with several torchrun processes, the one
    :func:`setup_distributed` gives it), and its place among them, their group joined. A device
    not here is a GivenValueError, naming the run in ``out`` where it is ``device_of_the_run``."""
    try:
        device = resolve_device(config.device)
    except GivenValueError as exc:
        raise the_runs_setting(out, exc) if device_of_the_run else exc from None
    dist = setup_distributed(device)
    if dist.world_size > 1:
        device = dist.device
    return device, dist


@contextlib.contextmanager
def _warnings_from_rank_0(dist: Dist) -> Iterator[None]:
    """Every rank decodes the same files and would warn about them alike: only rank 0's warnings
    are said (every rank's errors still are)."""
    if dist.is_main:
        yield
        return

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    log.addFilter(errors_only)
    try:
        yield
    finally:
        log.removeFilter(errors_only)


@contextlib.contextmanager
def _callers_random_streams_kept(device: torch.device) -> Iterator[None]:
    """Give the caller's random streams back after the run seeds its own: the CPU's, every CUDA
    device's that is in use (``torch.manual_seed`` seeds them all) and the run's CUDA or MPS device's."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    if device.type == "cuda" and (device.index or 0) not in cuda:
        cuda.append(device.index or 0)
    with contextlib.ExitStack() as kept:
        kept.enter_context(torch.random.fork_rng(devices=cuda))
        if device.type == "mps":
            kept.enter_context(torch.random.fork_rng(devices=[device], device_type="mps"))
        yield


@contextlib.contextmanager
def cudnn_autotuned(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN pick the fastest kernels for the run's fixed input shapes, and give
    the caller's setting back afterwards. Those kernels do not all repeat bit for bit, so a
    CUDA run repeats closely, where a CPU run repeats exactly."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = was or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def _run(data_dir, files: RunFiles, config: TrainConfig, device: torch.device, dist: Dist, amp_dtype: torch.dtype | None, *,
         resume: bool, quiet: bool, on_epoch_end) -> dict[str, Any]:
    """The run :func:`train` describes, in ``files.dir`` (prepared for it), on ``device`` in this process
    of ``dist``, with autocast to ``amp_dtype`` (None: float32). Returns the kept epoch's scores."""
    progress = not quiet and sys.stderr.isatty()
    train_files, val_files = load_dataset(str(data_dir) if data_dir else None, config)
    _check_options_suit(config, train_files.kind)
    checkpoint = load_checkpoint(files.checkpoint) if resume and files.checkpoint.exists() else None
    # Built before decoding, so that a wrong ImageNet weight file or an option the init model
    # contradicts is reported at once; its spec tells decoding the sample rate or image size.
    # The clip length, measured on the decoded data, comes after.
    model = _starting_model(config, train_files, files.checkpoint, checkpoint)
    _check_clip_seconds(config, model.spec)
    data = _decoded_data(train_files, val_files, model.spec, config, progress=progress)
    model.spec = spec = dataclasses.replace(model.spec, clip_seconds=_clip_seconds(config, model.spec, data.train))

    steps_per_epoch = len(batch_bounds(len(data.train.targets) // dist.world_size, config.batch_size))  # see Dist.shard
    # Counted as one process would, so a run takes as many epochs on one GPU as on several.
    steps_alone = len(batch_bounds(len(data.train.targets), config.batch_size))
    resolved = _resolved_config(config, data_dir, spec, data, epochs=int(config.epochs or default_epochs(steps_alone)),
                                precision=_precision_name(amp_dtype))
    epochs, trains_on = _run_length(files, checkpoint, resolved, config, resume=resume, warn=dist.is_main)
    resolved["epochs"] = epochs
    if dist.is_main:
        files.clear_previous()
        if trains_on:  # else the run keeps its own
            atomic_write(files.config, json_text(resolved, indent=2, default=str) + "\n")

    if checkpoint is None and not config.init:  # else the weights loaded hold them
        _fit_normalisation(model, data.train, config.batch_size)
    model.to(device)
    if config.channels_last and device.type != "mps":
        model.backbone.to(memory_format=torch.channels_last)  # measurably faster convolutions on CPU
    trainer = _Trainer.build(model, config, device, dist, amp_dtype, steps_per_epoch=steps_per_epoch, epochs=epochs)
    start_epoch, best, history = 0, None, []
    if checkpoint is not None:
        start_epoch, best, history = _resumed(trainer, checkpoint, files.checkpoint, validates=data.validates)
        _print(f"resuming {display_name(files.dir)} after epoch {start_epoch}", quiet=quiet)
    length = _epochs_text(epochs, by_default=config.epochs is None and start_epoch == 0, steps_alone=steps_alone)
    _print(_announcement(spec, data, length, n_params=sum(p.numel() for p in _trainable_parameters(model)), device=device), quiet=quiet)
    record = _Record(history, best, epochs_since_best=0 if best is None else start_epoch - 1 - best["epoch"])
    out_of_patience = start_epoch < epochs and not trains_on  # a resumed run, then
    if start_epoch >= epochs or out_of_patience:
        _print(_nothing_to_train(start_epoch, epochs, record, config.patience), quiet=quiet)
    _train_epochs(trainer, data, record, range(start_epoch, start_epoch if out_of_patience else epochs), epochs=epochs,
                  config=config, device=device, dist=dist, files=files, spec=spec, resolved=resolved,
                  quiet=quiet, progress=progress, on_epoch_end=on_epoch_end)
    if dist.is_main and record.history:
        from .plots import plot_curves

        plot_curves(record.history, files.curves, title=f"{spec.arch} on {Path(str(data_dir or config.manifest)).name}")
    return dict(record.best or {})


@dataclass
class _Data:
    """A run's data, decoded: the ``train`` and ``val`` splits, the files listed for them
    (``val_files`` None where ``val`` is a share of the training files, held out after decoding),
    and the ``(path, reason)`` of each file skipped, the training files' first."""

    train_files: LabelledFiles
    val_files: LabelledFiles | None
    train: Split
    val: Split
    skipped: list[tuple[Path, str]]

    @property
    def kind(self) -> str:
        """"audio" or "image"."""
        return self.train_files.kind

    @property
    def validates(self) -> bool:
        """Whether the run validates: not with ``val_split=0``, where it keeps the last epoch's model."""
        return self.val_files is None or len(self.val_files.samples) > 0


def _check_options_suit(config: TrainConfig, kind: str) -> None:
    """:class:`OptionsForOtherData` where ``config`` sets an option that ``kind`` ("audio" or
    "image") data has no use for: an image size for sounds, features or a clip length for images;
    :class:`OptionValueError` for image channels other than grey or RGB, which no file is read as."""
    if kind == "audio" and config.image_size is not None:
        raise OptionsForOtherData(["image_size"], kind)
    if kind == "image" and (config.features or config.clip_seconds is not None):
        given = [f"features.{key}" for key in features_given(config)]
        raise OptionsForOtherData(given + (["clip_seconds"] if config.clip_seconds is not None else []), kind)
    if kind == "image" and config.in_chans not in (None, 1, 3):  # else every file is skipped, one warning each
        raise OptionValueError("in_chans", config.in_chans, "must be 1 (grey) or 3 (RGB) for image files")


def _starting_model(config: TrainConfig, train_files: LabelledFiles, checkpoint_path: Path, checkpoint: dict[str, Any] | None) -> SpecNet:
    """The model the run trains, for ``train_files``' classes and kind, still without a clip length:
    a new one, or with ``config.init`` that model made into one. ``checkpoint`` is the one a
    resumed run loaded from ``checkpoint_path`` (None for a new run)."""
    kind = train_files.kind
    # A checkpoint holds every weight, so a resumed run reads no ImageNet weights, and the network
    # it holds stands in for the init model: either file may be gone by now.
    # (A checkpoint written before it held its network's spec still needs the init model file.)
    resumed = checkpoint is not None
    if config.init:
        base = (checkpoint_network(checkpoint_path, checkpoint) if resumed and "spec" in checkpoint
                else _init_model(config.init, checkpoint_path if resumed else None))
        if base.spec.input_kind != kind:
            raise DataError(f"{config.init}: is an {base.spec.input_kind} model, and the data holds {kind} files")
    else:
        base = None
    return build_model(dataclasses.replace(config, pretrained=False, weights=None) if resumed else config,
                       train_files.classes, kind, None, base)


def _init_model(init: str, older_checkpoint: Path | None) -> SpecNet:
    """The ``init`` model a run starts from, or that a resume of ``older_checkpoint`` (one that
    does not hold its network's spec, written by an earlier version) still needs."""
    try:
        return load_model_file(resolve_model(init)[1])
    except ModelFileError as exc:
        if older_checkpoint is None:
            raise
        raise ModelFileError(f"{exc}; {older_checkpoint}, written by an earlier specnet, does not hold its network: "
                             "put the init model back to resume, or pass overwrite=True to start the run again") from None


def _check_clip_seconds(config: TrainConfig, spec: ModelSpec) -> None:
    """:class:`OptionValueError` where an audio model with ``spec``'s features cannot take the given
    ``clip_seconds`` (a model file must hold one FFT window): said before the data is decoded."""
    if spec.input_kind == "audio" and config.clip_seconds:
        problem = clip_seconds_problem(config.clip_seconds, spec.features)
        if problem:
            raise OptionValueError("clip_seconds", config.clip_seconds, problem)


def _decoded_data(train_files: LabelledFiles, val_files: LabelledFiles | None, spec: ModelSpec, config: TrainConfig, *,
                  progress: bool) -> _Data:
    """Decode ``train_files`` and ``val_files`` for a model with ``spec`` (or hold the configured
    share of the training files out, where ``val_files`` is None), with progress bars on stderr
    where ``progress``; checked by :func:`_check_decoded`."""
    desc = "decoding" if val_files is None else "decoding train"  # None: validation is held out after decoding
    train_split, train_failures = decode_split(train_files, spec, num_workers=config.num_workers, progress=progress, desc=desc,
                                               training=True)
    if val_files is None:
        (train_split, val_split), val_failures = hold_out(train_split, config), []
    else:
        val_split, val_failures = decode_split(val_files, spec, num_workers=config.num_workers, progress=progress, desc="decoding val")
    data = _Data(train_files, val_files, train_split, val_split, train_failures + val_failures)
    _check_decoded(data)
    return data


def _check_decoded(data: _Data) -> None:
    """DataError where a class has no training file left, or validation none at all; warnings about
    silent training files and classes that validation lacks."""
    check_classes(data.train, data.train_files, "training data")
    if data.kind == "audio":  # the files trained on, a held-out share left out
        classes = data.train_files.classes
        warn_about_silence([(classes[target], loudest_sample(wave)) for wave, target in zip(data.train.items, data.train.targets.tolist())])
    if data.validates and len(data.val.targets) == 0:
        raise DataError("no usable validation file: add files or change val_split=, val_fold= or val_dir=")
    if data.validates:
        warn_about_unvalidated(data.train_files.classes, data.val)


def _clip_seconds(config: TrainConfig, spec: ModelSpec, train: Split) -> float | None:
    """The training crop length in seconds of an audio model with ``spec``'s features (None for an
    image model): ``config.clip_seconds``, else :func:`clip_seconds_for` the ``train`` clips, and
    at least one FFT window, which a model file must hold."""
    if spec.input_kind != "audio":
        return None
    if config.clip_seconds:
        return config.clip_seconds
    rate = spec.features.sample_rate
    shortest = math.ceil(spec.features.min_clip_samples / rate * 10) / 10
    return max(shortest, clip_seconds_for([len(w) / rate for w in train.items]))


def _resolved_config(config: TrainConfig, data_dir, spec: ModelSpec, data: _Data, *, epochs: int, precision: str) -> dict[str, Any]:
    """What ``config.json`` says of the run: ``config``'s options with the values the run settled
    on (``epochs``, the clip length and classes of ``spec``, the autocast ``precision``, the real
    paths of the init model and weights), and under "data" what it trains and validates on: the
    source read (``data_dir`` or the manifest), the counts, the files skipped and a digest of the files."""
    resolved = config.to_dict() | {"epochs": epochs, "clip_seconds": spec.clip_seconds, "val_split": held_out_share(config.to_dict()),
                                   "classes": list(spec.classes), "input_kind": data.kind, "precision": precision, "arch": spec.arch,
                                   "image_size": list(spec.image_size) if spec.image_size else None,
                                   "init": real_file(config.init), "weights": real_file(config.weights)}
    resolved["data"] = {
        # A resumed run must read the same data, however its paths are spelled.
        "source": text_name(os.path.realpath(config.manifest or data_dir)),
        "val_source": text_name(os.path.realpath(config.val_dir)) if config.val_dir else None,
        "train_files": len(data.train.targets),
        "val_files": len(data.val.targets),
        "skipped": len(data.skipped),
        "skipped_files": [{"path": text_name(p), "reason": unnamed(p, r)} for p, r in data.skipped],
        "class_counts": {name: int(n) for name, n in zip(spec.classes, np.bincount(data.train.targets.numpy(), minlength=len(spec.classes)))},
        "files": files_digest(data.train_files, data.val_files),  # which files, labels and sizes: not only how many
    }
    return resolved


def _run_length(files: RunFiles, checkpoint: dict[str, Any] | None, resolved: dict[str, Any], config: TrainConfig, *,
                resume: bool, warn: bool) -> tuple[int, bool]:
    """``(epochs, trains_on)``: how many epochs the run has in all (``resolved["epochs"]``, or a
    resumed run's own where ``config.epochs`` is None, so that its schedule does not jump), and
    whether a resumed run has any left to train. Refuses a ``checkpoint`` written with other options
    (:func:`checked_resume`); with ``warn``, says that a resumed run changes length, or that there
    is no checkpoint to ``resume``."""
    epochs = resolved["epochs"]
    if checkpoint is None:
        if resume and warn:
            log.warning("%s: no checkpoint to resume from; starting a new run", display_name(files.dir))
        return epochs, True
    saved = checked_resume(files, checkpoint, resolved)
    if config.epochs is None:  # the run's own length (a default or a flag), so the schedule does not jump
        epochs = int(saved["epochs"])
    trains_on = resume_trains(checkpoint, epochs, config.patience)
    if config.epochs is not None and epochs != int(saved["epochs"]) and warn and trains_on:
        log.warning(
            "resuming a %d-epoch run as a %d-epoch one: the learning rate follows the new length from here, "
            "so the result is not what an uninterrupted %d-epoch run gives", int(saved["epochs"]), epochs, epochs,
        )
    return epochs, trains_on


def _fit_normalisation(model: SpecNet, train: Split, batch_size: int) -> None:
    """Fit ``model``'s input normalisation to the ``train`` split: its clips' centred crops (which
    draw nothing random) or its images, ``batch_size`` at a time."""
    model.standardize.fit(_stat_batches(model, train, model.spec.clip_samples, batch_size))


def _resumed(trainer: _Trainer, checkpoint: dict[str, Any], path: Path, *, validates: bool) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    """Load into ``trainer`` the state ``checkpoint`` (read from ``path``) holds. Returns the epoch
    to start from (from 0), the kept epoch's scores (None before one was kept; with the validation
    scores the run compares where it ``validates``) and metrics.jsonl's rows so far; a
    ModelFileError naming ``path`` where the checkpoint is damaged."""
    try:
        trainer.load_state(checkpoint)
        best = json.loads(checkpoint["best"]) if checkpoint.get("best") else None
        history = json.loads(checkpoint["history"])
        _check_record(best, history, validates=validates)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: torch's shape mismatches
        raise ModelFileError(
            f"{path}: damaged checkpoint ({type(exc).__name__}: {one_line(' '.join(str(exc).split()))[:200]}); "
            "pass overwrite=True to start the run again"
        ) from None
    return checkpoint["epoch"] + 1, best, history


def _check_record(best: Any, history: Any, *, validates: bool) -> None:
    """ValueError unless a checkpoint's record of epochs is one a run writes: ``history`` a list of
    rows, and ``best`` None or the kept epoch's scores, an object with its epoch number and, where
    the run ``validates``, the accuracy and loss a better epoch is measured against."""
    needed = {"epoch": is_integer} | ({"accuracy": is_finite_number, "loss": is_finite_number} if validates else {})
    if not isinstance(history, list):
        raise ValueError(f"its history is a {type(history).__name__}, not a list of epochs")
    if best is not None and not (isinstance(best, dict) and all(check(best.get(key)) for key, check in needed.items())):
        raise ValueError(f"its kept epoch is not a run's record of one: {one_line(json.dumps(best))[:80]}")


def _epochs_text(epochs: int, *, by_default: bool, steps_alone: int) -> str:
    """"N epochs", and where a new run's length ``by_default`` is more than DEFAULT_EPOCHS (a small
    training set of ``steps_alone`` optimiser steps an epoch, as one process takes them), why so many."""
    length = counted(epochs, "epoch")
    if by_default and epochs > DEFAULT_EPOCHS:
        length += (f" (a small training set: the most the default gives, {steps_alone} steps an epoch)" if epochs == MAX_DEFAULT_EPOCHS
                   else f" (a small training set: at least {MIN_STEPS:,} steps in all, {steps_alone} an epoch)")
    return length


def _announcement(spec: ModelSpec, data: _Data, length: str, *, n_params: int, device: torch.device) -> str:
    """The line that starts a run: what it trains (``spec``) on how much of ``data``, for how
    long (``length``), with how many trainable parameters, on which device, and the files skipped."""
    return (f"training {spec.arch} on {len(data.train.targets)} {data.kind} files ({len(spec.classes)} classes), "
            f"validating on {len(data.val.targets)}; {length}; {n_params:,} trainable parameters; device {device}"
            + (f"; {counted(len(data.skipped), 'file')} skipped" if data.skipped else ""))


@dataclass(frozen=True)
class _Validation:
    """An epoch's scores on the validation split, and its mean cross-entropy ``loss`` there."""

    scores: Scores
    loss: float

    def row(self) -> dict[str, float]:
        """Its entries of the epoch's metrics.jsonl row."""
        return {"val_loss": self.loss, "val_accuracy": self.scores.accuracy, "val_macro_f1": self.scores.macro_f1}

    def text(self) -> str:
        """Its part of the epoch's line on stdout."""
        return f"  val_loss {self.loss:.4f}  val_acc {self.scores.accuracy:.4f}  val_f1 {self.scores.macro_f1:.4f}"


@dataclass
class _Record:
    """The run's epochs so far: ``history``, the rows of metrics.jsonl; ``best``, the kept epoch's
    scores (None before an epoch is kept); and the epochs trained since that one."""

    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    epochs_since_best: int

    def patience_stops(self, patience: int | None) -> bool:
        """Whether ``patience`` (epochs without a better model) stops the run here."""
        return patience_stops(patience, None if self.best is None else self.epochs_since_best)

    def improved_by(self, validation: _Validation | None, *, keep: str) -> bool:
        """Whether an epoch with ``validation`` (None: the run does not validate) is the one to keep:
        every epoch with ``keep="last"``, else the one of best accuracy, the lower loss breaking ties."""
        if validation is None:
            return True  # without validation the latest model is the one kept
        return (keep == "last" or self.best is None
                or (validation.scores.accuracy, -validation.loss) > (self.best["accuracy"], -self.best["loss"]))

    def add(self, row: dict[str, Any], validation: _Validation | None, *, improved: bool) -> None:
        """Add an epoch's metrics ``row``; where it ``improved``, the epoch becomes ``best``."""
        self.history.append(row)
        if improved:
            self.best = {"epoch": row["epoch"], "train_loss": row["train_loss"]}
            if validation is not None:
                scores = validation.scores
                self.best |= {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "loss": validation.loss, "n": scores.n}
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1


def _nothing_to_train(start_epoch: int, epochs: int, record: _Record, patience: int | None) -> str:
    """Why a resumed run at ``start_epoch`` (from 0) trains no more: it has its ``epochs``, or its
    ``patience`` stops it where its ``record`` is."""
    if start_epoch >= epochs:
        return f"nothing to train: the run already has {counted(start_epoch, 'epoch')} of the {epochs} asked for"
    since = record.epochs_since_best
    return (f"nothing to train: no improvement in the run's last {counted(since, 'epoch')}, where "
            f"patience={patience} stops it (patience={since + 1} or more trains on)")


def _train_epochs(trainer: _Trainer, data: _Data, record: _Record, epoch_range: range, *, epochs: int, config: TrainConfig,
                  device: torch.device, dist: Dist, files: RunFiles, spec: ModelSpec, resolved: dict[str, Any],
                  quiet: bool, progress: bool, on_epoch_end: Callable[[dict[str, Any], SpecNet], None] | None) -> None:
    """Train the epochs of ``epoch_range`` (of ``epochs`` in all) until ``config.patience`` stops the
    run, adding each to ``record``. After each, rank 0 saves the model where it is the best (the
    kept model, of ``spec`` with the scores and the ``resolved`` options), and metrics.jsonl and the
    checkpoint in any case; the epoch's line is printed unless ``quiet``, and ``on_epoch_end`` called."""
    skipped = SkippedSteps()
    for epoch in epoch_range:
        if record.patience_stops(config.patience):
            _print(f"early stop: no improvement for {config.patience} epochs", quiet=quiet)
            break
        started = time.perf_counter()
        row = _trained_epoch(trainer, data.train, config, device, dist, epoch=epoch, progress=progress, skipped=skipped)
        validation = _validate(trainer.scored, data.val, config.batch_size * 2, device, dist, epoch=epoch) if data.validates else None
        if validation is not None:
            row |= validation.row()
        improved = record.improved_by(validation, keep=config.keep)
        row["seconds"] = time.perf_counter() - started
        record.add(row, validation, improved=improved)
        if dist.is_main:
            if improved:
                _save_kept_model(trainer.scored, spec, files.model, record.best, config, resolved)
            _save_progress(files, trainer, record, epoch, resolved, spec)
        _print(_epoch_line(row, validation, epochs, starred=improved and validation is not None), quiet=quiet)
        if on_epoch_end:
            on_epoch_end(dict(row), trainer.scored)


def _trained_epoch(trainer: _Trainer, split: Split, config: TrainConfig, device: torch.device, dist: Dist, *,
                   epoch: int, progress: bool, skipped: SkippedSteps) -> dict[str, Any]:
    """Train epoch ``epoch`` (from 0) on ``split`` (:func:`_train_epoch`) and give every rank rank 0's
    buffers. Returns the start of its metrics.jsonl row: epoch, train_loss, lr, and the steps skipped
    in it, where there were any (``skipped`` counts them over the run)."""
    skipped_before = skipped.counts()
    train_loss, lr = _train_epoch(trainer, split, config, device, dist, epoch=epoch, progress=progress, skipped=skipped)
    skipped_in_epoch, scaler_skips_in_epoch = (now - before for now, before in zip(skipped.counts(), skipped_before))
    dist.sync_buffers(trainer.model)
    if trainer.ema is not None:
        dist.sync_buffers(trainer.ema.module)
    row = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
    if skipped_in_epoch:
        row["skipped_steps"] = skipped_in_epoch
        log.warning("epoch %d: skipped %s with a non-finite loss or gradient", epoch + 1, counted(skipped_in_epoch, "step"))
    if scaler_skips_in_epoch:
        row["loss_scaler_skips"] = scaler_skips_in_epoch
    return row


def _validate(model: SpecNet, split: Split, batch_size: int, device: torch.device, dist: Dist, *, epoch: int) -> _Validation:
    """``model``'s scores on the validation ``split`` after epoch ``epoch`` (from 0), in batches of
    ``batch_size``; a TrainingError where its loss is not finite: the run has diverged."""
    scores, loss = evaluate_split(model, split, batch_size=batch_size, device=device, dist=dist)
    if not math.isfinite(loss):
        raise TrainingError(
            f"training diverged in epoch {epoch + 1}: the model's validation loss is {loss}; "
            "try a lower lr=, or amp=False"
        )
    return _Validation(scores, loss)


def _save_kept_model(model: SpecNet, spec: ModelSpec, path: Path, best: dict[str, Any], config: TrainConfig,
                     resolved: dict[str, Any]) -> None:
    """Save ``model`` in ``path`` as the run's model: its ``spec`` with the ``best`` epoch's scores
    (:class:`_Record`), a summary of the training (``config`` and ``resolved``) and the dataset."""
    metrics = {"epoch": best["epoch"], "train_loss": best["train_loss"]}
    if "accuracy" in best:  # validated
        metrics |= {"val_accuracy": best["accuracy"], "val_macro_f1": best["macro_f1"], "val_files": best["n"]}
    model.spec = spec.with_extra(metrics=metrics, training=_training_summary(config, resolved), dataset=config.dataset or None)
    save_model_file(model, path)
    model.spec = spec


def _save_progress(files: RunFiles, trainer: _Trainer, record: _Record, epoch: int, resolved: dict[str, Any], spec: ModelSpec) -> None:
    """Write metrics.jsonl and the checkpoint of the run after epoch ``epoch`` (from 0): the
    ``trainer``'s state, the ``record``, and the ``resolved`` options and ``spec`` a resume checks."""
    atomic_write(files.metrics, "".join(json.dumps(r) + "\n" for r in record.history))
    save_checkpoint(files.checkpoint, {
        **trainer.state(), "epoch": epoch,
        "best": json.dumps(record.best), "history": json.dumps(record.history), "config": json_text(resolved, default=str),
        "spec": json_text(spec_to_metadata(spec)),
    })


def _epoch_line(row: dict[str, Any], validation: _Validation | None, epochs: int, *, starred: bool) -> str:
    """The line printed after an epoch: its number of ``epochs``, the scores of its metrics ``row``
    and ``validation``, its time, and "*" where ``starred`` (a better model, kept)."""
    return (f"epoch {row['epoch'] + 1:3d}/{epochs}  train_loss {_loss_text(row['train_loss'])}"
            f"{validation.text() if validation is not None else ''}  lr {row['lr']:.2e}  "
            f"{row['seconds']:.1f}s" + ("  *" if starred else ""))

def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each training batch of an epoch's ``n`` items: ``batch_size`` each, and
    a last one of ``batch_size + 1`` where a batch of one item would be left after larger ones (batch
    norm cannot normalise one value per channel, as a VGG's 1 x 1 maps of small images give it)."""
    starts = list(range(0, n, batch_size))
    if batch_size > 1 and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def default_epochs(steps_per_epoch: int) -> int:
    """Epochs when ``TrainConfig.epochs`` is None, for ``steps_per_epoch`` optimiser steps an epoch.

    DEFAULT_EPOCHS, or on a small training set enough epochs for MIN_STEPS
    steps, at most MAX_DEFAULT_EPOCHS: 320 clips in batches of 32 get 240.
    Steps are counted as one process takes them, so several GPUs train as
    many epochs as one.
    """
    return max(DEFAULT_EPOCHS, min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_STEPS / max(1, steps_per_epoch))))


def _training_summary(config: TrainConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    return {
        "epochs": resolved["epochs"], "batch_size": config.batch_size, "lr": config.lr, "seed": config.seed,
        "augment": config.augment, "mixup": config.augment_config().mixup_alpha,
        "init": config.init, "pretrained": bool(config.pretrained or config.weights),
        "freeze_backbone": config.freeze_backbone, "ema_epochs": config.ema_epochs, "precision": resolved["precision"],
        # Counts only: a model file is shared, and this machine's paths are nobody else's business.
        "data": {k: v for k, v in resolved["data"].items() if k not in ("skipped_files", "source", "val_source", "files")},
    }


def _precision_name(amp_dtype: torch.dtype | None) -> str:
    return str(amp_dtype or torch.float32).removeprefix("torch.")


def _stat_batches(model: SpecNet, split: Split, clip: int | None, batch_size: int) -> Iterator[torch.Tensor]:
    """Un-normalised network inputs of the training set, for the statistics."""
    n = len(split.targets)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            if model.frontend is None:
                yield split.items[start : start + batch_size]
            else:
                waves = np.stack([fit_length(w, clip) for w in split.items[start : start + batch_size]])
                yield model.frontend(torch.from_numpy(waves)).unsqueeze(1)


@dataclass
class _Trainer:
    """What the training steps update, and how: the unwrapped ``model``, and ``net``, its backbone
    as the steps run it (in DistributedDataParallel with several processes); the optimiser and the
    float16 loss scaler (off otherwise); ``ema``, the weight average (None without ``ema_epochs``);
    the augmentation, the autocast precision (None: float32) and the learning-rate schedule's lengths
    in optimiser steps, as one process takes them."""

    model: SpecNet
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None
    augment: aug.AugmentConfig
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    warmup_steps: int
    total_steps: int

    @classmethod
    def build(cls, model: SpecNet, config: TrainConfig, device: torch.device, dist: Dist, amp_dtype: torch.dtype | None, *,
              steps_per_epoch: int, epochs: int) -> "_Trainer":
        """Everything that trains ``model`` (on ``device`` already) with ``config`` for ``epochs`` of
        ``steps_per_epoch`` steps: with ``freeze_backbone`` its trunk's parameters stop needing gradients first."""
        if config.freeze_backbone:
            _freeze_the_trunk(model)
        optimizer = _adamw(_trainable_parameters(model), lr=config.lr, weight_decay=config.weight_decay)
        net = model.backbone
        if dist.world_size > 1:
            net = torch.nn.parallel.DistributedDataParallel(model.backbone, device_ids=[device.index] if device.type == "cuda" else None)
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        augment = config.augment_config()
        # The averaged weights are the ones validated and saved; model keeps training.
        ema = _weight_average(model, config.ema_epochs * steps_per_epoch) if config.ema_epochs else None
        return cls(model, net, optimizer, scaler, ema, augment, amp_dtype, steps_per_epoch=steps_per_epoch,
                   warmup_steps=max(1, int(config.warmup_epochs * steps_per_epoch)), total_steps=steps_per_epoch * epochs)

    def state(self) -> dict[str, Any]:
        """The checkpoint's entries of what training changes: "model", "optimizer", "ema" and "scaler"
        (the last two empty where unused)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
        }

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        """Take the state :meth:`state` put in ``checkpoint`` (KeyError, ValueError, TypeError or
        RuntimeError where it does not fit)."""
        self.model.load_state_dict(checkpoint["model"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler.is_enabled() and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])

    @property
    def scored(self) -> SpecNet:
        """The model validated and saved: the weight average where there is one, else ``model``."""
        return self.ema.module if self.ema is not None else self.model

    def set_lr(self, step: int, *, peak: float) -> float:
        """Set and return the learning rate of optimiser step ``step`` (from 0, counted over the run)."""
        lr = get_lr(step, peak=peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


def _freeze_the_trunk(model: SpecNet) -> None:
    """Train ``model``'s head only: its other parameters stop needing gradients."""
    head = {id(p) for p in model.backbone.head_parameters()}
    for p in model.backbone.parameters():
        p.requires_grad_(id(p) in head)


def _trainable_parameters(model: SpecNet) -> list[torch.nn.Parameter]:
    """The parameters of ``model``'s backbone that need gradients: the ones the optimiser updates."""
    return [p for p in model.backbone.parameters() if p.requires_grad]


def _adamw(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``params``, with weight decay on weight matrices and kernels, none on biases and norms (1-d)."""
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def _weight_average(model: SpecNet, time_constant_steps: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers, updated every step."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 1.0 - 1.0 / max(1.0, time_constant_steps)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class SkippedSteps:
    """Counts optimiser steps skipped for a non-finite loss or gradient.

    One now and then is survivable (the step changes nothing: neither the weights nor the
    batch-norm statistics its forward pass measured); ``MAX_SKIPPED_STEPS`` in a row means
    the run has diverged, and :class:`TrainingError` stops it before a broken model can be
    saved. With float16, a finite loss whose scaled gradient overflowed is the loss scaler
    settling: it starts high (65,536) and halves its scale at each overflow, so a run's first
    steps and one now and then after (it doubles the scale every 2,000 good steps) skip one.
    Those are counted apart (``by_scaler``), with no warning, and not towards divergence: the
    scaler halves its way down to a scale of 1 in at most 16 of them, and from there a
    gradient that still overflows is no scaling matter, so its skips count as any other.
    """

    def __init__(self) -> None:
        self.reported = 0  # warned of and written to metrics.jsonl as skipped_steps
        self.by_scaler = 0
        self.in_a_row = 0

    def counts(self) -> tuple[int, int]:
        """``(reported, by_scaler)`` so far."""
        return self.reported, self.by_scaler

    def skip(self, epoch: int, loss: float, *, by_scaler: bool = False) -> None:
        if by_scaler:
            self.by_scaler += 1
            return
        self.reported += 1
        self.in_a_row += 1
        if self.in_a_row >= MAX_SKIPPED_STEPS:
            raise TrainingError(
                f"training diverged in epoch {epoch + 1}: {MAX_SKIPPED_STEPS} steps in a row had a non-finite "
                f"loss or gradient (last loss {loss:g}); try a lower lr=, or amp=False"
            )

    def applied(self) -> None:
        self.in_a_row = 0


def _train_epoch(trainer: _Trainer, split: Split, config: TrainConfig, device: torch.device, dist: Dist, *,
                 epoch: int, progress: bool, skipped: SkippedSteps) -> tuple[float | None, float]:
    """One pass of ``trainer`` over the training ``split`` (this process's share of it), epoch ``epoch``
    (from 0); ``skipped`` counts the steps skipped, and ``progress`` shows a bar on stderr.

    Returns the mean loss of the steps applied (None if all were skipped) and the last learning rate.
    """
    from tqdm.auto import tqdm

    model = trainer.model
    model.train()
    if config.freeze_backbone:
        model.backbone.features.eval()  # frozen means frozen: batch-norm statistics too
    # Everything random in this epoch comes from (seed, epoch): resuming repeats it exactly.
    torch.manual_seed(config.epoch_seed(epoch))
    generator = torch.Generator().manual_seed(config.epoch_seed(epoch))
    rng = np.random.default_rng([config.seed, epoch])
    order = dist.shard(torch.randperm(len(split.targets), generator=generator))
    trainable = _trainable_parameters(model)
    # What a forward pass in training mode changes besides the weights: kept to undo a skipped step.
    statistics = [b for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
    total_loss, seen, lr = 0.0, 0, config.lr
    with tqdm(total=len(order), desc=f"epoch {epoch + 1}", unit="file", disable=not progress, leave=False) as bar:
        for step_in_epoch, (start, stop) in enumerate(batch_bounds(len(order), config.batch_size)):
            idx = order[start:stop]
            inputs, targets = _training_batch(model, split, idx, rng, device)
            images, targets = _augmented(model, inputs, targets, trainer.augment, generator, channels_last=config.channels_last)
            lr = trainer.set_lr(epoch * trainer.steps_per_epoch + step_in_epoch, peak=config.lr)
            statistics_before = [b.clone() for b in statistics]
            loss, applied = _optimiser_step(trainer, images, targets, trainable, config, device)
            bar.update(len(idx))
            if not applied:
                with torch.no_grad():
                    for buffer, before in zip(statistics, statistics_before):
                        buffer.copy_(before)
                loss_value = loss.item()
                skipped.skip(epoch, loss_value, by_scaler=_scaler_settling(trainer.scaler, loss_value, dist))
                continue
            skipped.applied()
            if trainer.ema is not None:
                trainer.ema.update_parameters(model)
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    sums = dist.all_sum(torch.tensor([total_loss, seen], dtype=torch.float64))
    return (float(sums[0] / sums[1]) if sums[1] else None), lr


def _training_batch(model: SpecNet, split: Split, idx: torch.Tensor, rng: np.random.Generator,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The items ``idx`` (B,) of ``split`` on ``device``: a random ``rng`` crop of each waveform
    (B, clip samples), or the images (B, C, H, W); and their one-hot targets (B, K)."""
    if model.frontend is not None:
        inputs = torch.from_numpy(crop_batch([split.items[i] for i in idx.tolist()], model.spec.clip_samples, rng))
    else:
        inputs = split.items[idx]
    if device.type == "cuda":
        inputs = inputs.pin_memory()  # pinned, so the copy to the GPU overlaps compute
    inputs = inputs.to(device, non_blocking=True)
    targets = F.one_hot(split.targets[idx], len(model.classes)).float().to(device, non_blocking=True)
    return inputs, targets


@torch.no_grad()
def _augmented(model: SpecNet, inputs: torch.Tensor, targets: torch.Tensor, augment: aug.AugmentConfig,
               generator: torch.Generator, *, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's input images (B, C, F, T) for a batch of ``inputs`` (from :func:`_training_batch`),
    augmented with draws from ``generator``, and the ``targets`` (B, K) mixed up with them."""
    if model.frontend is not None:
        # Equalise, add noise and warp in absolute dB, then clamp to the peak, as the
        # front-end would have done for a clip recorded through another microphone.
        db = model.frontend.absolute_db(inputs)  # (B, F, T), float32 outside autocast
        db = aug.random_eq(db, augment.eq_db, generator)
        db = aug.random_noise(db, augment.noise_snr_db, generator)
        db = aug.random_warp(db, time_stretch=augment.time_stretch, pitch_shift=augment.pitch_shift, generator=generator)
        db = aug.random_time_warp(db, augment.time_warp, generator)
        logmel = clamp_to_peak(db, model.spec.features)
        logmel = aug.random_gain(logmel, augment.gain_db, generator)  # after the clamp: see random_gain
        images = model.logmel_to_images(logmel)
    else:
        images = model.standardize(inputs)
    images = aug.spec_augment(images, augment, generator)
    images, targets = aug.mixup(images, targets, augment.mixup_alpha, generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def _optimiser_step(trainer: _Trainer, images: torch.Tensor, targets: torch.Tensor, trainable: list[torch.nn.Parameter],
                    config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, bool]:
    """Forward and backward pass of ``trainer.net`` on ``images`` (B, C, F, T) with soft ``targets`` (B, K),
    and an optimiser step where the gradient of the ``trainable`` parameters is finite.
    Returns the loss (a 0-d tensor) and whether the step was applied."""
    optimizer, scaler = trainer.optimizer, trainer.scaler
    with torch.autocast(device_type=device.type, dtype=trainer.amp_dtype or torch.float32, enabled=trainer.amp_dtype is not None):
        logits = trainer.net(images)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    # A non-finite gradient would turn every weight into NaN: the step is skipped, as GradScaler
    # skips a float16 overflow (CPU bfloat16 convolutions were seen to give a NaN gradient from a
    # finite loss now and then). The norm is taken after DDP's all-reduce: every rank agrees.
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip or math.inf)
    applied = bool(torch.isfinite(grad_norm))
    if scaler.is_enabled():
        scaler.step(optimizer)  # skips the step itself when applied is False, and lowers the scale
        scaler.update()
    elif applied:
        optimizer.step()
    return loss, applied


def _scaler_settling(scaler: torch.amp.GradScaler, loss_value: float, dist: Dist) -> bool:
    """Whether a step skipped for a non-finite gradient was the float16 loss scaler settling (see
    :class:`SkippedSteps`): a finite loss on every rank, and a scale still above 0.5. Every rank
    calls it for the same step (the gradient norm is all-reduced), so they agree on the kind of skip."""
    nonfinite_losses = dist.all_sum(torch.tensor([0.0 if math.isfinite(loss_value) else 1.0], dtype=torch.float64))
    return scaler.is_enabled() and scaler.get_scale() > 0.5 and not nonfinite_losses.item()
