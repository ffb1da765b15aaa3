"""Shared fixtures: small synthetic audio files (helpers live in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tone


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """1 s of a 440 Hz sine at 16 kHz, mono 16-bit WAV, amplitude 0.5."""
    return make_tone(tmp_path / "tone.wav", 440.0, 1.0, 16000)


@pytest.fixture
def stereo_wav(tmp_path: Path) -> Path:
    """0.5 s stereo 16-bit WAV at 16 kHz: 440 Hz left, 880 Hz right, amplitude 0.5."""
    return make_tone(tmp_path / "stereo.wav", 440.0, 0.5, 16000, channels=2)
