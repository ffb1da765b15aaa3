"""One ``nn.Module`` from raw input to logits: front-end, standardisation, backbone.

Training, inference, embedding and ONNX export all go through
:class:`SpecNet`, so they cannot drift apart::

    waveforms (B, T) --LogMelSpectrogram--> (B, F, frames) --Standardize--> (B, C, F, frames)
    images (B, C, H, W) ------------------------------------Standardize--> (B, C, H, W)
        --backbone.forward_features--> (B, D, F', T') --forward_head--> (B, K) logits
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ParameterError
from .features import LogMelSpectrogram, Standardize
from .models import create_model
from .models.layers import frame_pool, time_reach
from .modelspec import INPUT_KINDS, RESERVED_ARCH_ARGS, ModelSpec

#: Input columns (spectrogram frames: 41 s at a 10 ms hop) that :meth:`SpecNet.feature_map`
#: runs through the backbone in one piece, besides the overlap each piece needs; it bounds
#: the activations of a long recording (``cnn_small``'s first block: ~17 MB per 64 mel bands).
COLUMNS_PER_PIECE = 4096


def create_backbone(spec: ModelSpec, **weights: Any) -> nn.Module:
    """The backbone ``spec`` describes: ``spec.arch`` with ``spec.arch_args``, one output per
    class and ``spec.in_chans`` input channels; ``weights``: ``pretrained`` / ``weights`` to
    start from ImageNet's."""
    return create_model(spec.arch, num_classes=len(spec.classes), in_chans=spec.in_chans, **spec.arch_args, **weights)


