"""Model files: safetensors weights plus one JSON metadata document.

A model file is self-describing: ``load_model_file(path)`` rebuilds the
network from the metadata alone. Only safetensors files are accepted, so
loading a model can never run code (a pickle is refused before it is read).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .catalog import METADATA_KEY, metadata_document
from .checks import is_finite_number, is_integer
from .errors import ModelFileError, ParameterError, SpecnetError, first_line
from .features import FeatureConfig
from .fileio import atomic_write
from .paths import display_name, one_line
from .network import INPUT_KINDS, RESERVED_ARCH_ARGS, ModelSpec, SpecNet, create_backbone

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
        in_chans=int(meta.get("in_chans", 1)),
        features=features,
        clip_seconds=meta.get("clip_seconds"),
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


def save_model_file(model: SpecNet, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``model`` (weights + metadata) to ``path`` atomically.

    A model with a NaN or infinite weight or statistic is refused: it could only ever answer NaN;
    so is one whose spec loading would refuse (a blank class name, say), which could never be read.
    """
    from safetensors.torch import save

    document = json.dumps(spec_to_metadata(model.spec))
    metadata_to_spec(json.loads(document), source=f"{display_name(path)}: not saved")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    broken = _non_finite(state)
    if broken:
        raise ModelFileError(f"{path}: not saved: {broken}")
    payload = save(state, metadata={METADATA_KEY: document})
    return atomic_write(path, payload, overwrite=overwrite)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The specnet metadata document of a model file, checked as loading it checks it
    (:func:`metadata_to_spec`), without loading weights."""
    meta = metadata_document(path)
    metadata_to_spec(meta, source=str(path))
    return meta


def check_weight_shapes(path: str | os.PathLike) -> None:
    """Refuse a model file whose tensors are not those its metadata declares, from the
    file's header alone (what loading it would refuse, without reading its weights)."""
    path = Path(path)
    _unloaded_model(path, metadata_to_spec(metadata_document(path), source=str(path)))


def _check_backbone_shapes(path: Path, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Refuse a file whose backbone tensors are not the ones ``spec`` declares, comparing
    shapes only: the backbone is built without memory (on torch's ``meta`` device) and the
    file's shapes come from its header. Returns every stored tensor's shape by name."""
    try:
        with torch.device("meta"):
            skeleton = create_backbone(spec)
    except (SpecnetError, TypeError, ValueError, RuntimeError, OverflowError) as exc:  # torch's own: RuntimeError
        raise ModelFileError(f"{path}: cannot build {spec.arch!r}: {one_line(first_line(exc))}") from None
    stored = _stored_shapes(path)
    _check_shapes({f"backbone.{k}": v.shape for k, v in skeleton.state_dict().items()},
                  {k: v for k, v in stored.items() if k.startswith("backbone.")}, path, spec.arch)
    return stored


def load_model_file(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> SpecNet:
    """Rebuild a :class:`SpecNet` from a model file, in eval mode on ``device``.

    The declared backbone is first built without memory (on torch's ``meta`` device) and
    its parameter shapes compared with the file's: a file cannot make loading allocate
    more than the weights it holds, whatever its metadata says.
    """
    from safetensors.torch import load, load_file

    path = Path(path)
    model = _unloaded_model(path, metadata_to_spec(metadata_document(path), source=str(path)))
    # safetensors' torch reader refuses a name that is not UTF-8; the file's bytes (held beside
    # the weights for a moment) serve there, and a memory map everywhere else.
    state = load_file(str(path)) if _is_utf8(path) else load(path.read_bytes())
    broken = _non_finite(state)
    if broken:
        raise ModelFileError(f"{path}: {broken}; the model could only answer NaN")
    model.load_state_dict(state)
    return model.to(device).eval()


def _unloaded_model(path: Path, spec: ModelSpec) -> SpecNet:
    """The :class:`SpecNet` ``spec`` declares, its weights not yet read from ``path``: built
    once the file's header shows the backbone's tensors, then its front-end's and
    standardisation's, to be the ones it declares (ModelFileError naming what differs)."""
    stored = _check_backbone_shapes(path, spec)
    model = SpecNet(spec)  # allocated only now; its front-end and standardisation are checked here
    _check_shapes({k: v.shape for k, v in model.state_dict().items() if not k.startswith("backbone.")},
                  {k: v for k, v in stored.items() if not k.startswith("backbone.")}, path, spec.arch)
    return model


def _non_finite(state: dict[str, torch.Tensor]) -> str:
    """Which floating-point tensors in ``state`` hold NaN or inf (at most three named): ``"x.weight
    holds non-finite values (NaN or inf)"``; "" if none."""
    names = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()][:3]
    return f"{', '.join(names)} {'holds' if len(names) == 1 else 'hold'} non-finite values (NaN or inf)" if names else ""


def _is_utf8(path: Path) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each tensor in a safetensors file, from its header (no data read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:  # "pt" refuses a name that is not UTF-8
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}


def _check_shapes(expected: dict[str, Any], stored: dict[str, tuple[int, ...]], path: Path, arch: str) -> None:
    """ModelFileError naming what differs if the tensors ``stored`` in a file are not the ``expected`` ones."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(stored) & set(expected) if tuple(stored[k]) != tuple(expected[k]))
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            problems.append(f"{k} has shape {tuple(stored[k])}, {arch} needs {tuple(expected[k])}")
        raise ModelFileError(f"{path}: weights do not match the declared architecture: {'; '.join(problems)}")
