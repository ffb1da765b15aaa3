"""Shared fixtures: small synthetic audio files (helpers live in ``helpers.py``)."""

from __future__ import annotations

import logging
import os
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


@pytest.fixture(autouse=True)
def restore_specnet_logging():
    """Undo what ``specnet.cli.main`` does to the process: it gives the "specnet" logger a
    one-line handler and stops it propagating (which hides warnings from caplog under
    pytest 8), and ``--debug`` sets SPECNET_DEBUG. Every test starts without SPECNET_DEBUG
    (whatever the shell has) and ends with the logger and environment as they were."""
    # Not monkeypatch: a test calling monkeypatch.undo() would undo this too, mid-test.
    debug = os.environ.pop("SPECNET_DEBUG", None)
    logger = logging.getLogger("specnet")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
    if debug is None:
        os.environ.pop("SPECNET_DEBUG", None)
    else:
        os.environ["SPECNET_DEBUG"] = debug


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

