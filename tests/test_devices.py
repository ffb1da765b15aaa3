"""Tests for specnet/devices.py: device names and the training precision per device."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import pytest
import torch

from specnet import devices
from specnet.devices import autocast_dtype, device_name, resolve_device
from specnet.errors import Given, GivenValueError, ParameterError


def test_cpu_and_auto_resolve_and_bad_names_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    for bad in ("gpu", "cuda:x", "cuda:", "cuda:01", "cpu:0", 0, None, b"cpu"):
        with pytest.raises(ParameterError, match=rf"^device={re.escape(repr(bad))} must be auto, cpu, cuda, cuda:N or mps \(or a torch.device\)$"):
            resolve_device(bad)
    assert device_name(torch.device("cuda", 1)) == "cuda:1" and device_name("cuda:12") == "cuda:12"
    # A tensor's device, as load_model(device=x.device) passes it: MPS parameters say "mps:0".
    assert device_name(torch.device("mps", 0)) == "mps" and device_name(torch.device("cpu", 0)) == "cpu"


def test_a_cuda_device_this_machine_lacks_is_named_with_the_ones_it_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ParameterError, match=r"^device='cuda:2' asked for, but this machine has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ParameterError, match=r"^device='cuda:1' asked for, but this machine has 1 CUDA device \(cuda:0\)$"):
        resolve_device(torch.device("cuda", 1))
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_a_missing_device_error_survives_pickling_and_copying(monkeypatch):
    # Errors cross process boundaries (data-loader workers, torchrun) pickled; a "%" in the value
    # must not be read as a template again, and the command line must still name its flag.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError) as caught:
        resolve_device("cuda:1")
    assert str(caught.value) == "device='cuda:1' asked for, but CUDA is not available here"
    with pytest.raises(ParameterError) as caught:  # no device name holds a "%", but other values given may
        raise GivenValueError("%s asked for, but CUDA is not available here", Given("device", "cuda:%d", quoted=True))
    caught.value.__notes__ = ["a note"]  # what add_note sets (Python 3.11+; specnet runs on 3.10 too)
    for error in (pickle.loads(pickle.dumps(caught.value)), copy.copy(caught.value)):
        assert str(error) == "device='cuda:%d' asked for, but CUDA is not available here"
        assert error.said(lambda option: "--device") == "--device cuda:%d asked for, but CUDA is not available here"
        assert error.__notes__ == ["a note"]
    assert repr(caught.value.given[0]) == "Given('device', 'cuda:%d', quoted=True)"


@pytest.mark.parametrize("has_amx", [True, False])
def test_cpu_trains_in_bfloat16_by_default_only_with_amx(monkeypatch, has_amx):
    monkeypatch.setattr(devices, "_cpu_has_amx", lambda: has_amx)
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) == (torch.bfloat16 if has_amx else None)
    assert autocast_dtype(cpu, True) == torch.bfloat16  # asked for: wherever it runs
    assert autocast_dtype(cpu, False) is None


def test_cuda_uses_float16_and_other_devices_float32():
    # A device object needs no GPU; only the choice is tested here.
    assert autocast_dtype(torch.device("cuda")) == torch.float16
    assert autocast_dtype(torch.device("cuda", 1), True) == torch.float16
    assert autocast_dtype(torch.device("cuda"), False) is None
    assert autocast_dtype(torch.device("mps")) is None
    assert autocast_dtype(torch.device("mps"), True) is None


def test_amx_probe_agrees_with_the_cpu_flags():
    # torch's probe is private, so a rename would silently turn bfloat16-by-default off: on
    # Linux the kernel's CPU flags say what the answer must be.
    has_amx = devices._cpu_has_amx()
    assert isinstance(has_amx, bool)
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with (not Linux)")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), [])
    assert has_amx == ("amx_tile" in flags)
