"""Tests for specnet/models/summary.py (and the summary_view that SpecNet and Model offer it)."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

from specnet.models import create_model, summary

_TOTAL = re.compile(r"^(Total|Trainable|Non-trainable) params: ([\d,]+)$")


def _parse(table: str) -> tuple[dict[str, tuple[str, str, int]], dict[str, int]]:
    """Rows as {name: (type, output shape, params)} and the three totals."""
    rows, totals = {}, {}
    for line in table.splitlines():
        if m := _TOTAL.match(line):
            totals[m.group(1)] = int(m.group(2).replace(",", ""))
        elif m := re.match(r"^(\S+)\s+(\S+)\s+(\(.*?\))\s+([\d,]+)$", line):
            rows[m.group(1)] = (m.group(2), m.group(3), int(m.group(4).replace(",", "")))
    return rows, totals


@pytest.fixture(scope="module")
def vgg16_table():
    return summary(create_model("vgg16", in_chans=3, include_top=False), (3, 224, 224))


def test_vgg16_keras_numbers(vgg16_table):
    rows, totals = _parse(vgg16_table)
    assert rows["block1_conv1"] == ("Conv2d", "(None, 64, 224, 224)", 1792)
    assert rows["block1_conv2"][2] == 36928
    assert rows["block1_pool"] == ("MaxPool2d", "(None, 64, 112, 112)", 0)
    assert rows["block2_conv1"][2] == 73856
    assert rows["block5_conv3"] == ("Conv2d", "(None, 512, 14, 14)", 2359808)
    assert rows["block5_pool"][1] == "(None, 512, 7, 7)"
    assert rows["head.global_pool"] == ("GlobalPool", "(None, 512)", 0)
    assert list(rows)[-1] == "head.global_pool"  # the descriptor ends at the pooling: no dropout row, as in Keras
    assert totals == {"Total": 14714688, "Trainable": 14714688, "Non-trainable": 0}
    assert "Total params: 14,714,688" in vgg16_table
    assert sum(r[2] for r in rows.values()) == 14714688
    assert sum(name.startswith("block") and name[-5:-1] == "conv" for name in rows) == 13


def test_cnn_rows_use_module_paths_and_freeze_counts():
    model = create_model("cnn_tiny", num_classes=10)
    for p in model.backbone_parameters():
        p.requires_grad_(False)
    model.train()
    out = io.StringIO()
    table = summary(model, (1, 64, 101), file=out)
    assert out.getvalue() == table + "\n"
    assert model.training  # mode restored
    rows, totals = _parse(table)
    assert rows["features.0.conv1"] == ("Conv2d", "(None, 8, 64, 101)", 72)
    assert rows["features.0.bn1"] == ("BatchNorm2d", "(None, 8, 64, 101)", 16)
    assert rows["features.0.pool"][1] == "(None, 8, 32, 51)"
    assert rows["features.3.pool"][1] == "(None, 64, 4, 7)"
    assert rows["head.fc"] == ("Linear", "(None, 10)", 650)
    total = sum(p.numel() for p in model.parameters())
    assert totals == {"Total": total, "Trainable": 650, "Non-trainable": total - 650}
    assert sum(r[2] for r in rows.values()) == total


def test_an_input_the_model_cannot_take_is_a_parameter_error_and_modes_come_back():
    from torch import nn

    from specnet.errors import ParameterError

    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net[2].eval()  # a caller's mixed modes: the summary must leave them as they were
    with pytest.raises(ParameterError, match=r"input size \(1, 3, 3\) does not fit this model"):
        summary(net, (1, 3, 3))
    assert [m.training for m in net.modules()] == [True, True, True, False]
    summary(net, (1, 8, 8))
    assert [m.training for m in net.modules()] == [True, True, True, False]
    # An input size without its channels is the same one line, not an IndexError from inside a layer.
    with pytest.raises(ParameterError, match=r"^input size \(64, 101\) does not fit this model \("):
        summary(create_model("vgg11", include_top=False), (64, 101))
    # A size torch cannot even make a tensor of is the same kind of error, before anything runs.
    for bad in ((1, -5, 3), (1.5, 64, 101), "1x64x101", 64):
        with pytest.raises(ParameterError, match=r"must be a sequence of positive integers, such as \(1, 64, 101\)$"):
            summary(net, bad)
    # A batch-norm network given (64, 101): batch norm's own ValueError ("expected 4D input") is the same line.
    with pytest.raises(ParameterError, match=r"^input size \(64, 101\) does not fit this model \("):
        summary(create_model("cnn", num_classes=10), (64, 101))


def test_a_loaded_model_is_summarised_as_its_backbone_on_its_own_input():
    import torch

    import specnet
    from specnet.errors import ParameterError

    model = specnet.load_model("fsdd", device="cpu")
    spec = model.config
    frames = spec.features.num_frames(spec.clip_samples)
    own = summary(model)
    assert own == summary(model.net) == summary(model.net.backbone, (1, spec.features.n_mels, frames))
    rows, totals = _parse(own)
    assert totals["Total"] == sum(p.numel() for p in model.net.backbone.parameters())
    assert list(rows.values())[-1][1] == f"(None, {len(spec.classes)})"
    wider = summary(model, (1, spec.features.n_mels, 2 * frames))
    assert wider != own and _parse(wider)[1] == totals
    # Given raw samples, the whole network: the front-end's rows come first, its buffers hold no parameters.
    whole = summary(model.net, (spec.clip_samples,))
    assert "frontend" in whole and _parse(whole)[1]["Total"] == sum(p.numel() for p in model.net.parameters())
    with pytest.raises(ParameterError, match=r"^input_size is needed for a network without a specnet model's spec"):
        summary(torch.nn.Linear(3, 2))
    class Holder(torch.nn.Module):  # a user's module that keeps a network as .net: summarised as it is
        def __init__(self, net):
            super().__init__()
            self.net = net

    with pytest.raises(ParameterError, match=r"^input_size is needed"):
        summary(Holder(model.net))
    with pytest.raises(ParameterError, match=r"^summary\(\) takes a torch module or a loaded specnet model, got str$"):
        summary("fsdd", (1, 64, 81))


def test_summary_shows_what_an_objects_summary_view_names():
    """summary knows no specnet class: a loaded model and a SpecNet say through summary_view which
    module it shows and for what input, and so can any other object."""
    import torch

    import specnet

    model = specnet.load_model("fsdd", device="cpu")
    spec = model.config
    frames = spec.features.num_frames(spec.clip_samples)
    assert model.summary_view() == model.net.summary_view() == (model.net.backbone, (1, spec.features.n_mels, frames))
    assert model.summary_view((1, 64, 20)) == (model.net.backbone, (1, 64, 20))
    assert model.summary_view((spec.clip_samples,)) == (model.net, (spec.clip_samples,))

    class Viewed:  # not a module itself: what its view names is summarised
        def summary_view(self, input_size):
            return torch.nn.Sequential(torch.nn.Linear(3, 2)), input_size or (3,)

    rows, totals = _parse(summary(Viewed()))
    assert rows == {"input": ("Input", "(None, 3)", 0), "0": ("Linear", "(None, 2)", 8)}
    assert totals["Total"] == 8


def _run_python(code: str) -> str:
    """Stdout of ``code`` run by a fresh interpreter, which must succeed."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps memory by RLIMIT_DATA and /proc (Linux)")
