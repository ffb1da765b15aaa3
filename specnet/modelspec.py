"""What a model is apart from its weights (:class:`ModelSpec`), and the JSON document a model
file stores it as: written by :func:`spec_to_metadata`, checked and read back by
:func:`metadata_to_spec`. No torch here, so that a listing of the bundled models checks each
file as loading it does and still answers at once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ._version import __version__
from .checks import is_finite_number, is_integer
from .errors import ModelFileError, ParameterError, SpecnetError
from .featureconfig import FeatureConfig

INPUT_KINDS = ("audio", "image")

#: Backbone arguments a :class:`SpecNet` sets itself (from its classes, channels and the
#: weights it is asked to start from), so ``ModelSpec.arch_args`` may not hold them.
RESERVED_ARCH_ARGS = frozenset({"num_classes", "in_chans", "include_top", "pretrained", "weights"})


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a :class:`SpecNet` and read its outputs.

    arch, arch_args : registry name and keyword arguments of the backbone.
    input_kind : "audio" (waveforms) or "image".
    classes : class names in logit order.
    in_chans : channels the backbone takes (1 for spectrograms).
    features : the front-end settings (audio models only).
    clip_seconds : clip length the model was trained on (audio models only).
    image_size : (height, width) images are resized to (image models only, and required there).
    extra : free-form provenance (training data, license, credit, metrics).
    """

    arch: str
    arch_args: dict[str, Any]
    input_kind: str
    classes: tuple[str, ...]
    in_chans: int = 1
    features: FeatureConfig | None = None
    clip_seconds: float | None = None
    image_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int | None:
        return self.features.sample_rate if self.features else None

    @property
    def clip_samples(self) -> int | None:
        if self.features is None or self.clip_seconds is None:
            return None
        return int(round(self.clip_seconds * self.features.sample_rate))

    def with_extra(self, **values: Any) -> "ModelSpec":
        return replace(self, extra={**self.extra, **values})


FORMAT_VERSION = 1


# Upper limits on what a model file may declare: the network is built from the
# metadata before its weights are read, so without them a damaged or crafted
# file could make loading (or every window of `classify`) allocate gigabytes or
# hang. The feature settings have theirs in FeatureConfig. Each is far above real use.
MAX_CLIP_SECONDS = 300.0  # per window: the longest `specnet classify --window` takes
MAX_IMAGE_SIDE = 4096  # pixels, height and width
MAX_IN_CHANS = 64
MAX_CLASSES = 100_000


def spec_to_metadata(spec: ModelSpec) -> dict[str, Any]:
    """The JSON document stored in a model file."""
    return {
        **spec.extra,  # first, so provenance can never overwrite a core key
        "format_version": FORMAT_VERSION,
        "specnet_version": __version__,
        "arch": spec.arch,
        "arch_args": spec.arch_args,
        "input_kind": spec.input_kind,
        "classes": list(spec.classes),
        "in_chans": spec.in_chans,
        "features": spec.features.to_dict() if spec.features else None,
        "clip_seconds": spec.clip_seconds,
        "image_size": list(spec.image_size) if spec.image_size else None,
    }


_CORE_KEYS = {
    "format_version", "specnet_version", "arch", "arch_args", "input_kind", "classes",
    "in_chans", "features", "clip_seconds", "image_size",
}


