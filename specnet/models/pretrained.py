"""ImageNet weights for the VGG models: find, download, check and adapt them.

The files are torchvision's published ones. They are found, in order:

1. ``weights=PATH`` (a file, or a folder holding the published file name);
2. ``$SPECNET_WEIGHTS_DIR/<file name>`` (for machines without network);
3. the cache, ``$SPECNET_CACHE`` or ``~/.cache/specnet``;
4. a download into the cache, accepted only if its sha256 starts with the
   8 hex digits in the file name.

Files are read with ``torch.load(..., weights_only=True)`` or safetensors, so
a weight file can never run code.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import ModelFileError, ParameterError
from ..fileio import torch_load_safely

__all__ = [
    "IMAGENET_FILES",
    "adapt_input_conv",
    "cache_dir",
    "find_imagenet_weights",
    "imagenet_weights_url",
    "load_imagenet_weights",
    "read_state_dict",
]

logger = logging.getLogger("specnet")

_BASE_URL = "https://download.pytorch.org/models/"
# torchvision's file names: "<arch>-<first 8 hex digits of the file's sha256>.pth".
IMAGENET_FILES = {
    "vgg11": "vgg11-8a719046.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
}


def _file_name(arch: str) -> str:
    try:
        return IMAGENET_FILES[arch]
    except KeyError:
        raise ParameterError(
            f"no ImageNet weights for arch={arch!r}; they exist for {', '.join(IMAGENET_FILES)}"
        ) from None


def imagenet_weights_url(arch: str) -> str:
    """URL of torchvision's ImageNet weight file for ``arch`` (e.g. ``"vgg16"``)."""
    return _BASE_URL + _file_name(arch)


def cache_dir() -> Path:
    """Folder for downloaded weights: ``$SPECNET_CACHE`` or ``~/.cache/specnet``."""
    return Path(os.environ.get("SPECNET_CACHE") or Path.home() / ".cache" / "specnet").expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(arch: str, dst: Path, *, progress: bool) -> Path:
    url = imagenet_weights_url(arch)
    by_hand = (
        f"download {url} by hand, then pass weights=FILE "
        "or put it in a folder named by SPECNET_WEIGHTS_DIR"
    )
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelFileError(
            f"cannot create the weight cache {dst.parent} ({err}); set SPECNET_CACHE or {by_hand}"
        ) from err
    # Download beside the target and rename only once the checksum holds, so
    # an interrupted or corrupt download never sits in the cache; under a name of this
    # process's own, as every rank of a multi-GPU run may be downloading the same file.
    partial = dst.with_name(f"{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=progress)
    except OSError as err:  # URLError, HTTPError, timeouts and refused connections
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"cannot download ImageNet weights for {arch} ({err}); {by_hand}") from err
    expected = dst.stem.rsplit("-", 1)[-1]
    actual = _sha256(partial)
    if not actual.startswith(expected):
        partial.unlink(missing_ok=True)
        raise ModelFileError(
            f"checksum mismatch for {url}: sha256 {actual[:16]}... does not start with {expected}; "
            f"the download was deleted. Try again, or {by_hand}"
        )
    partial.replace(dst)
    return dst


