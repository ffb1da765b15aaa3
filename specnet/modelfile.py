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

from .errors import ModelFileError, SpecnetError, first_line
from .fileio import atomic_write, json_text
from .paths import display_name, one_line
from .network import SpecNet, create_backbone

# The metadata document is written, read and checked without torch (modelspec, catalog), so that
# `specnet models` checks a file as loading does.
from .catalog import METADATA_KEY, metadata_document
from .modelspec import ModelSpec, metadata_to_spec, spec_to_metadata


def save_model_file(model: SpecNet, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``model`` (weights + metadata) to ``path`` atomically.

    A model with a NaN or infinite weight or statistic is refused: it could only ever answer NaN;
    so is one whose spec loading would refuse (a blank class name, say), which could never be read.
    A NaN or infinite number in the rest of its metadata (a metric, say) is written as null.
    """
    from safetensors.torch import save

    document = json_text(spec_to_metadata(model.spec))
    metadata_to_spec(json.loads(document), source=f"{display_name(path)}: not saved")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    broken = _non_finite(state)
    if broken:
        raise ModelFileError(f"{path}: not saved: {broken}")
    payload = save(state, metadata={METADATA_KEY: document})
    return atomic_write(path, payload, overwrite=overwrite)


def check_weight_shapes(path: str | os.PathLike) -> None:
    """Refuse a model file whose tensors are not those its metadata declares, from the
    file's header alone (what loading it would refuse, without reading its weights)."""
    path = Path(path)
    _unloaded_model(path)


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
    model = _unloaded_model(path)
    # safetensors' torch reader refuses a name that is not UTF-8; the file's bytes (held beside
    # the weights for a moment) serve there, and a memory map everywhere else.
    state = load_file(str(path)) if _is_utf8(path) else load(path.read_bytes())
    broken = _non_finite(state)
    if broken:
        raise ModelFileError(f"{path}: {broken}; the model could only answer NaN")
    model.load_state_dict(state)
    return model.to(device).eval()


def _unloaded_model(path: Path) -> SpecNet:
    """The :class:`SpecNet` the model file ``path`` declares in its metadata, its weights not yet
    read: built once the file's header shows the backbone's tensors, then its front-end's and
    standardisation's, to be the ones it declares (ModelFileError naming what differs)."""
    spec = metadata_to_spec(metadata_document(path), source=str(path))
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
