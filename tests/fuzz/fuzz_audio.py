"""Fuzz specnet's audio readers with mutated WAV/FLAC/OGG headers and random bytes.

The property: ``load_audio``, ``audio_info`` and ``iter_audio_blocks`` either
return sane audio or raise :class:`~specnet.errors.SpecnetError`; nothing else
(no ValueError from soundfile, no MemoryError, no crash, no hang) gets out.

The strategies live here and are shared with ``tests/test_fuzz.py``, which
runs a short, fixed number of examples on every test run. Run this file
directly for a long session (it is not collected by pytest)::

    python tests/fuzz/fuzz_audio.py --minutes 5
    python tests/fuzz/fuzz_audio.py --minutes 60 --seed 3

Failures are shrunk by hypothesis and printed; the failing input is also
written to ``tests/fuzz/crashes/`` so it can be replayed with ``--replay FILE``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, so `import specnet` finds this checkout

import specnet  # noqa: E402
from specnet.audio import audio_info, iter_audio_blocks, load_audio  # noqa: E402
from specnet.errors import SpecnetError  # noqa: E402

HEADER_BYTES = 64  # mutations land in the headers, where the parsers' decisions are made
# Values that break arithmetic on header fields: zero, one, sign bits, all ones.
INTERESTING_32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _encode(y: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def seed_files() -> dict[str, tuple[str, bytes]]:
    """Small valid files, name -> (suffix, bytes): the starting points of mutation."""
    t = np.arange(800) / 16000
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([mono, mono[::-1]], axis=1)
    seeds = {
        "wav_pcm16": (".wav", _encode(mono, 16000, "WAV", "PCM_16")),
        "wav_float": (".wav", _encode(mono, 16000, "WAV", "FLOAT")),
        "wav_u8_stereo": (".wav", _encode(stereo, 8000, "WAV", "PCM_U8")),
        "wav_pcm24_stereo": (".wav", _encode(stereo, 48000, "WAV", "PCM_24")),
        "flac": (".flac", _encode(mono, 16000, "FLAC", "PCM_16")),
        "flac_stereo": (".flac", _encode(stereo, 44100, "FLAC", "PCM_24")),
    }
    try:
        seeds["ogg"] = (".ogg", _encode(mono, 16000, "OGG", "VORBIS"))
    except (sf.LibsndfileError, TypeError, ValueError):  # libsndfile built without Vorbis
        pass
    return seeds


SEEDS = seed_files()


@st.composite
def mutated_headers(draw, seeds: dict[str, tuple[str, bytes]] = SEEDS) -> tuple[str, bytes]:
    """A seed file with 1-4 edits in its first HEADER_BYTES bytes: (suffix, bytes)."""
    name = draw(st.sampled_from(sorted(seeds)))
    suffix, original = seeds[name]
    data = bytearray(original)
    edits = draw(st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate", "int16", "int32"]),
            st.integers(0, HEADER_BYTES - 1),
            st.integers(0, 255),
            st.sampled_from(INTERESTING_32),
        ),
        min_size=1, max_size=4,
    ))
    for op, pos, byte, value in edits:
        pos = min(pos, len(data))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << (byte % 8)
        elif op == "set" and pos < len(data):
            data[pos] = byte
        elif op == "insert":
            data[pos:pos] = bytes([byte])
        elif op == "delete" and pos < len(data):
            del data[pos]
        elif op == "truncate":  # anywhere in the header or the first few KB of audio
            data = data[: pos + 16 * byte]
        elif op == "int16":
            data[pos:pos + 2] = (value & 0xFFFF).to_bytes(2, "little")
        elif op == "int32":
            data[pos:pos + 4] = value.to_bytes(4, "little")
    return suffix, bytes(data)


random_files = st.tuples(
    st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff", ".au", ".caf"]),
    st.binary(min_size=0, max_size=512),
)


def check_file(path: str | os.PathLike) -> None:
    """The property: every reader either gives sane audio or raises SpecnetError."""
    try:
        info = audio_info(path)
    except SpecnetError:
        pass
    else:
        assert info.sample_rate > 0 and info.channels > 0 and info.frames >= 0, info
    for mono in (True, False):
        try:
            y, sr = load_audio(path, mono=mono)
        except SpecnetError:
            pass
        else:
            assert y.dtype == np.float32 and y.shape[-1] > 0 and sr > 0
            assert y.ndim == (1 if mono else 2)
            assert np.isfinite(y).all()
    for rate in (None, 16000):
        try:
            for block in iter_audio_blocks(path, block_samples=4096, hop_samples=2048, sample_rate=rate):
                assert block.samples.shape == (4096,) and np.isfinite(block.samples).all()
        except SpecnetError:
            pass


def check_bytes(directory: str | os.PathLike, suffix: str, data: bytes) -> None:
    path = Path(directory) / f"fuzz{suffix}"
    path.write_bytes(data)
    check_file(path)


# ---------------------------------------------------------------- command line


def _save_crash(suffix: str, data: bytes) -> Path:
    folder = HERE / "crashes"
    folder.mkdir(exist_ok=True)
    path = folder / f"crash-{int(time.time() * 1000)}{suffix}"
    path.write_bytes(data)
    return path


def run(minutes: float, seed: int | None) -> int:
    from hypothesis import HealthCheck, given, settings

    deadline = time.monotonic() + 60 * minutes
    counts = {"examples": 0}
    work = tempfile.mkdtemp(prefix="specnet-fuzz-")
    failures = []

    def one(suffix: str, data: bytes) -> None:
        counts["examples"] += 1
        try:
            check_bytes(work, suffix, data)
        except Exception:
            failures.append((suffix, data))
            raise

    # Rounds of a few hundred examples until the time is up; each round draws afresh.
    fuzz_settings = settings(max_examples=300, deadline=None, database=None, derandomize=seed is not None,
                             suppress_health_check=list(HealthCheck), print_blob=True)
    rounds = 0
    strategy = st.one_of(mutated_headers(), random_files)
    while time.monotonic() < deadline:
        rounds += 1

        @fuzz_settings
        @given(strategy)
        def fuzz(case):
            if time.monotonic() < deadline:
                one(*case)

        if seed is not None:
            fuzz._hypothesis_internal_use_seed = seed + rounds
        try:
            fuzz()
        except Exception as exc:  # hypothesis has shrunk and printed the failing example
            suffix, data = failures[-1]
            print(f"FAILED: {type(exc).__name__}: {exc}\nsaved the input as {_save_crash(suffix, data)}", flush=True)
            return 1
    print(f"ok: {counts['examples']} inputs in {minutes:g} min ({rounds} rounds), "
          "no exception other than SpecnetError", flush=True)
    return 0


def replay(path: str) -> int:
    check_file(path)
    print(f"ok: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to fuzz (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="make the run repeatable")
    parser.add_argument("--replay", metavar="FILE", help="check one saved input and exit")
    args = parser.parse_args(argv)
    print(f"specnet {specnet.__version__}, soundfile {sf.__version__}, libsndfile {sf.__libsndfile_version__}; "
          f"seeds: {', '.join(SEEDS)}", flush=True)
    return replay(args.replay) if args.replay else run(args.minutes, args.seed)


if __name__ == "__main__":
    sys.exit(main())
