"""Model files as they describe themselves, read without torch, and the models shipped inside
the package (found with ``importlib.resources``), so that ``specnet models`` answers at once."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ModelFileError
from .modelspec import metadata_to_spec
from .paths import display_name, refuse_special_file

#: The bundled model ``specnet classify`` and ``load_model()`` use when none is named.
DEFAULT_MODEL = "esc10"
#: The safetensors metadata entry that holds specnet's JSON document.
METADATA_KEY = "specnet"
#: The name of the model file in a training run's folder.
MODEL_FILE = "model.safetensors"
_PICKLE_MAGICS = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, torch.save zip


def bundled_models() -> dict[str, Path]:
    """Names and paths of the models shipped inside the package."""
    try:
        folder = resources.files("specnet") / "bundled"
        if not folder.is_dir():
            return {}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {Path(p.name).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".safetensors")}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The specnet metadata document of a model file, checked as loading it checks it
    (:func:`~specnet.modelspec.metadata_to_spec`), without loading weights or torch."""
    meta = metadata_document(path)
    metadata_to_spec(meta, source=str(path))
    return meta


def metadata_document(path: str | os.PathLike) -> dict[str, Any]:
    """The specnet metadata document of a model file as it is: a JSON object, not yet checked
    (:func:`read_metadata` checks it). Read without torch: a listing of the bundled models
    answers at once."""
    from safetensors import safe_open

    path = Path(path)
    _check_is_safetensors(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own untyped errors
        raise ModelFileError(f"{path}: not a valid safetensors file: truncated, or another format ({exc})") from None
    if METADATA_KEY not in metadata:
        raise ModelFileError(f"{path}: safetensors file has no specnet metadata (not a specnet model file)")
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: specnet metadata is not valid JSON ({exc})") from None
    except (ValueError, RecursionError):  # Python's limits on reading JSON, which the message names
        raise ModelFileError(f"{path}: specnet metadata cannot be read: it holds a number of thousands of digits, "
                             "or arrays or objects nested thousands deep") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: specnet metadata must be a JSON object")
    return meta


def _check_is_safetensors(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        run_model = path / MODEL_FILE
        hint = f"; the model of a training run in it is {run_model}" if run_model.is_file() else ""
        raise ModelFileError(f"{path}: is a directory, not a model file{hint}")
    refuse_special_file(path, display_name(path), ModelFileError)  # a named pipe would block open()
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror})") from None
    if len(head) < 8:
        raise ModelFileError(f"{path}: file is too short to be a model file")
    header_len = int.from_bytes(head[:8], "little")
    if 0 < header_len <= 100_000_000 and head[8:9] == b"{":
        # Checked first: a header length of 128 + 256 * k starts with b"\x80", like a pickle.
        # Whatever else the file holds, safetensors parses it without running code.
        return
    if head.startswith(_PICKLE_MAGICS):
        raise ModelFileError(
            f"{path}: is a pickle/torch.save file; specnet refuses to unpickle model files "
            "(they can run code) and loads only .safetensors"
        )
    raise ModelFileError(f"{path}: not a safetensors model file")
