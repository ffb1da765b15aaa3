"""A training run's folder: the files it writes, the options it was started with, its
checkpoints, and the checks that a resume continues the same run.

``config.json`` holds the run's resolved options and ``checkpoint.pt`` everything a resume
needs (weights, optimiser, history, options, the network's spec); checkpoints are read
with ``torch.load(weights_only=True)``, never unpickled.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import GivenValueError, ModelFileError, ParameterError, SpecnetError
from .fileio import atomic_write, json_text, torch_load_safely
from .catalog import MODEL_FILE, bundled_models
from .modelspec import metadata_to_spec
from .network import SpecNet
from .paths import display_name, one_line, path_of_text, text_name, unnamed
from .trainconfig import OptionsError, TrainConfig, held_out_share

log = logging.getLogger("specnet")

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


#: Options that choose the same thing: giving one of a group replaces the others' saved values.
ALTERNATIVES = (("data_dir", "manifest"), ("val_dir", "val_fold", "val_split"))
#: Options that are tables: given entries go over the saved ones.
TABLES = ("arch_args", "features", "augment_args", "dataset")


def run_options(out: str | os.PathLike, *, required: bool = True) -> dict[str, Any]:
    """The options the run in ``out`` was started with: ``data_dir`` (None with a manifest) and
    :class:`TrainConfig` fields, data and files as real paths, so a run resumes from any folder.

    Read from the run's ``config.json``, or from its checkpoint's copy when ``config.json`` is
    missing or damaged (with a warning). When neither is there, a ParameterError; when neither
    can be read, a ModelFileError (one line) naming the file; with ``required=False`` (a resume
    given its data does not need them), ``{}`` in both cases. Resolved values go back as the choices that give
    them: ``val_split`` only when it chose the validation data, ``arch`` and ``image_size``
    only when the run chose them (:func:`_model_choices`).
    """
    files = RunFiles(out)
    problems = []
    checkpoint_unreadable = False  # then nothing given can resume the run: only overwrite=True helps
    for path, read in ((files.config, _read_config_json), (files.checkpoint, lambda p: json.loads(load_checkpoint(p)["config"]))):
        if path.is_file():
            try:
                saved = read(path)
            except ModelFileError as exc:
                problems.append(str(exc))
                checkpoint_unreadable = path == files.checkpoint
                continue
            try:
                options = _options_of_run(saved, path)
            except ModelFileError as exc:
                problems.append(str(exc))
                continue
            if problems:
                log.warning("%s; the run's options are read from %s", problems[0], display_name(path))
            return options
    if problems and required:
        if checkpoint_unreadable:  # read last, so the last problem; its message says overwrite=True
            raise ModelFileError(problems[-1])
        goes_on = "resume it" if files.checkpoint.is_file() else "start it again"  # no checkpoint: a new run
        raise ModelFileError(f"{problems[0]}; give the run's data and options to {goes_on}")
    if required:
        raise ParameterError(f"{display_name(files.dir)}: holds no run to resume (no {CONFIG_FILE} or {CHECKPOINT_FILE}); "
                             "give the data to start one")
    return {}


def _someone_elses(path: Path) -> bool:
    """Whether ``path``, a run folder's config.json, is JSON that names no data a run read: a file of
    the user's own, not one a run wrote (a damaged one, which cannot be told apart, is not)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return not (isinstance(saved, dict) and isinstance(saved.get("data"), dict))


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{display_name(path)}: cannot be read as a run's options ({one_line(str(exc))})") from None


def _options_of_run(saved: Any, path: Path) -> dict[str, Any]:
    """:func:`run_options` from a run's resolved options ``saved``, read from ``path``."""
    data = saved.get("data") if isinstance(saved, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("source"), str)
            and (saved.get("val_dir") is None or isinstance(data.get("val_source"), str))):
        raise ModelFileError(f"{display_name(path)}: not the options of a specnet run (the data it read are not named)")
    options = {name: saved[name] for name in TrainConfig.__dataclass_fields__ if name in saved}
    options |= {
        "manifest": path_of_text(data["source"]) if options.get("manifest") is not None else None,
        "val_dir": path_of_text(data["val_source"]) if options.get("val_dir") is not None else None,
        "val_split": held_out_share(options),
        **_model_choices(saved),
    }
    try:
        TrainConfig(**options)
    except SpecnetError as exc:  # a hand-edited file
        raise ModelFileError(f"{display_name(path)}: {exc}") from None
    return options | {"data_dir": None if options["manifest"] else path_of_text(data["source"])}