def metadata_to_spec(meta: dict[str, Any], *, source: str) -> ModelSpec:
    """Validate a metadata document and turn it into a :class:`ModelSpec`."""
    version = meta.get("format_version")
    if not is_integer(version):
        raise ModelFileError(f"{source}: specnet metadata has no integer format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{source}: model format version {version} is newer than this specnet "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade specnet"
        )
    missing = sorted(k for k in ("arch", "arch_args", "input_kind", "classes") if k not in meta)
    if missing:
        raise ModelFileError(f"{source}: specnet metadata lacks {', '.join(missing)}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelFileError(f"{source}: 'classes' must be a non-empty list of names")
    if len(classes) > MAX_CLASSES:
        raise ModelFileError(f"{source}: 'classes' names {len(classes)} classes; a model may have at most {MAX_CLASSES}")
    if meta["input_kind"] not in INPUT_KINDS:
        raise ModelFileError(f"{source}: input_kind {meta['input_kind']!r} is not one of {INPUT_KINDS}")
    if not isinstance(meta["arch"], str):
        raise ModelFileError(f"{source}: 'arch' must be the name of an architecture, got {meta['arch']!r}")
    if not isinstance(meta["arch_args"], dict):
        raise ModelFileError(f"{source}: 'arch_args' must be an object")
    if not isinstance(meta.get("features"), (dict, type(None))):
        raise ModelFileError(f"{source}: 'features' must be an object or null")
    reserved = sorted(set(meta["arch_args"]) & RESERVED_ARCH_ARGS)
    if reserved:  # e.g. "pretrained" would download ImageNet weights, "weights" read another file
        raise ModelFileError(f"{source}: 'arch_args' may not set {', '.join(reserved)}")
    try:
        features = FeatureConfig.from_dict(meta["features"]) if meta.get("features") else None
    except (SpecnetError, TypeError) as exc:
        raise ModelFileError(f"{source}: bad feature settings: {exc}") from None
    if meta["input_kind"] == "audio" and features is None:
        raise ModelFileError(f"{source}: an audio model needs feature settings")
    if len(set(classes)) != len(classes):
        raise ModelFileError(f"{source}: 'classes' names a class twice")
    blank = next((i for i, name in enumerate(classes) if not name.strip()), None)
    if blank is not None:  # a label no table or output could show
        raise ModelFileError(f"{source}: class {blank} in 'classes' has an empty or blank name ({classes[blank]!r})")
    in_chans = meta.get("in_chans", 1)
    if not (is_integer(in_chans) and 1 <= in_chans <= MAX_IN_CHANS):
        raise ModelFileError(f"{source}: in_chans={in_chans!r} must be a positive integer, at most {MAX_IN_CHANS}")
    clip_seconds = meta.get("clip_seconds")
    if clip_seconds is not None:
        try:
            check_clip_seconds(clip_seconds, features)
        except ParameterError as exc:
            raise ModelFileError(f"{source}: {exc}") from None
    elif meta["input_kind"] == "audio":
        raise ModelFileError(f"{source}: an audio model needs clip_seconds (the length of the windows it classifies)")
    image_size = meta.get("image_size")
    if image_size is not None and not (
        isinstance(image_size, list) and len(image_size) == 2
        and all(is_integer(s) and 0 < s <= MAX_IMAGE_SIDE for s in image_size)
    ):
        raise ModelFileError(
            f"{source}: image_size={image_size!r} must be [height, width] in pixels "
            f"(each at most {MAX_IMAGE_SIDE})" + (" or null" if meta["input_kind"] == "audio" else "")
        )
    if image_size is None and meta["input_kind"] == "image":
        raise ModelFileError(f"{source}: an image model needs image_size (the [height, width] its images are resized to)")
    return ModelSpec(
        arch=meta["arch"],
        arch_args=meta["arch_args"],
        input_kind=meta["input_kind"],
        classes=tuple(classes),
        in_chans=int(in_chans),
        features=features,
        clip_seconds=clip_seconds,
        image_size=tuple(image_size) if image_size else None,
        extra={k: v for k, v in meta.items() if k not in _CORE_KEYS},
    )


def clip_seconds_problem(clip_seconds: object, features: FeatureConfig | None) -> str | None:
    """What is wrong with a clip length (``"must be at most 300 s"``), or None: it must be a number
    of seconds in [one FFT window of ``features``, MAX_CLIP_SECONDS]. `classify` cuts audio into
    windows this long, so a tiny one means millions of windows; training checks its clip length
    here too, so that it never saves a file that loading refuses."""
    if not (is_finite_number(clip_seconds) and clip_seconds > 0):
        return "must be a positive number of seconds"
    if clip_seconds > MAX_CLIP_SECONDS:
        return f"must be at most {MAX_CLIP_SECONDS:g} s"
    if features is not None and round(clip_seconds * features.sample_rate) < features.min_clip_samples:
        minimum = features.min_clip_samples
        return f"is shorter than one FFT window ({minimum} samples = {minimum / features.sample_rate:g} s at {features.sample_rate} Hz)"
    return None


def check_clip_seconds(clip_seconds: object, features: FeatureConfig | None) -> None:
    """Refuse (ParameterError) a clip length :func:`clip_seconds_problem` finds wrong."""
    problem = clip_seconds_problem(clip_seconds, features)
    if problem:
        raise ParameterError(f"clip_seconds={clip_seconds!r} {problem}")
