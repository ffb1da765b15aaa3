"""Keras-style model summary: one row per layer with output shape and parameter count.

What it reads of a model is what the model offers, so this module knows no
specnet class: ``display_names`` (layer names, VGG's ``block1_conv1``),
``arch`` (the title), and ``summary_view(input_size)``, by which a loaded
model or a :class:`~specnet.network.SpecNet` says which of its modules a
summary shows and for what input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TextIO

import torch
from torch import nn

from ..checks import is_integer
from ..errors import ParameterError, first_line
from .layers import eval_mode

__all__ = ["summary"]

_HEADER = ("Layer", "Type", "Output Shape", "Param #")

# Up to this many input values (1 x 512 x 512, 3 x 295 x 295, 16 s of audio at 16 kHz) a summary
# runs a real pass: VGG16 on 1 x 512 x 512 takes 4 s and 140 MB. A larger input runs on the meta
# device, shapes only (4 s, 0.9 GB peak, torch included): for real, VGG16 on 3 x 2048 x 2048 took
# ~60 s and 3.8 GB, on 3 x 4096 x 4096 (the most the command takes) 140 s and 13 GB. Torch's meta
# kernels import its compiler (torch._dynamo: 2 s and 150 MB), which a small summary does without.
_REAL_PASS_MAX_VALUES = 1 << 18


def _is_placeholder(module: nn.Module) -> bool:
    # An Identity (no classifier) or an empty Sequential (no hidden layers)
    # computes nothing; a row for it would only be noise.
    return isinstance(module, (nn.Identity, nn.Sequential))


def summary(model: nn.Module, input_size: Sequence[int] | None = None, *, file: TextIO | None = None) -> str:
    """Tabulate ``model``'s leaf layers for an input of shape ``(1, *input_size)``.

    Each row gives the layer name, type, output shape (batch shown as
    ``None``) and parameter count; the footer gives total, trainable and
    non-trainable parameters. Layers are named by ``model.display_names``
    where given (VGG: ``block1_conv1``, ``block1_pool``, ...), else by module
    path. The model runs once in eval mode without gradients, in the dtype
    of its parameters: on their device for a small input, on torch's meta
    device (shapes only, no memory for activations) for one of more than
    2**18 values, unless the model reads its values (``if x.max() > 1``),
    which the meta device cannot give; its training mode is restored afterwards.

    Parameters
    ----------
    model : nn.Module or specnet.Model
        Any model. A loaded model (:func:`specnet.load_model`) or a
        :class:`~specnet.network.SpecNet` given no ``input_size``, or a
        ``(channels, height, width)`` one, is shown as its backbone: the
        layers from the spectrogram (or image) on; given ``(samples,)``, as
        the whole network, front-end included (its ``summary_view``).
    input_size : sequence of int or None
        Input shape without the batch dimension, e.g. ``(1, 64, 101)``; None
        (a loaded model or SpecNet only): the model's own, its clip's
        log-mel or its image size.
    file : text stream or None
        Also print the table there.

    Returns
    -------
    str
        The table.
    """
    module, input_size = _module_and_input(model, input_size)
    _check_input_size(input_size)
    rows = _layer_rows(module, input_size)
    text = _table(module, input_size, rows)
    if file is not None:
        print(text, file=file)
    return text


def _module_and_input(model: object, input_size: Sequence[int] | None) -> tuple[nn.Module, Sequence[int]]:
    """The module a summary runs and its input size: those ``model.summary_view(input_size)``
    gives where it has one (a loaded model's or a SpecNet's backbone and own input size, say),
    else ``model`` and ``input_size`` as they are."""
    view = getattr(model, "summary_view", None)
    if view is not None:
        model, input_size = view(input_size)
    if not isinstance(model, nn.Module):
        raise ParameterError(f"summary() takes a torch module or a loaded specnet model, got {type(model).__name__}")
    if input_size is None:
        raise ParameterError("input_size is needed for a network without a specnet model's spec, e.g. (1, 64, 101)")
    return model, input_size


def _check_input_size(input_size: object) -> None:
    """Refuse an ``input_size`` that is not a sequence of positive integers."""
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence) or not all(
        is_integer(n) and n > 0 for n in input_size
    ):
        raise ParameterError(f"input_size={input_size!r} must be a sequence of positive integers, such as (1, 64, 101)")


def _layer_rows(model: nn.Module, input_size: Sequence[int]) -> list[tuple[str, str, str, int]]:
    """``(name, type, output shape, parameters)`` of each leaf layer, in the order they run on a
    zero input ``(1, *input_size)``; a layer that runs twice has two rows and counts its
    parameters once."""
    names = getattr(model, "display_names", {})
    rows: list[tuple[str, str, str, int]] = []
    seen: set[int] = set()

    def hook(path: str):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            params = 0 if id(module) in seen else sum(p.numel() for p in module.parameters())
            seen.add(id(module))
            rows.append((names.get(path, path), type(module).__name__, _shown(shape[1:]), params))

        return record

    handles = [
        m.register_forward_hook(hook(path))
        for path, m in model.named_modules()
        if path and next(m.children(), None) is None and not _is_placeholder(m)
    ]
    try:
        with eval_mode(model), torch.no_grad():  # batch norm over one item would fail in training mode
            # A large input runs on the meta device, shapes only; for real where that fails.
            if not (math.prod(input_size) > _REAL_PASS_MAX_VALUES and _ran_on_meta(model, input_size)):
                rows.clear()  # what a failed meta pass recorded
                seen.clear()
                model(_zeros(model, input_size))
    except (RuntimeError, IndexError, ValueError) as exc:  # pooled down to nothing; (64, 101) without its channels
        raise ParameterError(f"input size {tuple(input_size)} does not fit this model ({first_line(exc)})") from None
    finally:
        for handle in handles:
            handle.remove()
    return rows


def _ran_on_meta(model: nn.Module, input_size: Sequence[int]) -> bool:
    """Whether ``model`` ran once on zeros ``(1, *input_size)`` on the meta device, in the dtype of
    its parameters, where every layer gives its output's shape and holds no values. The module
    keeps its own tensors: meta stand-ins take their place for the run
    (``torch.func.functional_call``). False where the meta pass fails: for a module that reads
    its values (``if x.max() > 1``, ``x.numpy()``) as for an input that does not fit it."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    stand_ins = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors}
    try:
        torch.func.functional_call(model, stand_ins, (_zeros(model, input_size, device="meta"),))
    except Exception:  # a real pass tells which, and gives the table or the error it always gave
        return False
    return True