def find_imagenet_weights(
    arch: str, *, weights: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Path of the ImageNet weight file for ``arch``, downloading it if needed.

    See the module docstring for the search order. Raises ModelFileError
    when ``weights`` does not exist, or when the file is nowhere local and
    cannot be downloaded (the message names the URL to fetch by hand).
    """
    name = _file_name(arch)
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / name
        if not path.is_file():
            raise ModelFileError(f"weights file {path} does not exist; expected torchvision's {name}")
        return path
    local = os.environ.get("SPECNET_WEIGHTS_DIR")
    if local and (Path(local).expanduser() / name).is_file():
        return Path(local).expanduser() / name
    cached = cache_dir() / name
    if cached.is_file():
        return cached
    return _download(arch, cached, progress=progress)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a ``.pth`` or ``.safetensors`` file, on CPU.

    Pickle-based files are opened with ``weights_only=True``: a file that
    holds anything but tensors and plain containers is refused with
    ModelFileError, and none of its code runs.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise ModelFileError(f"{path} is not a readable safetensors file ({err})") from err
    state = torch_load_safely(path, what="a weight file", hint="; give a plain state dict (.pth) or a .safetensors file")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-conv weight ``(O, I, kh, kw)`` to ``(O, in_chans, kh, kw)``.

    For one channel the weights are summed over ``I``: a grey image fed to
    the original conv (the same values in every channel) then gives exactly
    the same response as its one channel fed to the adapted conv. For other
    counts the channels are repeated and scaled by ``I / in_chans`` (timm),
    which keeps that response exactly when ``in_chans`` is a multiple of
    ``I`` and roughly otherwise.
    """
    src = weight.shape[1]
    if in_chans == src:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def load_imagenet_weights(
    model: nn.Module,
    *,
    arch: str,
    weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[str]:
    """Load torchvision's ImageNet weights for ``arch`` into ``model``, adapting them.

    The first conv (``model.first_conv``) is adapted to ``model``'s input
    channels with :func:`adapt_input_conv`; keys whose shapes differ (the
    classifier when ``num_classes`` differs) or that ``model`` lacks (the
    classifier of a ``head="global"`` model) are dropped. On the ``specnet``
    logger, keys dropped or missing inside the trunk are a warning and those past
    it (the head) one info note; a file that leaves any convolution or
    batch-norm tensor of the trunk unfilled is refused.

    Parameters
    ----------
    model : nn.Module
        A VGG of the same depth and batch-norm setting as ``arch``.
    arch : str
        ``vgg11``, ``vgg11_bn``, ... ``vgg19_bn``.
    weights : path or None
        Weight file (``.pth`` or ``.safetensors``), or a folder holding
        torchvision's file name; None searches the usual places.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    list of str
        The state-dict keys that were loaded.
    """
    path = find_imagenet_weights(arch, weights=weights, progress=progress)
    state = read_state_dict(path)
    target = model.state_dict()

    first = f"{getattr(model, 'first_conv', 'features.0')}.weight"
    if first in state and first in target and state[first].shape[1] != target[first].shape[1]:
        logger.info(
            "adapting %s from %d to %d input channels", first, state[first].shape[1], target[first].shape[1]
        )
        state[first] = adapt_input_conv(state[first], target[first].shape[1])

    loaded = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not loaded:
        raise ModelFileError(f"no weight in {path} fits this model; is it the file for {arch}?")
    # The convolutional trunk is what the weights are for: all of it, or the file is for another
    # model (VGG16's file fits a few of VGG11's layers by chance) and a frozen backbone would be random.
    trunk = [
        f"features.{name}.{key}"
        for name, module in model.features.named_modules() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))
        for key in module.state_dict() if key != "num_batches_tracked"
    ]  # what ImageNet files hold: not, say, the weights of a PReLU between the convolutions
    unfilled = [k for k in trunk if k not in loaded]
    if unfilled:
        raise ModelFileError(
            f"{path}: fills only {len(trunk) - len(unfilled)} of {arch}'s {len(trunk)} convolutional tensors "
            f"({unfilled[0]} is missing or of another shape); is it the file for {arch}?"
        )
    model.load_state_dict(loaded, strict=False)

    mismatched = [k for k in state if k in target and k not in loaded]
    unexpected = [k for k in state if k not in target]
    # Old torchvision files predate BatchNorm's step counter: nothing is lost.
    missing = [k for k in target if k not in loaded and not k.endswith("num_batches_tracked")]
    # Past the trunk, the file's ImageNet classifier meets the model's own head: expected, so
    # one note says what was left; a difference inside the trunk is a warning.
    head_notes = []
    for keys, what in ((mismatched, "skipped %d keys whose shape differs: %s"), (unexpected, "skipped %d keys the model lacks: %s"),
                       (missing, "%d model keys keep their fresh initialisation: %s")):
        in_trunk = [k for k in keys if k.startswith("features.")]
        if in_trunk:
            logger.warning("%s: " + what, path.name, len(in_trunk), ", ".join(in_trunk))
        past_trunk = [k for k in keys if not k.startswith("features.")]
        if past_trunk:
            head_notes.append(what % (len(past_trunk), ", ".join(past_trunk)))
    if head_notes:
        logger.info("%s: convolutional trunk loaded; past it, %s", path.name, "; ".join(head_notes))
    return list(loaded)
