"""ONNX export of a whole model, log-mel front-end included.

An exported audio model takes raw samples ``(batch, time)`` float32 at the
model's sample rate and returns logits ``(batch, num_classes)``; batch and
time are dynamic. An image model takes ``(batch, in_chans, H, W)``. The
model's class names and feature settings travel in the ONNX
``metadata_props`` as JSON, so the file is self-describing.

The ONNX exporter cannot export ``torch.stft`` (it returns complex tensors),
so export swaps the front-end for :class:`ConvLogMel`: the same padding, then
framing and DFT in one strided ``conv1d`` whose kernels are the windowed
cosines and sines, then power, the mel filterbank and the log. It computes
the same function as :class:`~specnet.features.LogMelSpectrogram` (to float32
rounding) and is used only for export.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .checks import is_integer
from .errors import ParameterError, SpecnetError, first_line
from .features import LogMelSpectrogram, mel_to_db
from .fileio import atomic_write, check_output_path, json_text
from .inference import Model, resolve_model
from .modelfile import load_model_file
from .modelspec import ModelSpec, spec_to_metadata
from .models.layers import eval_mode
from .network import SpecNet

DEFAULT_OPSET = 17
INPUT_NAME = "samples"
IMAGE_INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class ConvLogMel(nn.Module):
    """Export-friendly twin of a :class:`LogMelSpectrogram`: ``(B, T)`` -> ``(B, n_mels, frames)`` dB.

    Shares the original's window and filterbank; the DFT is a ``conv1d`` with
    ``2 * (n_fft // 2 + 1)`` fixed kernels of size ``n_fft`` and stride
    ``hop_length`` (real parts first, then imaginary parts).
    """

    def __init__(self, frontend: LogMelSpectrogram) -> None:
        super().__init__()
        self.config = cfg = frontend.config
        n_freqs = cfg.n_fft // 2 + 1
        # torch.stft centres a short window inside the n_fft frame.
        window = torch.zeros(cfg.n_fft, dtype=torch.float64)
        left = (cfg.n_fft - cfg.window_length) // 2
        window[left : left + cfg.window_length] = frontend.window.double().cpu()
        k = torch.arange(cfg.n_fft, dtype=torch.float64)
        f = torch.arange(n_freqs, dtype=torch.float64)
        # Reduce k * f modulo n_fft in integers first, so the angle stays exact for large n_fft.
        angle = 2 * math.pi * torch.remainder(torch.outer(f, k), cfg.n_fft) / cfg.n_fft  # (n_freqs, n_fft)
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 * n_freqs, n_fft)
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)  # (2F, 1, n_fft)
        self.register_buffer("filterbank", frontend.filterbank.detach().clone(), persistent=False)
        self.n_freqs = n_freqs

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = waveform.float()  # (B, T)
        if cfg.center:
            x = self._pad(x)
        spectrum = F.conv1d(x.unsqueeze(1), self.basis, stride=cfg.hop_length)  # (B, 2F, frames)
        real, imag = spectrum[:, : self.n_freqs], spectrum[:, self.n_freqs :]
        power = real.square() + imag.square()
        if cfg.power == 1.0:
            power = power.sqrt()
        mel = torch.matmul(self.filterbank, power)  # (B, n_mels, frames)
        return mel_to_db(mel, cfg)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """``n_fft // 2`` samples of ``pad_mode`` padding on both sides of ``(B, T)``, as torch.stft pads.

        Written as one gather with computed indices rather than ``F.pad``, so the
        time axis stays dynamic in ONNX and the rule of :class:`MelSpectrogram`
        for tiny clips (reflect and circular need more than ``n_fft // 2``
        samples; shorter clips are zero-padded) becomes a ``where``, not a branch.
        """
        half, mode = self.config.n_fft // 2, self.config.pad_mode
        length = torch._shape_as_tensor(x)[1]  # T, traced as a tensor so ONNX keeps it dynamic
        position = torch.arange(-half, length + half, device=x.device)  # source of each padded sample
        inside = (position >= 0) & (position < length)
        last = length - 1
        if mode == "reflect":
            source = torch.where(position < 0, -position, torch.where(position > last, 2 * last - position, position))
        elif mode == "circular":
            source = torch.remainder(position, length)
        else:  # replicate; constant gathers the nearest sample too, then masks it to 0
            source = position
        keep = torch.ones_like(inside) if mode == "replicate" else inside
        if mode in ("reflect", "circular"):
            keep = keep | (length > half)
        source = torch.minimum(torch.clamp(source, min=0), last)  # a valid index even where masked
        return torch.where(keep, x.index_select(1, source), torch.zeros((), dtype=x.dtype, device=x.device))


class ExportableSpecNet(nn.Module):
    """A :class:`SpecNet` with its STFT front-end replaced by :class:`ConvLogMel` (same outputs)."""

    def __init__(self, net: SpecNet) -> None:
        super().__init__()
        self.net = net
        self.frontend = ConvLogMel(net.frontend) if net.frontend is not None else None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.frontend is None:
            images = self.net.standardize(inputs)  # (B, C, H, W)
        else:
            images = self.net.logmel_to_images(self.frontend(inputs))  # (B, in_chans, n_mels, frames)
        return self.net.backbone(images)  # (B, K)


def export_onnx(
    model_file_or_name: str | os.PathLike | SpecNet | Model,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    opset: int | None = None,
) -> Path:
    """Write a model as ONNX, front-end included; return the path written.

    model_file_or_name : a model file, a bundled model name, a loaded model
        (:func:`specnet.load_model`; one adapted in place, say) or a :class:`SpecNet`.
    output : the ``.onnx`` file to write (atomically; an existing file is an
        error unless ``overwrite``).
    opset : ONNX opset version, default :data:`DEFAULT_OPSET`.

    The ONNX model maps ``samples`` float32 ``(batch, time)`` at the model's
    sample rate (image models: ``images`` ``(batch, in_chans, H, W)``) to
    ``logits`` ``(batch, num_classes)``. Its metadata_props hold ``specnet``
    (the model file's metadata document), ``classes`` and ``features`` (JSON),
    ``sample_rate`` and ``input``; a NaN or infinite number in the metadata (a metric, say) is
    written as null, so that any JSON reader takes them.
    """
    onnx = _import_onnx()
    opset = _checked_opset(opset)
    output = check_output_path(output, overwrite=overwrite, suffix=".onnx", holds="ONNX models")
    net, source = _network_and_name(model_file_or_name)
    graph_input = _audio_input(net.spec) if net.spec.input_kind == "audio" else _image_input(net.spec)
    proto = onnx.load_from_string(_exported_bytes(net, graph_input, source=source, opset=opset))
    _describe(proto, net.spec, input_doc=graph_input.doc)
    onnx.checker.check_model(proto)
    return atomic_write(output, proto.SerializeToString(), overwrite=overwrite)


def _import_onnx() -> ModuleType:
    """The onnx package, or a SpecnetError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise SpecnetError("ONNX export needs the onnx package: pip install onnx (onnxruntime too, to run the file)") from None
    return onnx


def _checked_opset(opset: int | None) -> int:
    """The ONNX opset to write: ``opset`` (at least 13), or :data:`DEFAULT_OPSET` for None."""
    opset = DEFAULT_OPSET if opset is None else opset
    if not (is_integer(opset) and opset >= 13):
        raise ParameterError(f"opset={opset!r} must be an integer >= 13")
    return opset


def _network_and_name(model_file_or_name: str | os.PathLike | SpecNet | Model) -> tuple[SpecNet, str]:
    """The network to export and how errors name it: a loaded model's, a SpecNet as it is,
    or a model file or bundled model read."""
    if isinstance(model_file_or_name, Model):
        return model_file_or_name.net, model_file_or_name.name
    if isinstance(model_file_or_name, SpecNet):
        return model_file_or_name, "model"
    source, path = resolve_model(model_file_or_name)
    return load_model_file(path), source


@dataclass(frozen=True)
class _GraphInput:
    """The exported graph's input: its name, an example batch to trace, the axes left dynamic
    (by input and output name), and the description its metadata gives."""

    name: str
    example: torch.Tensor
    dynamic_axes: dict[str, dict[int, str]]
    doc: str


def _audio_input(spec: ModelSpec) -> _GraphInput:
    """Samples ``(batch, time)`` float32 at the model's rate; batch and time dynamic."""
    rate = spec.features.sample_rate
    doc = f"{INPUT_NAME}: float32 (batch, time), mono samples at {rate} Hz"
    if spec.clip_seconds:
        doc += (
            f"; specnet classify scores a clip as one {spec.clip_seconds:g} s window (a shorter clip centred "
            f"in zeros) or, if longer, as the mean softmax of such windows every {spec.clip_seconds / 2:g} s, "
            "the last ending at the clip's end, leaving out windows of digital silence (no sample above "
            "-90 dBFS) unless all are"
        )
    return _GraphInput(INPUT_NAME, torch.zeros(2, spec.clip_samples or rate),
                       {INPUT_NAME: {0: "batch", 1: "time"}, OUTPUT_NAME: {0: "batch"}}, doc)


def _image_input(spec: ModelSpec) -> _GraphInput:
    """Pixels ``(batch, in_chans, H, W)`` float32 in [0, 1]; only the batch is dynamic, as images
    are resized to the model's ``image_size`` before the network."""
    height, width = spec.image_size
    return _GraphInput(IMAGE_INPUT_NAME, torch.zeros(2, spec.in_chans, height, width),
                       {IMAGE_INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                       f"{IMAGE_INPUT_NAME}: float32 (batch, {spec.in_chans}, {height}, {width}), pixels in [0, 1]")


def _exported_bytes(net: SpecNet, graph_input: _GraphInput, *, source: str, opset: int) -> bytes:
    """``net`` (front-end swapped for :class:`ConvLogMel`) as a serialised ONNX model, traced on
    the CPU in eval mode (dropout off, batch-norm running statistics); the caller's model is left
    as it was, on its device. An exporter error becomes one SpecnetError line naming ``source``."""
    device = next(net.parameters()).device
    buffer = io.BytesIO()
    try:
        wrapper = ExportableSpecNet(net.cpu())
        with eval_mode(wrapper):
            _check_adaptive_pools(wrapper, graph_input.example, source=source, dynamic_time=net.spec.input_kind == "audio")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
                # dynamo=False: the TorchScript exporter needs no onnxscript and handles the dynamic time axis.
                torch.onnx.export(
                    wrapper, (graph_input.example,), buffer, dynamo=False, opset_version=opset,
                    input_names=[graph_input.name], output_names=[OUTPUT_NAME], dynamic_axes=graph_input.dynamic_axes,
                    do_constant_folding=True,
                )
    except SpecnetError:
        raise
    except Exception as exc:  # the exporter raises many untyped errors; keep their first line
        reason = first_line(exc).split(" [Caused by", 1)[0]
        raise SpecnetError(f"{source}: ONNX export of {net.spec.arch!r} failed (opset {opset}): {reason}") from None
    finally:
        net.to(device)
    return buffer.getvalue()


def _describe(proto: Any, spec: ModelSpec, *, input_doc: str) -> None:
    """Give the ONNX model ``proto`` its producer and the metadata_props that make the file
    self-describing: the model file's metadata document, classes, features, rate, input and output."""
    meta = spec_to_metadata(spec)
    props = {
        "specnet": json_text(meta),
        "classes": json_text(list(spec.classes)),
        "features": json_text(meta["features"]),
        "sample_rate": str(spec.sample_rate or ""),
        "input": input_doc,
        "output": f"{OUTPUT_NAME}: float32 (batch, {len(spec.classes)}), unnormalised; softmax gives probabilities",
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "specnet"


def _check_adaptive_pools(model: nn.Module, example: torch.Tensor, *, source: str, dynamic_time: bool) -> None:
    """Refuse, before the exporter does it noisily, adaptive pools the ONNX exporter cannot write.

    It writes one only as a fixed pool, so the input size must be known and a
    multiple of the output size (VGG's "imagenet" head: a 224 x 224 image).
    """
    pools = [m for m in model.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    if not pools:
        return
    if dynamic_time:
        raise SpecnetError(
            f"{source}: cannot export an audio model with adaptive pooling (the 'imagenet' head) to ONNX: "
            "the exporter needs a fixed input size; train with head='global' to export"
        )
    sizes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    hooks = [
        pool.register_forward_hook(lambda m, args, out: sizes.append((tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))))
        for pool in pools
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for size_in, size_out in sizes:
        if any(i % o for i, o in zip(size_in, size_out)):
            raise SpecnetError(
                f"{source}: cannot export to ONNX: the adaptive pool maps {size_in} to {size_out}, and the exporter "
                "needs the input to be a multiple of the output (use 224 x 224 images for the 'imagenet' head)"
            )