def _model_choices(config: dict[str, Any]) -> dict[str, Any]:
    """``arch`` and ``image_size`` of a run's resolved options as the run chose them: None for
    a run from ``init`` (the model's own), ``image_size`` None unless the data are images."""
    from_init = bool(config.get("init"))
    return {"arch": None if from_init else config.get("arch"),
            "image_size": config.get("image_size") if config.get("input_kind") == "image" and not from_init else None}


def patience_stops(patience: int | None, epochs_since_best: int | None) -> bool:
    """Whether early stopping ends a run whose best epoch lies ``epochs_since_best`` epochs
    back (None: no best epoch yet)."""
    return patience is not None and epochs_since_best is not None and epochs_since_best >= patience


def _epochs_since_best(checkpoint: dict[str, Any]) -> int | None:
    """How many epochs back ``checkpoint``'s best epoch lies; None without one. A damaged
    ``best`` counts as none here; loading the checkpoint says so."""
    try:
        return checkpoint["epoch"] - json.loads(checkpoint["best"])["epoch"] if checkpoint.get("best") else None
    except (ValueError, TypeError, KeyError):
        return None


def resume_trains(checkpoint: dict[str, Any], epochs: int, patience: int | None) -> bool:
    """Whether resuming ``checkpoint`` trains: fewer than ``epochs`` epochs are done and
    ``patience`` does not stop the run where it is."""
    return checkpoint["epoch"] + 1 < epochs and not patience_stops(patience, _epochs_since_best(checkpoint))


def real_file(value: Any) -> Any:
    """``value`` as a real path when it names a file (an ``init`` model or ImageNet weights), so
    a run reads the same file from any folder, also once the file is gone (a resume reads it no
    more); else as it is (a bundled model's name, None)."""
    if not (isinstance(value, str) and value) or value in bundled_models():  # a bundled name wins, as in resolve_model
        return value
    return os.path.realpath(os.path.expanduser(value))


