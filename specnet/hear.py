"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over a specnet audio model.

::

    from specnet import hear
    model = hear.load_model("runs/mine/model.safetensors")   # "" = the bundled default
    scene = hear.get_scene_embeddings(audio, model)           # (n_sounds, scene_embedding_size)
    frames, ms = hear.get_timestamp_embeddings(audio, model)  # (n_sounds, n_timestamps, size), (n_sounds, n_timestamps)

``audio`` is float ``(n_sounds, n_samples)`` in [-1, 1] at ``model.sample_rate``.
Scene embeddings are the network's pooled pre-logit vector over the whole
sound in one pass (``SpecNet.embed(level="clip")``; ``Model.embed`` instead
averages clip-length windows, so the two differ for a longer sound); timestamp embeddings are its
frequency-pooled feature columns (``SpecNet.embed(level="frame")``), one every
``SpecNet.frame_seconds``, stamped at the centre of the spectrogram frames each
column pools, in milliseconds. Sounds are embedded independently of the batch
they come in, and outputs are float32 on the audio's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .audio import unusable_samples
from .errors import ParameterError, listed
from .models.layers import eval_mode
from .network import SpecNet

# Rows are embedded in chunks of at most this many samples (about 8 minutes at
# 16 kHz), so a large batch of long sounds does not need all activations at once.
CHUNK_SAMPLES = 8_000_000


class HearModel(nn.Module):
    """A :class:`SpecNet` with the attributes HEAR asks for; ``forward`` gives its logits.

    sample_rate : int, Hz the audio must be at.
    scene_embedding_size : int, width of :func:`get_scene_embeddings`.
    timestamp_embedding_size : int, width of :func:`get_timestamp_embeddings`.
    """

    def __init__(self, net: SpecNet) -> None:
        super().__init__()
        if net.spec.input_kind != "audio":
            raise ParameterError(f"HEAR needs an audio model; {net.spec.arch!r} is an {net.spec.input_kind} model")
        self.net = net
        self.eval()  # before the probes below: batch norm in training mode would learn from them
        self.sample_rate = int(net.spec.sample_rate)
        features = net.spec.features
        # The shortest input the network takes: the training clip, or one full FFT frame.
        self.min_samples = max(net.spec.clip_samples or 1, 1 if features.center else features.n_fft)
        with torch.no_grad():
            probe = torch.zeros(1, self.min_samples, device=_device_of(net))
            self.scene_embedding_size = int(net.embed(probe, level="clip").shape[-1])
            self.timestamp_embedding_size = int(net.embed(probe, level="frame").shape[-1])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Logits ``(n_sounds, num_classes)`` for audio ``(n_sounds, n_samples)``."""
        return self.net(audio)


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load a specnet audio model for HEAR.

    model_file_path : a model file or a bundled model name; "" loads the
        bundled default model (``esc10``).
    device : keyword, "cpu" (default), "cuda", "mps" or "auto".
    """
    from .inference import load_model as load_specnet

    device = kwargs.pop("device", "cpu")
    if kwargs:
        raise ParameterError(f"load_model got unknown {listed(sorted(kwargs), 'option')}; known: device")
    loaded = load_specnet(model_file_path or None, device=device)
    if loaded.input_kind != "audio":  # named by the file, not the architecture
        raise ParameterError(f"HEAR needs an audio model; {loaded.name} takes images")
    return HearModel(loaded.net)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound: ``(n_sounds, model.scene_embedding_size)`` float32.

    Sounds shorter than the model's training clip are centred in zeros, as
    specnet's inference pads them; longer sounds are embedded in one pass.
    """
    audio = _check_audio(audio, model)
    n_samples = audio.shape[1]
    if n_samples < model.min_samples:
        left = (model.min_samples - n_samples) // 2
        audio = nn.functional.pad(audio, (left, model.min_samples - n_samples - left))
    return _embed(audio, model, level="clip")


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings over time and their times.

    Returns ``(embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size),
    timestamps (n_sounds, n_timestamps))``, float32, timestamps in
    milliseconds, evenly spaced ``SpecNet.frame_seconds`` apart. Sounds shorter
    than the model's training clip are zero-padded at the end; columns centred
    past the end of the sound are dropped, so every timestamp lies inside it
    (a sound shorter than half a column keeps one, stamped at its middle).
    """
    audio = _check_audio(audio, model)
    n_sounds, n_samples = audio.shape
    if n_samples < model.min_samples:
        audio = nn.functional.pad(audio, (0, model.min_samples - n_samples))
    frames = _embed(audio, model, level="frame")  # (n_sounds, columns, D)
    times = torch.from_numpy(model.net.frame_times_inside(frames.shape[1], n_samples / model.sample_rate) * 1000.0)
    keep = len(times)
    timestamps = times.to(torch.float32).to(audio.device).expand(n_sounds, keep)
    return frames[:, :keep].contiguous(), timestamps.contiguous()


def _check_audio(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    if not isinstance(model, HearModel):
        raise ParameterError(f"model must come from specnet.hear.load_model, got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor):
        raise ParameterError(f"audio must be a torch.Tensor (n_sounds, n_samples), got {type(audio).__name__}")
    if audio.dim() != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ParameterError(f"audio must have shape (n_sounds, n_samples) with both > 0, got {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ParameterError(f"audio must be floating point samples in [-1, 1], got {audio.dtype}")
    if problem := unusable_samples(float(audio.abs().amax()), non_finite="audio contains NaN or infinite values"):
        raise ParameterError(problem)
    return audio.float()


@torch.no_grad()
def _embed(audio: torch.Tensor, model: HearModel, *, level: str) -> torch.Tensor:
    """``SpecNet.embed`` on the model's device, in row chunks; float32 on the audio's device."""
    device = _device_of(model.net)
    rows = max(1, CHUNK_SAMPLES // audio.shape[1])
    with eval_mode(model):  # a caller's .train() must not switch on dropout or batch statistics here
        parts = [model.net.embed(chunk.to(device), level=level) for chunk in audio.split(rows)]
    return torch.cat(parts).float().to(audio.device)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
