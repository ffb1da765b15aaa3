"""Choosing the device a model runs on."""

from __future__ import annotations

import re

import torch

from .errors import Given, GivenValueError, ParameterError, counted


def autocast_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The reduced precision training runs in on ``device``, or None for float32.

    ``amp=None`` chooses: float16 on CUDA; bfloat16 on a CPU with AMX tiles,
    whose bfloat16 matrix units trained the small CNNs 2-2.7 times faster than
    float32 here (``benchmarks/README.md``); float32 elsewhere, where bfloat16
    is emulated and slower. ``amp=True`` asks for it on any CPU or CUDA device
    (CPU bfloat16 without AMX is slow but works); other devices (MPS) always
    train in float32. ``False`` turns it off.
    """
    if amp is False or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.float16
    if amp is None and not _cpu_has_amx():
        return None
    return torch.bfloat16


def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so guarded
    return bool(probe and probe())


_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]*))?")


def device_name(device: str | torch.device) -> str:
    """``device`` as specnet names devices: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"``; a ``torch.device`` gives its name. Availability is :func:`resolve_device`'s business."""
    if isinstance(device, torch.device):  # a tensor's: "cuda:1", and "mps:0" or "cpu" (one of each)
        device = str(device) if device.type == "cuda" else device.type
    if not (isinstance(device, str) and _DEVICE_NAME.fullmatch(device)):
        raise ParameterError(f"device={device!r} must be auto, cpu, cuda, cuda:N or mps (or a torch.device)")
    return device


def resolve_device(device: str | torch.device) -> torch.device:
    """The device :func:`device_name` names, if this machine has it; ``auto`` picks CUDA, then
    Apple's MPS, then the CPU."""
    name = device_name(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GivenValueError("%s asked for, but CUDA is not available here", Given("device", name, quoted=True))
    if name.startswith("cuda:") and int(name[5:]) >= (count := torch.cuda.device_count()):
        raise GivenValueError(f"%s asked for, but this machine has {counted(count, 'CUDA device')} "
                              f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})", Given("device", name, quoted=True))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GivenValueError("%s asked for, but MPS is not available here", Given("device", name, quoted=True))
    return torch.device(name)