def test_a_large_input_is_summarised_from_shapes_without_memory_for_its_activations():
    """VGG11 on 1 x 4096 x 4096: a real pass would hold 4 GiB in its first layer's output alone.
    Run with 1 GiB of new memory at most, the summary gives the rows of a 64 x 64 input with
    every side 64 times longer, and leaves the network's own tensors where they were."""
    code = (
        "import resource, torch\n"
        "from specnet.models import create_model, summary\n"
        "net = create_model('vgg11', num_classes=10)\n"
        "before = {name: t.clone() for name, t in net.state_dict().items()}\n"
        "used = int(next(line for line in open('/proc/self/status') if line.startswith('VmData')).split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (used + 2**30, resource.RLIM_INFINITY))\n"
        "print(summary(net, (1, 4096, 4096)))\n"
        "after = net.state_dict()\n"
        "assert all(t.device.type == 'cpu' and t.equal(before[name]) for name, t in after.items())\n"
    )
    rows, totals = _parse(_run_python(code))
    small_rows, small_totals = _parse(summary(create_model("vgg11", num_classes=10), (1, 64, 64)))

    def scaled(shape: str) -> str:  # (None, C, H, W) -> (None, C, 64 H, 64 W); flat shapes as they are
        sides = shape[1:-1].split(", ")
        return "(" + ", ".join(sides[:2] + [str(64 * int(n)) for n in sides[2:]]) + ")"

    assert rows == {name: (kind, scaled(shape), n) for name, (kind, shape, n) in small_rows.items()}
    assert rows["block5_pool"][1] == "(None, 512, 128, 128)" and totals == small_totals


def test_an_input_too_large_for_a_real_pass_and_wrong_for_the_model_is_the_same_error():
    import torch

    from specnet.errors import ParameterError

    net = create_model("vgg11", include_top=False)
    tensors = [*net.parameters(), *net.buffers()]
    with pytest.raises(ParameterError, match=r"^input size \(600, 600\) does not fit this model \("):
        summary(net, (600, 600))  # without its channels
    kept = [*net.parameters(), *net.buffers()]
    assert all(a is b for a, b in zip(kept, tensors, strict=True)) and all(t.device == torch.device("cpu") for t in kept)


def test_a_summary_of_a_small_input_does_not_import_torchs_compiler():
    """The meta device's kernels import torch._dynamo (seconds, 150 MB); summaries of a model's
    own input and of VGG's 224 x 224 do without it."""
    _run_python(
        "import sys, specnet\n"
        "from specnet.models import create_model\n"
        "specnet.summary(specnet.load_model('esc10', device='cpu'))\n"
        "specnet.summary(create_model('vgg16', in_chans=3, num_classes=10), (3, 224, 224))\n"
        "assert 'torch._dynamo' not in sys.modules, 'the compiler was imported'\n"
    )


class _ReadsItsInput(torch.nn.Module):
    """A layer over 600 values whose forward pass reads its input's values, which a meta pass cannot give."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(600, 8)


class _Branching(_ReadsItsInput):
    def forward(self, x):
        if x.abs().max() > 1:  # Tensor.item() on the meta device: RuntimeError
            x = x / x.abs().max()
        return self.fc(x)


class _ThroughNumpy(_ReadsItsInput):
    def forward(self, x):
        return self.fc(torch.from_numpy(x.numpy()))  # TypeError on the meta device


@pytest.mark.parametrize("make", [_Branching, _ThroughNumpy])
def test_a_large_input_to_a_module_that_reads_its_values_gets_the_real_passs_table(make):
    """600 x 600 values are over the meta pass's bound; the table is a real pass's, once each row."""
    rows, totals = _parse(summary(make(), (600, 600)))
    assert rows == {"input": ("Input", "(None, 600, 600)", 0), "fc": ("Linear", "(None, 600, 8)", 4808)}
    assert totals["Total"] == 4808
