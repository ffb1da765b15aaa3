"""Every option of a training run (:class:`TrainConfig`), its defaults and checks, and the
errors that name options as the caller gave them (a flag, a config file's setting, a keyword)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import augment as aug
from .checks import check_bool, check_int, check_known_names, check_number, check_path, is_finite_number, is_integer, python_fields
from .devices import device_name
from .errors import DataError, ParameterError, SpecnetError
from .featureconfig import FeatureConfig
from .modelspec import MAX_IMAGE_SIDE, MAX_IN_CHANS, RESERVED_ARCH_ARGS, ModelSpec, check_clip_seconds


#: Each epoch seeds torch with ``seed * EPOCH_SEEDS + epoch`` (:meth:`TrainConfig.epoch_seed`): a
#: prime above any run's epoch count, so no two (seed, epoch) pairs share a seed.
EPOCH_SEEDS = 100_003
#: The largest seed: an epoch's seed must stay below 2**64 (for the first EPOCH_SEEDS epochs),
#: about 1.8e14: a millisecond clock's reading fits.
MAX_SEED = 2**64 // EPOCH_SEEDS - 1


#: Front-end settings a training run starts from (``TrainConfig.features`` wins):
#: dB relative to each clip's peak with a 60 dB floor, so neither recording level
#: nor room noise is a cue. Measured gains are in recipes/esc10 and recipes/fsdd.
TRAIN_FEATURES = {"ref_peak": True, "top_db": 60.0}


#: Share of the training data held out for validation when no other validation data is named.
DEFAULT_VAL_SPLIT = 0.1

#: The architecture and image size of a run that names none (a run started from ``init``
#: takes the model's own).
DEFAULT_ARCH = "cnn"
DEFAULT_IMAGE_SIZE = (128, 128)


@dataclass
class TrainConfig:
    """Every training option, with defaults that work without tuning.

    Shapes and units: ``clip_seconds`` in seconds (None: the 90th percentile
    of the training clips' durations, at most 10 s); ``image_size`` is
    (height, width) in pixels (None: :data:`DEFAULT_IMAGE_SIZE`, or the ``init`` model's;
    image data only), ``arch`` likewise (None: :data:`DEFAULT_ARCH`, or the ``init`` model's); ``lr`` is the peak learning rate reached after
    ``warmup_epochs``, then decayed to zero with a cosine over ``epochs`` (None:
    :func:`default_epochs` of the training set's size). ``ema_epochs`` > 0
    validates and saves an exponential moving average of the weights (and
    batch-norm statistics) that forgets with a time constant of that many epochs.
    The validation data is one of ``val_dir`` (class folders), ``val_fold`` (that
    fold of the manifest) or ``val_split`` (a stratified share of the training files
    that decode; 0: none, train on everything); with none of them, ``val_split`` is
    :data:`DEFAULT_VAL_SPLIT`.
    """

    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    weights: str | None = None
    init: str | None = None
    freeze_backbone: bool = False
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    ema_epochs: float = 0.0
    grad_clip: float = 5.0
    patience: int | None = None
    keep: str = "best"
    clip_seconds: float | None = None
    features: dict[str, Any] = field(default_factory=dict)
    augment: bool = True
    augment_args: dict[str, Any] = field(default_factory=dict)
    mixup: float | None = None
    image_size: tuple[int, int] | None = None
    in_chans: int | None = None
    val_split: float | None = None
    val_fold: int | None = None
    val_dir: str | None = None
    manifest: str | None = None
    seed: int = 0
    device: str | torch.device = "auto"  # kept as its name: "cuda:1"
    amp: bool | None = None
    num_workers: int = 2
    channels_last: bool = True
    dataset: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        python_fields(self)
        for name in ("arch_args", "features", "augment_args"):
            table = getattr(self, name)
            if not (isinstance(table, dict) and all(isinstance(key, str) for key in table)):
                raise ParameterError(f"{name}={table!r} must be a dict of option names and values")
        if self.epochs is not None and not (is_integer(self.epochs) and self.epochs >= 1):
            raise ParameterError(f"epochs={self.epochs!r} must be a positive integer (or None: chosen from the training set's size)")
        for name, minimum in (("batch_size", 1), ("num_workers", 0)):
            check_int(name, getattr(self, name), minimum=minimum)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        for name in ("pretrained", "freeze_backbone", "augment", "channels_last"):
            check_bool(name, getattr(self, name))
        check_bool("amp", self.amp, none=True)
        for name in ("weights", "init", "val_dir", "manifest"):
            check_path(name, getattr(self, name), what="a path or a name", none=True)
        self.device = device_name(self.device)
        if self.mixup is not None:
            check_number("mixup", self.mixup, minimum=0)
        for name in ("in_chans", "patience"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.in_chans is not None and self.in_chans > MAX_IN_CHANS:  # what a model file may hold
            raise ParameterError(f"in_chans={self.in_chans!r} must be an integer in [1, {MAX_IN_CHANS}]")
        if not (is_finite_number(self.lr) and self.lr > 0):
            raise ParameterError(f"lr={self.lr!r} must be a positive number")
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "ema_epochs"):  # ema_epochs 0: no weight average
            check_number(name, getattr(self, name), minimum=0)
        check_number("label_smoothing", self.label_smoothing, minimum=0, below=1)
        if self.val_split is not None:
            check_number("val_split", self.val_split, minimum=0, below=1)
        if self.val_fold is not None and not is_integer(self.val_fold):
            raise ParameterError(f"val_fold={self.val_fold!r} must be an integer (a fold of the manifest)")
        chosen = [name for name in ("val_dir", "val_fold", "val_split") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ParameterError(f"{' and '.join(chosen)} each choose the validation data: give one of them")
        if self.image_size is not None and not (
            isinstance(self.image_size, (tuple, list)) and len(self.image_size) == 2
            and all(is_integer(s) and 0 < s <= MAX_IMAGE_SIDE for s in self.image_size)
        ):
            raise ParameterError(f"image_size={self.image_size!r} must be a (height, width) pair of positive integers, "
                                 f"each at most {MAX_IMAGE_SIDE}")
        if self.clip_seconds is not None:
            check_clip_seconds(self.clip_seconds, None)  # against the front-end once it is known, in train()
        if self.keep not in ("best", "last"):
            raise ParameterError(f"keep={self.keep!r} must be 'best' (by validation accuracy) or 'last'")
        if self.freeze_backbone and not (self.pretrained or self.weights or self.init):
            raise ParameterError("freeze_backbone needs a trained backbone: pass pretrained=True, weights=FILE or init=MODEL")
        if self.init and (self.pretrained or self.weights):
            raise ParameterError("init starts from a specnet model; pretrained and weights start from ImageNet: give one of them")
        if self.patience is not None and self.keep == "last":
            # keep="last" treats the validation data as a test set: nothing may be chosen on it.
            raise ParameterError("patience stops at the best validation epoch, which keep='last' never looks for; use keep='best'")
        if self.patience is not None and self.val_split == 0:
            raise ParameterError("patience watches the validation accuracy, and val_split=0 leaves no validation data")
        reserved = sorted(set(self.arch_args) & RESERVED_ARCH_ARGS)
        if reserved:
            raise ParameterError(
                f"arch_args cannot set {', '.join(reserved)}: the classes come from the data, in_chans from in_chans, "
                "ImageNet weights from pretrained/weights, and a classifier is always trained"
            )
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)
        self.feature_config(), self.augment_config()  # their own checks, before any file is decoded

    def epoch_seed(self, epoch: int) -> int:
        """The seed of everything random in epoch ``epoch`` (from 0): a run resumed after epoch
        ``epoch - 1`` draws what the uninterrupted run would have drawn."""
        return self.seed * EPOCH_SEEDS + epoch

    def model_arch(self) -> str:
        """The architecture a run from scratch builds: ``arch``, or :data:`DEFAULT_ARCH`."""
        return DEFAULT_ARCH if self.arch is None else self.arch

    def model_image_size(self) -> tuple[int, int]:
        """The (height, width) images are resized to in a run from scratch."""
        return DEFAULT_IMAGE_SIZE if self.image_size is None else tuple(self.image_size)

    def feature_config(self) -> FeatureConfig:
        """The front-end: :data:`TRAIN_FEATURES`, then ``features`` on top.

        ``top_db = 0`` means absolute dB without a floor, as ``--top-db 0`` does; without
        ``f_max``, a sample rate whose Nyquist frequency is below the default 8 kHz top
        takes the filterbank up to its Nyquist frequency."""
        values = {**TRAIN_FEATURES, **self.features}
        if is_finite_number(values.get("top_db")) and values["top_db"] == 0:
            values["top_db"] = None
            values["ref_peak"] = self.features.get("ref_peak", False)
        rate = values.get("sample_rate", FeatureConfig.sample_rate)
        if "f_max" not in values and is_integer(rate) and rate / 2 < FeatureConfig.f_max:
            values["f_max"] = None
        return FeatureConfig.from_dict(values)

    def augment_config(self) -> aug.AugmentConfig:
        """The augmentation: ``augment_args`` over the defaults, or none when ``augment`` is
        off (``augment_args`` are still checked then, so a typo in a config file shows);
        ``mixup``, when given, sets the mixup alpha either way."""
        check_known_names(self.augment_args, aug.AugmentConfig, "augmentation setting")
        given = aug.AugmentConfig(**self.augment_args)  # its checks run either way
        base = given if self.augment else aug.NO_AUGMENT
        if self.mixup is not None:
            base = dataclasses.replace(base, mixup_alpha=self.mixup)
        return base

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def held_out_share(options: dict[str, Any]) -> float | None:
    """The share of the training files a run with these options (``TrainConfig.to_dict()``,
    or a checkpoint's) holds out for validation: None beside ``val_dir`` or ``val_fold``,
    :data:`DEFAULT_VAL_SPLIT` when ``val_split`` is unset."""
    if options.get("val_dir") is not None or options.get("val_fold") is not None:
        return None
    return DEFAULT_VAL_SPLIT if options.get("val_split") is None else options["val_split"]


class OptionsError(SpecnetError):
    """An error about training options that names them: :meth:`describe` says the message with
    each option as a caller names it (the CLI as the user gave it: a flag, or a config file's
    setting); the message itself names them as the Python API takes them (``arch=``,
    ``features.n_mels``). Options are named as TrainConfig names them (``arch_args.drop_rate``)."""

    def __init__(self) -> None:
        super().__init__(self.describe(lambda option: option if "." in option else f"{option}="))

    def describe(self, name: Callable[[str], str]) -> str:
        raise NotImplementedError


class InitConflict(OptionsError, ParameterError):
    """Options a model started from ``init`` cannot take: ``conflicts`` holds ``(option, value
    given, value in the model)``."""

    def __init__(self, init: str, conflicts: list[tuple[str, Any, Any]]) -> None:
        self.init, self.conflicts = init, conflicts
        super().__init__()

    def describe(self, name: Callable[[str], str]) -> str:
        """The message, with each option (and ``init``) as ``name`` says it."""
        found = "; ".join(f"{name(option)} is {mine!r} here and {theirs!r} in the model" for option, mine, theirs in self.conflicts)
        return (f"{self.init}: a model started from {name('init')} keeps its architecture and front-end, but {found}: "
                "leave these options out, or train from scratch")


class OptionsForOtherData(OptionsError, ParameterError, DataError):
    """Options for the other kind of data than the data holds: audio options (``features.n_mels``,
    ``clip_seconds``) for images, or ``image_size`` for audio. Options to leave out, so a
    ParameterError (exit code 2, as other refused combinations of options), and a DataError."""

    def __init__(self, options: list[str], kind: str) -> None:
        self.options, self.kind = options, kind
        super().__init__()

    def describe(self, name: Callable[[str], str]) -> str:
        """The message, with each option as ``name`` says it."""
        other = "audio" if self.kind == "image" else "images"
        apply, them = ("applies", "it") if len(self.options) == 1 else ("apply", "them")
        return f"the data holds {self.kind} files, and {', '.join(map(name, self.options))} {apply} to {other}: leave {them} out"



class OptionValueError(OptionsError, ParameterError):
    """A value of ``option`` that the data or the model it trains make impossible: ``problem``
    says why (``clip_seconds``, shorter than one FFT window of the front-end)."""

    def __init__(self, option: str, value: Any, problem: str) -> None:
        self.option, self.value, self.problem = option, value, problem
        super().__init__()

    def describe(self, name: Callable[[str], str]) -> str:
        """The message, with the option as ``name`` says it: ``clip_seconds=0.01`` (the API, and a
        config file's setting), ``--clip-seconds 0.01`` (a flag)."""
        said = name(self.option)
        setting = f"{said} {self.value!r}" if said.startswith("--") else f"{said.removesuffix('=')}={self.value!r}"
        return f"{setting} {self.problem}"


def _feature_value(features: FeatureConfig, key: str) -> Any:
    """What front-end setting ``key`` amounts to: f_max the frequency it stands for (None is the
    Nyquist frequency), top_db the floor (0 for absolute dB, as ``--top-db 0`` says it)."""
    if key == "f_max":
        return features.max_frequency
    if key == "top_db":
        return features.top_db if features.ref_peak else 0
    return getattr(features, key, None)


def features_given(config: TrainConfig) -> list[str]:
    """The front-end settings ``config`` sets, as the user said them: ``ref_peak`` goes without
    saying beside ``top_db`` (``--top-db`` sets both)."""
    return [key for key in config.features if not (key == "ref_peak" and "top_db" in config.features)]


def init_conflicts(config: TrainConfig, base: ModelSpec) -> list[tuple[str, Any, Any]]:
    """The options ``config`` sets that the ``init`` model's spec contradicts: ``(option, given, model's)``."""
    given: list[tuple[str, Any, Any]] = []
    if config.arch is not None and config.arch != base.arch:
        given.append(("arch", config.arch, base.arch))
    for name, value in config.arch_args.items():
        if base.arch_args.get(name) != value:
            given.append((f"arch_args.{name}", value, base.arch_args.get(name)))
    if config.in_chans is not None and config.in_chans != base.in_chans:
        given.append(("in_chans", config.in_chans, base.in_chans))
    if base.features is not None and config.features:
        mine, theirs = config.feature_config(), base.features
        for key in features_given(config):
            if _feature_value(mine, key) != _feature_value(theirs, key):
                given.append((f"features.{key}", _feature_value(mine, key), _feature_value(theirs, key)))
    if base.image_size is not None and config.image_size is not None and tuple(config.image_size) != tuple(base.image_size):
        given.append(("image_size", tuple(config.image_size), tuple(base.image_size)))
    return given