class SpecNet(nn.Module):
    """Raw samples or images in, logits out (see the module docstring)."""

    def __init__(self, spec: ModelSpec, *, pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        if spec.input_kind not in INPUT_KINDS:
            raise ParameterError(f"input_kind={spec.input_kind!r} must be one of {', '.join(INPUT_KINDS)}")
        if spec.input_kind == "audio" and spec.features is None:
            raise ParameterError("an audio model needs features=FeatureConfig(...)")
        if spec.input_kind == "image" and spec.image_size is None:
            raise ParameterError("an image model needs image_size=(height, width), the size its images are resized to")
        reserved = sorted(set(spec.arch_args) & RESERVED_ARCH_ARGS)
        if reserved:  # else create_model gets them twice (a TypeError), or include_top contradicts the classes
            raise ParameterError(f"arch_args may not set {', '.join(reserved)}: a SpecNet sets them from classes, "
                                 "in_chans and its pretrained/weights arguments")
        self.spec = spec
        extra: dict[str, Any] = {}
        if pretrained or weights:
            extra = {"pretrained": pretrained, "weights": weights}
        self.backbone = create_backbone(spec, **extra)
        if spec.input_kind == "audio":
            self.frontend: LogMelSpectrogram | None = LogMelSpectrogram(spec.features)
            self.standardize = Standardize((1, spec.features.n_mels, 1))
        else:
            self.frontend = None
            self.standardize = Standardize((spec.in_chans, 1, 1))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def images(self, inputs: torch.Tensor) -> torch.Tensor:
        """Standardised network input (B, in_chans, F, frames) from waveforms (B, T) or images."""
        self._check_input(inputs)
        if self.frontend is None:
            return self.standardize(inputs)
        return self.logmel_to_images(self.frontend(inputs))

    def _check_input(self, inputs: torch.Tensor) -> None:
        """Refuse inputs of another shape than the network takes, which torch's layers would
        meet with errors about the spectrogram's shape (64 channels for a waveform without
        its batch axis) or, for an image without one, about a dimension out of range."""
        if self.frontend is not None:
            if inputs.dim() != 2:
                one = "; one clip is samples[None]" if inputs.dim() == 1 else ""
                raise ParameterError(f"an audio model takes waveforms (batch, time), got shape {tuple(inputs.shape)}{one}")
        elif inputs.dim() != 4 or inputs.shape[1] not in (1, self.spec.in_chans):  # grey: standardize repeats it
            one = "; one image is pixels[None]" if inputs.dim() == 3 else ""
            grey = " or grey ones (batch, 1, height, width)" if self.spec.in_chans > 1 else ""
            raise ParameterError(f"this image model takes images (batch, {self.spec.in_chans}, height, width){grey}, "
                                 f"got shape {tuple(inputs.shape)}{one}")

    def logmel_to_images(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, F, frames) log-mel in dB -> standardised (B, in_chans, F, frames)."""
        images = self.standardize(logmel.unsqueeze(1))
        if self.spec.in_chans > 1:
            images = images.expand(-1, self.spec.in_chans, -1, -1)
        return images

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for waveforms (B, T) or images (B, C, H, W), C = in_chans or 1 (grey)."""
        return self.backbone(self.images(inputs))

    def summary_view(self, input_size: Sequence[int] | None = None) -> tuple[nn.Module, Sequence[int] | None]:
        """The module a layer summary (:func:`specnet.summary`) shows for an input of ``input_size``
        (without the batch axis), and that size: given none or ``(channels, height, width)``, the
        backbone, from the log-mel (or image) on, by default for the model's own clip's log-mel
        ``(in_chans, n_mels, frames)`` or its image size; given ``(samples,)``, the whole network."""
        image_like = isinstance(input_size, Sequence) and len(input_size) == 3  # (channels, height, width)
        if input_size is not None and not image_like:  # raw samples in: the whole network
            return self, input_size
        if input_size is None:
            spec = self.spec
            if spec.features is not None and spec.clip_samples is None:  # a SpecNet built in Python may have none
                raise ParameterError("this model has no clip length (clip_seconds) to size a summary by: "
                                     f"give input_size=({spec.in_chans}, {spec.features.n_mels}, frames)")
            own = spec.image_size if spec.features is None else (spec.features.n_mels, spec.features.num_frames(spec.clip_samples))
            input_size = (spec.in_chans, *own)
        return self.backbone, input_size

    def embed(self, inputs: torch.Tensor, *, level: str = "clip") -> torch.Tensor:
        """Pre-logit embeddings: clip level ``(B, D)``, ``D = backbone.num_features`` (the pooled
        descriptor, after any hidden dense layers); frame level ``(B, frames', C)``, ``C`` the last
        block's channels averaged over frequency (so ``C`` may differ from ``D``: the ``fsdd``
        model's four pooled frequency bands make ``D = 4 C``).

        A whole input at once, however long: the backbone runs over a long one in
        pieces (:meth:`feature_map`), so its memory does not grow with the length.
        """
        if level not in ("clip", "frame"):
            raise ParameterError(f"level={level!r} must be 'clip' or 'frame'")
        features = self.feature_map(self.images(inputs))
        if level == "clip":
            return self.backbone.forward_head(features, pre_logits=True)
        return frame_pool(features)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``backbone.forward_features(images)``: ``(B, C, F, W)`` -> ``(B, D, F', ceil(W / s))``,
        ``s = time_stride``, with a long ``W`` run in pieces of :data:`COLUMNS_PER_PIECE` columns.

        Each piece starts on a multiple of ``s`` (so every pooling grid lines up with the
        whole input's) and takes :func:`~specnet.models.layers.time_reach` columns more on
        each side, which its kept columns see instead of the zero padding at a cut: the same
        values as one pass, with memory bounded by the piece. A backbone with a layer of
        unknown reach runs in one pass.
        """
        stride, width = self.backbone.time_stride, images.shape[-1]
        reach = time_reach(self.backbone.features)
        step = max(stride, COLUMNS_PER_PIECE // stride * stride)
        if reach is None or width <= step + 2 * reach:
            return self.backbone.forward_features(images)
        margin = -(-reach // stride) * stride  # reach rounded up to whole strides
        pieces = []
        for start in range(0, width, step):
            first = max(0, start - margin)
            out = self.backbone.forward_features(images[..., first : min(width, start + step + margin)])
            skip = (start - first) // stride  # the margin's columns
            keep = -(-min(step, width - start) // stride)  # ceil: the whole input's last column may be partial
            pieces.append(out[..., skip : skip + keep])
        return torch.cat(pieces, dim=-1)

    @property
    def frame_seconds(self) -> float | None:
        """Seconds between frame-level embeddings (audio models only)."""
        if self.spec.features is None:
            return None
        return self.backbone.time_stride * self.spec.features.hop_length / self.spec.features.sample_rate

    def frame_times(self, num_columns: int) -> np.ndarray:
        """Seconds at the centre of the spectrogram frames pooled into each of
        ``num_columns`` frame-level embeddings, ``(num_columns,)`` float64.

        Column ``j`` pools frames ``j * s ... j * s + s - 1`` (``s = time_stride``);
        frame ``t`` is centred on sample ``t * hop_length`` (plus ``n_fft / 2``
        without ``center``).
        """
        cfg = self.spec.features
        if cfg is None:
            raise ParameterError("frame times need an audio model")
        stride = self.backbone.time_stride
        first = (stride - 1) / 2 * cfg.hop_length + (0 if cfg.center else cfg.n_fft / 2)  # samples
        return (first + np.arange(num_columns) * stride * cfg.hop_length) / cfg.sample_rate

    def frames_inside(self, num_columns: int, seconds: float) -> int:
        """How many of ``num_columns`` frame-level embeddings of a sound ``seconds`` long are
        centred inside it: the ones kept, and at least one (a sound shorter than half a
        column keeps its first)."""
        return len(self.frame_times_inside(num_columns, seconds))

    def frame_times_inside(self, num_columns: int, seconds: float) -> np.ndarray:
        """The times (s) of the frame-level embeddings kept of a sound ``seconds`` long,
        ``(frames_inside(num_columns, seconds),)``: their centres, or the sound's middle for the
        one column a sound shorter than its first centre keeps, so that every time lies inside it."""
        times = self.frame_times(num_columns)
        times = times[: max(1, int(np.searchsorted(times, seconds, side="right")))]
        return np.full_like(times, seconds / 2) if len(times) and times[0] > seconds else times
