"""Shared fixtures: small synthetic audio files (helpers live in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tone


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run torch on one intra-op thread for the whole suite.

    The test models are tiny: two OpenMP threads mostly wait for each other,
    and on a busy 2-core machine they make training 10-20 times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """1 s of a 440 Hz sine at 16 kHz, mono 16-bit WAV, amplitude 0.5."""
    return make_tone(tmp_path / "tone.wav", 440.0, 1.0, 16000)


@pytest.fixture
def stereo_wav(tmp_path: Path) -> Path:
    """0.5 s stereo 16-bit WAV at 16 kHz: 440 Hz left, 880 Hz right, amplitude 0.5."""
    return make_tone(tmp_path / "stereo.wav", 440.0, 0.5, 16000, channels=2)


@pytest.fixture(scope="session")
def audio_run(tmp_path_factory):
    """One small model trained once per session on synthetic audio (see ``synthetic.py``)."""
    import synthetic

    return synthetic.audio_run(tmp_path_factory)

