"""Synthetic datasets and one shared trained model for the training, inference,
evaluation and CLI tests.

Every class is plain to see on a log-mel spectrogram (a steady tone, clicks,
loud white noise), so a tiny CNN learns it in a few seconds on a CPU. The
trained run is cached per test session (:func:`audio_run`), so the test files
that need a model share one training run instead of each making their own.
Pitch alone would not do: after global pooling a CNN barely sees *where* on the
frequency axis a tone lies, so two tones an octave apart are a hard problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from helpers import write_audio
from PIL import Image

SR = 8000  # Hz; a low rate keeps every spectrogram small
CLIP_SECONDS = 0.5
FEATURES = {"sample_rate": SR, "n_fft": 256, "hop_length": 80, "n_mels": 32, "f_min": 0.0, "f_max": 4000.0}
# Options that make a tiny CNN learn the synthetic data in seconds and repeat exactly.
FAST = {
    "arch": "cnn_tiny",
    "features": FEATURES,
    "clip_seconds": CLIP_SECONDS,
    "batch_size": 4,
    "lr": 3e-3,
    "warmup_epochs": 0.5,
    "augment": False,
    "num_workers": 1,
    "device": "cpu",
    # float32 everywhere: the default (bfloat16 on CPUs with AMX) would give other
    # weights on other CI machines; test_training covers bfloat16 on its own.
    "amp": False,
    "quiet": True,
}
AUDIO_EPOCHS = 20  # clicks vs tone needs about 20 epochs with peak-relative dB (the default front-end)
# Classes a CNN tells apart by texture, whatever the pitch: a steady tone (a horizontal
# line on the spectrogram), clicks (vertical lines) and loud white noise (everywhere).
AUDIO_CLASSES = ("click", "hiss", "tone")


def background(seconds: float, *, seed: int, amplitude: float = 0.02) -> np.ndarray:
    """Quiet white noise (n,) at :data:`SR`, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-amplitude, amplitude, round(seconds * SR))


def tone(freq: float, seconds: float, *, amplitude: float = 0.3) -> np.ndarray:
    """A sine at ``freq`` Hz, (n,) at :data:`SR`."""
    t = np.arange(round(seconds * SR)) / SR
    return amplitude * np.sin(2 * np.pi * freq * t)


def clicks(rate: float, seconds: float, *, amplitude: float = 0.8, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    """Short decaying noise bursts every ``1 / rate`` s, starting ``offset`` s in."""
    rng = np.random.default_rng(seed)
    y = np.zeros(round(seconds * SR))
    burst = amplitude * np.exp(-np.arange(40) / 8) * rng.choice([-1.0, 1.0], 40)
    for start in np.arange(round(offset * SR), len(y), round(SR / rate)):
        piece = burst[: len(y) - start]
        y[start : start + len(piece)] += piece
    return y


def class_clip(label: str, i: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """Clip ``i`` of class ``label``, varied in pitch, rate and level by ``i``, over quiet noise."""
    y = background(seconds, seed=1000 * AUDIO_CLASSES.index(label) + i)
    if label == "hiss":
        return y + background(seconds, seed=7919 + i, amplitude=0.2 + 0.02 * (i % 5))
    if label == "tone":
        return y + tone(300.0 * 1.4 ** (i % 6), seconds, amplitude=0.15 + 0.03 * (i % 4))
    # The first click within 70 ms for every i, as in the training clips (i < 8): a later
    # start leaves an unseen clip only two or three clicks, which is a harder problem.
    return y + clicks(10.0 + 2 * (i % 5), seconds, amplitude=0.6 + 0.1 * (i % 3), offset=0.01 * (i % 8), seed=i)


def make_audio_dataset(root: Path, *, per_class: int = 8, classes: tuple[str, ...] = AUDIO_CLASSES,
                       seconds: float = CLIP_SECONDS) -> Path:
    """``root/<class>/<class>_<i>.wav`` for each of ``classes`` (any of :data:`AUDIO_CLASSES`)."""
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_audio(root / label / f"{label}_{i}.wav", class_clip(label, i, seconds), SR)
    return root


def chirp(f0: float, f1: float, seconds: float, *, amplitude: float = 0.3) -> np.ndarray:
    """A linear sweep from ``f0`` to ``f1`` Hz."""
    t = np.arange(round(seconds * SR)) / SR
    return amplitude * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))


def make_chirp_dataset(root: Path, *, per_class: int = 6) -> Path:
    """Classes "up" and "down": rising and falling sweeps (new class names for fine-tuning)."""
    for label, (f0, f1) in {"up": (300.0, 2500.0), "down": (2500.0, 300.0)}.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            y = chirp(f0 * (1 + 0.02 * i), f1 * (1 + 0.02 * i), CLIP_SECONDS) + background(CLIP_SECONDS, seed=50 + i)
            write_audio(root / label / f"{label}_{i}.wav", y, SR)
    return root


def pattern(kind: str, size: int, *, period: int, phase: int) -> np.ndarray:
    """(size, size) uint8 stripes ("horizontal", "vertical") or a "checker" board."""
    rows, cols = np.indices((size, size))
    if kind == "horizontal":
        on = ((rows + phase) // period) % 2
    elif kind == "vertical":
        on = ((cols + phase) // period) % 2
    else:
        on = (((rows + phase) // period) + ((cols + phase) // period)) % 2
    return (40 + 175 * on).astype(np.uint8)


IMAGE_CLASSES = ("checker", "horizontal", "vertical")


def make_image_dataset(root: Path, *, per_class: int = 8, size: int = 32) -> Path:
    """``root/<class>/<i>.png``: RGB stripes or checkerboards of varying period, phase and tint."""
    for label in IMAGE_CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            grey = pattern(label, size, period=3 + i % 4, phase=i)
            tint = np.array([1.0, 0.8 + 0.05 * (i % 3), 0.6 + 0.1 * (i % 4)])
            rgb = (grey[..., None] * tint).astype(np.uint8)
            Image.fromarray(rgb).save(root / label / f"{label}_{i}.png")
    return root


def event_recording(path: Path, *, seconds: float = 30.0, event: tuple[float, float] = (13.6, 16.6)) -> Path:
    """``seconds`` of loud white noise ("hiss") with a steady 700 Hz "tone" from ``event[0]`` to ``event[1]`` s."""
    y = background(seconds, seed=4242, amplitude=0.25)
    start, end = (round(t * SR) for t in event)
    y[start:end] = background((end - start) / SR, seed=4243) + tone(700.0, (end - start) / SR, amplitude=0.2)
    return write_audio(path, y, SR)


# Subprocesses get the same setting through the environment.
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Run:
    """A finished training run on the synthetic audio data."""

    data: Path  # the class folders it was trained on
    out: Path  # the run folder
    best: dict[str, Any]

    @property
    def model(self) -> Path:
        return self.out / "model.safetensors"


_RUNS: dict[str, Run] = {}


def audio_run(tmp_path_factory: Any) -> Run:
    """The synthetic audio model, trained once per test session (whichever test file asks first)."""
    if "audio" not in _RUNS:
        import specnet

        base = tmp_path_factory.mktemp("audio_run")
        data = make_audio_dataset(base / "data")
        best = specnet.train(data, base / "run", epochs=AUDIO_EPOCHS, val_split=0.25, **FAST)
        _RUNS["audio"] = Run(data, base / "run", best)
    return _RUNS["audio"]