def _zeros(model: nn.Module, input_size: Sequence[int], *, device: str | None = None) -> torch.Tensor:
    """Zeros ``(1, *input_size)`` in the dtype of ``model``'s parameters, on ``device`` (None: the
    device of its parameters); torch's defaults for a model without any."""
    first = next(model.parameters(), None)
    if first is None:
        return torch.zeros((1, *input_size), device=device)
    return torch.zeros((1, *input_size), device=device or first.device, dtype=first.dtype)


def _shown(shape: Sequence[int]) -> str:
    """A shape without its batch axis as the table shows it, the batch as None: ``(None, 64, 101)``."""
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


def _table(model: nn.Module, input_size: Sequence[int], rows: list[tuple[str, str, str, int]]) -> str:
    """The summary's text: a title, the input's row and ``rows`` in aligned columns, and the
    total, trainable and non-trainable parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table = [("input", "Input", _shown(input_size), "0")]
    table += [(name, kind, shape, f"{n:,}") for name, kind, shape, n in rows]
    widths = [max(len(r[i]) for r in [_HEADER, *table]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "=" * (sum(widths) + 2 * 3)
    out = [f'Model: "{getattr(model, "arch", type(model).__name__)}"', rule, line(_HEADER), rule]
    out += [line(r) for r in table]
    out += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        rule,
    ]
    return "\n".join(out)
