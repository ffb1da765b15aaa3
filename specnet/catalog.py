"""The models shipped inside the package: their names, files and descriptions, found with
``importlib.resources`` and read without torch, so that ``specnet models`` answers at once."""

from __future__ import annotations

import json
import struct
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ModelFileError

#: The bundled model ``specnet classify`` and ``load_model()`` use when none is named.
DEFAULT_MODEL = "esc10"
#: The safetensors metadata entry that holds specnet's JSON document.
METADATA_KEY = "specnet"


def bundled_models() -> dict[str, Path]:
    """Names and paths of the models shipped inside the package."""
    try:
        folder = resources.files("specnet") / "bundled"
        if not folder.is_dir():
            return {}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {Path(p.name).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".safetensors")}


def header_metadata(path: Path) -> dict[str, Any]:
    """The specnet metadata document in a safetensors file's header, as written (unchecked:
    :func:`specnet.modelfile.read_metadata` checks it, and loading checks the weights).

    A safetensors file starts with the header's length (8 bytes, little-endian) and the header,
    a JSON object whose ``__metadata__`` maps names to strings."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100_000_000)))
        return json.loads(header["__metadata__"][METADATA_KEY])
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: no readable specnet metadata in its header ({exc})") from None