def without_replaced(options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``options`` without each :data:`ALTERNATIVES` group of which ``given`` sets a member (not
    None): a given manifest replaces a data folder, a given val_fold a val_split. A given data
    folder also replaces a val_fold, which only a manifest's folds can mean."""
    replaced = {name for group in ALTERNATIVES if any(given.get(name) is not None for name in group) for name in group}
    if given.get("data_dir") is not None:
        replaced.add("val_fold")
    return {name: value for name, value in options.items() if name not in replaced}


def with_run_options(saved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` options over a run's ``saved`` ones (:func:`run_options`): a given member of
    an :data:`ALTERNATIVES` group replaces the group, a given table's entries go over the saved
    table's, any other given option replaces the saved one; a None leaves the saved value."""
    given = {name: value for name, value in given.items() if value is not None}  # None: not given
    merged = without_replaced(saved, given)
    for name, value in given.items():
        both_tables = name in TABLES and isinstance(value, dict) and isinstance(merged.get(name), dict)
        merged[name] = {**merged[name], **value} if both_tables else value
    return merged


def _of_the_data(setting: str) -> bool:
    """Whether a run's ``setting`` (a name in config.json) comes from its data, not from an option
    given: the data's counts and files (``data.*``), its classes and its kind."""
    return setting.startswith("data.") or setting in ("classes", "input_kind")


class OptionsDiffer(OptionsError):
    """A resumed run given other options or data than its checkpoint's: ``differences`` holds
    ``(option, value then, value now)``, the data's as ``data.files``, ``data.source`` ..."""

    def __init__(self, checkpoint: Path, differences: list[tuple[str, Any, Any]], advice: str) -> None:
        self.checkpoint, self.differences, self.advice = checkpoint, differences, advice
        super().__init__()

    def describe(self, name: Callable[[str], str]) -> str:
        """The message, with each option as ``name`` says it (the data's as they are)."""
        def said(option: str) -> str:
            return option if _of_the_data(option) else name(option).removesuffix("=")

        def listed_changes(differences: list[tuple[str, Any, Any]]) -> str:
            return "; ".join(f"{said(option)}: which files, their classes or sizes" if option == "data.files" else
                             f"{said(option)}: {_shown(was)} then, {_shown(now)} now" for option, was, now in differences)

        options = [d for d in self.differences if not _of_the_data(d[0])]
        data = [d for d in self.differences if _of_the_data(d[0])]
        if any(option == "data.source" for option, _, _ in data):  # another folder: its counts say nothing more
            data = [d for d in data if d[0] in ("data.source", "data.val_source")]
        parts = ([f"was written with different options ({listed_changes(options)})"] if options else []) + (
            [f"was trained on other data ({listed_changes(data)})"] if data else [])
        return f"{self.checkpoint}: {' and '.join(parts)}; {self.advice}, or pass overwrite=True to start again"



class RunFiles:
    """Where a run writes: model, checkpoint, config, metrics, curves."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.dir = Path(out)
        self._replace = False  # set by prepare(overwrite=True): clear_previous() removes the old run
        self.model = self.dir / MODEL_FILE
        self.checkpoint = self.dir / CHECKPOINT_FILE
        self.config = self.dir / CONFIG_FILE
        self.metrics = self.dir / METRICS_FILE
        self.curves = self.dir / CURVES_FILE

    @property
    def own_files(self) -> tuple[Path, ...]:
        """Every file the run writes here (its lock and the temporary files of atomic writes aside)."""
        return (self.model, self.checkpoint, self.config, self.metrics, self.curves)

    def prepare(self, *, resume: bool, overwrite: bool) -> None:
        """Check the run folder (which the run's lock has made) holds no run, or one that ``resume``
        or ``overwrite`` allows, and remove the temporary files a killed run left behind."""
        if not overwrite and not self.checkpoint.exists() and _someone_elses(self.config):  # a new run would replace it
            raise SpecnetError(f"{self.config}: not the options of a specnet run; choose another folder for the run, "
                               "or pass overwrite=True to replace it")
        previous = [p for p in self.own_files if p.exists()]
        if previous and not (resume or overwrite):
            raise SpecnetError(
                f"{self.dir}: already holds a run ({previous[0].name}); pass resume=True to continue it "
                "or overwrite=True to start again"
            )
        # A run killed in its first epoch has none of these (its curves come once an epoch has its checkpoint).
        trained = [p for p in (self.model, self.metrics, self.curves) if p.exists()]
        if trained and resume and not self.checkpoint.exists():
            raise SpecnetError(
                f"{self.dir}: holds a run ({trained[0].name}) but no {self.checkpoint.name} to resume from; "
                "pass overwrite=True to start again"
            )
        # The previous run's files go only once the new run has its data and model (clear_previous).
        self._replace = overwrite
        # Temporary files of atomic writes a killed run left behind (a checkpoint's can be
        # hundreds of MB); the caller holds the run's lock, so no live process owns them.
        for p in self.own_files:
            for leftover in self.dir.glob(f".{p.name}.*.tmp"):
                leftover.unlink(missing_ok=True)

    def clear_previous(self) -> None:
        """With overwrite=True, remove the previous run's files: called when the new run is
        about to write its own, so a run that fails before that leaves the old one whole."""
        if self._replace:
            run = self.own_files
            replaced = [p for p in run if p.exists()]
            for p in replaced:
                p.unlink()
            others = sorted(p.name for p in self.dir.iterdir() if not p.name.startswith(".") and p not in run)
            if replaced and others:  # the user's own files stay; say so, since they may describe the old run
                named = ", ".join(map(display_name, others[:5])) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
                log.warning("%s: kept %s, which %s not the run's own files (and may be about the run replaced)",
                            display_name(self.dir), named, "is" if len(others) == 1 else "are")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


#: What a checkpoint holds (``save_checkpoint``) and the type of each entry, besides
#: "ema" and "scaler" (state dicts, empty unless used), "best" (JSON) and "spec" (JSON: the
#: network's model-file metadata, so a resumed run started from an init model needs that file no
#: more; a checkpoint written before it was added reads the init model again).
_CHECKPOINT_ENTRIES = {"config": str, "model": dict, "optimizer": dict, "epoch": int, "history": str}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint in ``path``; a ModelFileError (one line) if it is not one specnet wrote."""
    hint = "; pass overwrite=True to start the run again"
    checkpoint = torch_load_safely(path, what="a checkpoint", hint=hint)
    if not isinstance(checkpoint, dict):
        raise ModelFileError(f"{path}: not a specnet checkpoint (it holds a {type(checkpoint).__name__}){hint}")
    wrong = [key for key, kind in _CHECKPOINT_ENTRIES.items() if not isinstance(checkpoint.get(key), kind)]
    if not wrong:
        try:
            config = json.loads(checkpoint["config"])  # the run's options, "data" among them
        except ValueError:
            config = None
        if not (isinstance(config, dict) and isinstance(config.get("data"), dict)):
            wrong = ["config"]
    if wrong:
        raise ModelFileError(f"{path}: not a specnet checkpoint (no valid {', '.join(wrong)}){hint}")
    return checkpoint


def checkpoint_network(path: Path, checkpoint: dict[str, Any]) -> SpecNet:
    """The network a checkpoint's weights fit, built (with fresh weights) from its "spec" entry, a
    model file's metadata; a ModelFileError (one line) naming ``path`` if that entry is damaged."""
    try:
        meta = json.loads(checkpoint["spec"])
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        return SpecNet(metadata_to_spec(meta, source=str(path)))
    except (TypeError, ValueError, SpecnetError) as exc:
        raise ModelFileError(f"{path}: damaged checkpoint (its spec: {unnamed(path, one_line(str(exc)))}); "
                             "pass overwrite=True to start the run again") from None


def the_runs_setting(out: str | os.PathLike, error: GivenValueError) -> GivenValueError:
    """``error`` about a value a resumed run took from its own options (a device not here, say),
    naming the run and the options that change it."""
    names = ", ".join(f"{given.option}=" for given in error.given)
    run = display_name(out).replace("%", "%%")
    return GivenValueError(f"{run}: {error.template} (the run's own setting: pass {names} to resume it with another)", *error.given)


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(name, saved value, current value)`` of each entry that differs, ``data.source``
    style for nested tables."""
    found = []
    for key in set(saved) | set(current):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append((prefix + key, old, new))
    return found


def _shown(value: Any) -> str:
    """``value`` for a one-line message: its repr, or how many entries a long list or table has."""
    text = repr(value)
    return f"{len(value)} entries" if len(text) > 60 and isinstance(value, (list, dict)) else text


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The options that must match for a run to be resumed, ``val_split`` as the share it
    held out (some checkpoints hold None for the default, some its value), ``manifest`` and
    ``val_dir`` as whether they were given: the folders and files they name are compared as
    ``data.source`` and ``data.val_source``, real paths, so "./val" resumes a run given "val"."""
    ignore = {"epochs", "device", "num_workers", "patience", "amp", "precision"}
    # The front-end and augmentation as they resolve, so `--n-mels 64` resumes a run that
    # left the default 64 unsaid, and `[features] top_db` one given `--top-db`.
    given = {name: config.get(name) for name in ("features", "augment", "augment_args", "mixup") if name in config}
    try:
        settings = TrainConfig(**given)
        front_end = settings.feature_config()
        resolved = {"features": front_end.to_dict() | {"f_max": front_end.max_frequency},  # None is the Nyquist frequency
                    "augment_args": dataclasses.asdict(settings.augment_config()), "augment": None, "mixup": None}
    except SpecnetError:  # settings this version refuses: compared as they were written
        resolved = {}
    data = config.get("data")
    return {k: v for k, v in config.items() if k not in ignore} | resolved | {
        # The files skipped are named as they were given ("tr/1/x.wav", "../tr/1/x.wav" from
        # elsewhere); which files the run read is data.files, their count data.skipped.
        **({"data": {k: v for k, v in data.items() if k != "skipped_files"}} if isinstance(data, dict) else {}),
        # The model's own; before they were recorded so, an audio run saved the default image
        # size and a run from init the default architecture, neither of which it used.
        **_model_choices(config),
        # Files by what they are, however their paths are spelled (a bundled name stays a name).
        **{key: real_file(config.get(key)) for key in ("init", "weights")},
        "val_split": held_out_share(config),
        "manifest": config.get("manifest") is not None,
        "val_dir": config.get("val_dir") is not None,
    }


def checked_resume(files: RunFiles, checkpoint: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """The options ``checkpoint`` was written with (as ``config.json`` holds them; options added
    since read as their defaults), checked against ``resolved``, the options of the run resuming
    it: :class:`OptionsDiffer` names what differs among the options and the data. Another
    precision only warns: the run goes on, but does not repeat the uninterrupted one exactly."""
    # Options this version added read as their defaults in a checkpoint written before them.
    defaults = json.loads(json.dumps(TrainConfig().to_dict(), default=str))
    saved = defaults | json.loads(checkpoint["config"])
    current = json.loads(json_text(resolved, default=str))  # as it was saved: tuples become lists, NaN null
    # Not recorded by earlier versions: the data read now, and the validation folder they named.
    saved["data"].setdefault("source", current["data"]["source"])
    saved["data"].setdefault("files", current["data"]["files"])
    saved["data"].setdefault("val_source", text_name(os.path.realpath(saved["val_dir"])) if saved.get("val_dir") else None)
    differences = sorted(_differences(_comparable(saved), _comparable(current)), key=lambda d: d[0])
    if differences:
        advice = (f"leave them out to resume with the run's own (in {display_name(files.config)})"
                  if any(not _of_the_data(name) for name, _, _ in differences) else
                  "the data have changed since, and resuming needs the files the run was trained on")
        raise OptionsDiffer(files.checkpoint, differences, advice)
    if saved.get("precision", current["precision"]) != current["precision"]:
        log.warning(
            "resuming a run trained in %s in %s (another machine?): it will not repeat the uninterrupted run "
            "exactly; amp=True or amp=False chooses the precision", saved["precision"], current["precision"],
        )
    return saved
