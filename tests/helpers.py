"""Small synthetic audio and image files for tests.

Import these in any test module (``from helpers import make_tone``): pytest
puts ``tests/`` on ``sys.path`` because it holds ``conftest.py`` and no
``__init__.py``. Every ``make_*`` writes one file (or folder) and returns its
path, so tests can build exactly the input they need in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

#: Whether tests run where specnet picks a CUDA device (device "auto").
ON_CUDA = torch.cuda.is_available()
#: How far apart one input's outputs may be on CUDA, as a fraction of their largest value:
#: cuDNN runs float32 convolutions in TF32 (PyTorch's default) with an algorithm chosen per
#: batch shape and process, which moves them by about 1e-3 of that (seen on an H200: batched
#: and single embeddings 0.018 apart at 20, the CPU's and the GPU's 4e-4 apart at 0.47). On the
#: CPU they agree to float32 rounding, and tests compare them as closely as before.
CUDA_RTOL = 3e-3


def sine(freq: float, seconds: float, sr: int, *, amplitude: float = 0.5,
         channels: int = 1) -> np.ndarray:
    """A sine tone in soundfile's layout.

    Returns float64 [shape=(frames,) if channels == 1 else (frames, channels)],
    ``frames = round(seconds * sr)``; channel ``c`` holds the tone at
    ``freq * (c + 1)``, so channels are told apart by their frequency.
    """
    t = np.arange(round(seconds * sr)) / sr
    y = np.stack([amplitude * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)],
                 axis=1)
    return y[:, 0] if channels == 1 else y


def write_audio(path: str | Path, y: np.ndarray, sr: int, *, subtype: str | None = None,
                format: str | None = None) -> Path:
    """Write samples ``y`` [shape=(frames,) or (frames, channels)] with soundfile.

    ``format`` and ``subtype`` are soundfile's ("WAV", "PCM_16", ...); None
    lets soundfile pick from the suffix.
    """
    sf.write(path, y, sr, subtype=subtype, format=format)
    return Path(path)


def make_tone(path: str | Path, freq: float, seconds: float, sr: int, subtype: str = "PCM_16",
              channels: int = 1, *, amplitude: float = 0.5, format: str | None = None) -> Path:
    """Write a sine tone (see :func:`sine`) to ``path`` and return the path.

    ``subtype`` is soundfile's ("PCM_U8", "PCM_16", "PCM_24", "PCM_32",
    "FLOAT", "DOUBLE", "VORBIS", "MPEG_LAYER_III", ...); the container comes
    from the suffix unless ``format`` is given.
    """
    y = sine(freq, seconds, sr, amplitude=amplitude, channels=channels)
    return write_audio(path, y, sr, subtype=subtype, format=format)


def make_noise(path: str | Path, seconds: float, sr: int, *, amplitude: float = 0.3,
               seed: int = 0, subtype: str = "PCM_16", channels: int = 1) -> Path:
    """Write uniform white noise in [-amplitude, amplitude], reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    shape = (round(seconds * sr),) if channels == 1 else (round(seconds * sr), channels)
    return write_audio(path, rng.uniform(-amplitude, amplitude, shape), sr, subtype=subtype)


def make_class_folders(root: str | Path, counts: dict[str, int], *, sr: int = 16000,
                       seconds: float = 0.5, base_freq: float = 220.0) -> Path:
    """Write a folder-of-labelled-files dataset: ``root/<class>/<class>_<i>.wav``.

    Classes are numbered in sorted order; class ``k`` gets tones near
    ``base_freq * 2**k`` (file ``i`` shifted by ``i`` Hz), so they are easy
    to tell apart. Returns ``root``.
    """
    root = Path(root)
    for k, label in enumerate(sorted(counts)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(counts[label]):
            make_tone(root / label / f"{label}_{i}.wav", base_freq * 2**k + i, seconds, sr)
    return root


def make_image(path: str | Path, mode: str = "RGB", size: tuple[int, int] = (24, 32), *,
               seed: int = 0, **save_kwargs) -> np.ndarray:
    """Write random pixels as an image of ``size=(height, width)``.

    ``mode`` is one of Pillow's "L", "LA", "RGB", "RGBA". The format comes
    from the suffix; ``save_kwargs`` go to ``Image.save``
    (``quality=95`` for JPEG, say). Returns the pixels written, uint8
    [shape=(H, W) or (H, W, bands)].
    """
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    shape = size if bands == 1 else (*size, bands)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save_kwargs)  # mode follows from the shape
    return pixels


def peak_frequency(y: np.ndarray, sr: int) -> float:
    """Frequency in Hz of the largest FFT bin of mono ``y`` [shape=(n,)], Hann-windowed."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


def stop_after_epoch(last: int):
    """An ``on_epoch_end`` callback for ``specnet.train`` that stops the run after epoch ``last``
    (counted from 0) with a KeyboardInterrupt, as Ctrl-C does."""
    def stop(row, model):
        if row["epoch"] == last:
            raise KeyboardInterrupt
    return stop


def make_unreadable(monkeypatch, *folders: str | Path) -> None:
    """Make ``folders`` fail to list, as a folder without read permission does (``chmod 000``
    stops no one when tests run as root, so the listing itself is made to fail)."""
    import os

    refused = {os.path.realpath(f) for f in folders}
    listing = os.scandir

    def scandir(path="."):
        if os.path.realpath(os.fsdecode(path)) in refused:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
