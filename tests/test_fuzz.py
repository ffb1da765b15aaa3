"""Property tests: random bytes and mutated WAV/FLAC/OGG headers never raise anything but SpecnetError.

A short run of the strategies in ``tests/fuzz/fuzz_audio.py`` (run that file
directly for a long session; ``tests/fuzz/README.md`` records what it found).
Inputs it once failed on are pinned below as regression examples.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from specnet.audio import audio_info, iter_audio_blocks, load_audio
from specnet.errors import AudioError, SpecnetError

_spec = importlib.util.spec_from_file_location("fuzz_audio", Path(__file__).parent / "fuzz" / "fuzz_audio.py")
fuzz_audio = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_audio)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    # One folder for every example (hypothesis reruns the test body, not function-scoped fixtures).
    return tmp_path_factory.mktemp("fuzz")


@FAST
@given(case=fuzz_audio.random_files)
def test_random_bytes(work, case):
    fuzz_audio.check_bytes(work, *case)


@FAST
@given(case=fuzz_audio.mutated_headers())
def test_mutated_headers(work, case):
    fuzz_audio.check_bytes(work, *case)


def _wav_with(**fields) -> bytes:
    """The pcm16 seed WAV with header fields replaced (name -> new int value)."""
    offsets = {"channels": (22, 2), "sample_rate": (24, 4), "block_align": (32, 2), "bits": (34, 2),
               "data_size": (40, 4)}
    data = bytearray(fuzz_audio.SEEDS["wav_pcm16"][1])
    for name, value in fields.items():
        start, size = offsets[name]
        data[start:start + size] = value.to_bytes(size, "little")
    return bytes(data)


@pytest.mark.parametrize("fields", [
    {"sample_rate": 0},
    {"sample_rate": 1},
    {"sample_rate": 0xFFFFFFFF},
    {"channels": 0},
    {"channels": 0xFFFF},
    {"bits": 0},
    {"bits": 0xFFFF},
    {"block_align": 0},
    {"data_size": 0xFFFFFFFF},
    {"data_size": 0},
], ids=lambda fields: ",".join(f"{k}={v:#x}" for k, v in fields.items()))
def test_extreme_wav_header_fields(work, fields):
    fuzz_audio.check_bytes(work, ".wav", _wav_with(**fields))


def test_flac_claiming_2_to_the_36_frames(work, caplog):
    """Found by fuzz_audio.py: soundfile sized its array from STREAMINFO's total_samples -> MemoryError.
    Read block by block, the 800 samples there are decode, as a FLAC file cut short does."""
    data = bytearray(fuzz_audio.SEEDS["flac"][1])
    data[21] |= 0x0F  # the top 4 of total_samples' 36 bits (the low nibble of byte 21)
    data[22:26] = b"\xff\xff\xff\xff"
    path = work / "huge.flac"
    path.write_bytes(bytes(data))
    assert audio_info(path).frames == 2**36 - 1  # the header's claim
    with caplog.at_level(logging.WARNING, logger="specnet"):
        assert load_audio(path)[0].shape == (800,)  # not MemoryError
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: decoding stopped at 0.050 s of the 4294967.296 s the file declares (damaged data?); using what was decoded"]
    fuzz_audio.check_file(path)


def test_seeds_are_valid_audio(work):
    # The mutations start from files that decode: otherwise the fuzzing would test nothing.
    for name, (suffix, data) in fuzz_audio.SEEDS.items():
        path = work / f"seed{suffix}"
        path.write_bytes(data)
        y, sr = load_audio(path)
        assert y.shape[0] > 0 and audio_info(path).sample_rate == sr, name
        assert sum(b.n_valid for b in iter_audio_blocks(path, block_samples=256)) == audio_info(path).frames


def test_only_specnet_errors_escape(work, monkeypatch):
    # The property's own guard: a SpecnetError is an allowed outcome ...
    path = work / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError):
        load_audio(path)
    fuzz_audio.check_file(path)
    assert issubclass(AudioError, SpecnetError)
    # ... and any other exception from any of the three readers fails check_file.
    def crash(*args, **kwargs):
        raise ValueError("a reader bug")

    for reader in ("audio_info", "load_audio", "iter_audio_blocks"):
        with monkeypatch.context() as patch:
            patch.setattr(fuzz_audio, reader, crash)
            with pytest.raises(ValueError, match="a reader bug"):
                fuzz_audio.check_file(path)
