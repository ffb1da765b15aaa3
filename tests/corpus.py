"""A corpus of bad and odd input files, for the reliability tests.

``make_corpus(dir)`` writes one file (or folder, or link) per kind and returns
a :class:`Case` for each. "bad" cases must be refused with a
:class:`~specnet.errors.SpecnetError` whose message contains ``expected``;
"odd" cases are unusual but valid and must decode, to what ``expect`` says.

Import it like the helpers (``from corpus import make_corpus``): pytest puts
``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from helpers import make_image, make_noise, make_tone, sine, write_audio

PathLike = Union[str, bytes]


@dataclass
class Case:
    """One corpus entry.

    name : short identifier (test ids).
    path : the file; ``bytes`` for the name that is not valid UTF-8.
    kind : "bad" (must raise SpecnetError) or "odd" (must decode).
    expected : for bad cases, a substring of the error message.
    input_kind : "audio" or "image" (which model the file is meant for).
    expect : for odd audio cases, what :func:`specnet.audio.audio_info` must
        report (``sample_rate``, ``channels``, ``frames``), plus ``silent``
        when every sample is zero and ``decoded`` when fewer frames decode
        than the header declares (a FLAC file cut short).
    unreadable : the file has mode 000; as root reads still work, so tests
        simulate the refusal (see :func:`deny_reads`).
    slow : big enough that tests should use it sparingly (the 10-minute clip).
    """

    name: str
    path: PathLike
    kind: str
    expected: str = ""
    input_kind: str = "audio"
    expect: dict[str, Any] = field(default_factory=dict)
    unreadable: bool = False
    slow: bool = False

    @property
    def display(self) -> str:
        """How specnet names the file in messages (non-UTF-8 bytes as ``\\xNN``)."""
        return os.fsencode(self.path).decode("utf-8", "backslashreplace")

    @property
    def str_path(self) -> str:
        """``path`` as ``str`` (surrogate-escaped when not UTF-8), as ``sys.argv`` holds it."""
        return os.fsdecode(self.path)


def wav_bytes(samples: np.ndarray, sr: int, *, chunks: list[tuple[bytes, bytes]] = (),
              data_size: int | None = None) -> bytes:
    """A 16-bit PCM mono RIFF/WAVE file built by hand.

    ``chunks`` are ``(id, payload)`` pairs written between ``fmt `` and
    ``data`` (odd payloads get the pad byte RIFF requires); ``data_size``
    overrides the size the data chunk header claims.
    """
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sr, sr * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    for chunk_id, payload in chunks:
        body += chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)
    body += b"data" + struct.pack("<I", len(pcm) if data_size is None else data_size) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _tone_int16(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    return np.round(sine(freq, seconds, sr) * 32767).astype("<i2")


def write_long_noise(path: Path, *, seconds: float, sr: int, amplitude: float = 0.01,
                     block_seconds: float = 60.0, seed: int = 0) -> Path:
    """Low-amplitude 16-bit noise written block by block (memory O(block))."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    block = int(block_seconds * sr)
    remaining = int(seconds * sr)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        while remaining:
            n = min(block, remaining)
            f.write(rng.uniform(-amplitude, amplitude, n).astype(np.float32))
            remaining -= n
    return path


def make_corpus(directory: str | os.PathLike, *, long: bool = True) -> list[Case]:
    """Write every corpus file under ``directory`` and describe them.

    ``long=False`` leaves out the 10-minute clip (about 9.6 MB at 8 kHz).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def bad(name: str, path: PathLike, expected: str, **kw: Any) -> None:
        cases.append(Case(name, path if isinstance(path, bytes) else str(path), "bad", expected, **kw))

    def odd(name: str, path: PathLike, **kw: Any) -> None:
        cases.append(Case(name, path if isinstance(path, bytes) else str(path), "odd", **kw))

    # ---- bad: nothing usable, or not audio at all
    (d / "empty.wav").write_bytes(b"")
    bad("empty", d / "empty.wav", "file is empty")

    (d / "header_only.wav").write_bytes(wav_bytes(np.zeros(0), 16000))
    bad("header_only", d / "header_only.wav", "contains no audio samples")

    rng = np.random.default_rng(1234)
    (d / "random.wav").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    bad("random_bytes", d / "random.wav", "not a readable audio file")

    (d / "text.flac").write_text("This is not a FLAC file.\n" * 20)
    bad("text_as_flac", d / "text.flac", "not a readable audio file")

    (d / "x.wav").mkdir()
    bad("directory", d / "x.wav", "is a directory")

    locked = d / "locked.wav"
    make_tone(locked, 440.0, 0.2, 16000)
    locked.chmod(0)
    bad("no_read_permission", locked, "permission denied", unreadable=True)

    os.symlink(d / "does-not-exist.wav", d / "broken_link.wav")
    bad("broken_symlink", d / "broken_link.wav", "broken symbolic link")

    bad("missing", d / "missing.wav", "file not found")

    y = sine(440.0, 0.2, 16000).astype(np.float32)
    y[100] = np.nan
    write_audio(d / "nan.wav", y, 16000, subtype="FLOAT")
    bad("nan_samples", d / "nan.wav", "NaN or infinite")

    y = sine(440.0, 0.2, 16000)
    y[-1] = np.inf
    write_audio(d / "inf.wav", y, 16000, subtype="DOUBLE")
    bad("inf_samples", d / "inf.wav", "NaN or infinite")

    png = d / "picture.png"
    make_image(png, "RGB", (16, 16))
    (d / "picture.wav").write_bytes(png.read_bytes())
    bad("png_as_wav", d / "picture.wav", "not a readable audio file")

    make_tone(d / "cut.flac", 440.0, 1.0, 16000)
    flac = (d / "cut.flac").read_bytes()
    (d / "cut.flac").write_bytes(flac[:200])  # the header (86 bytes) and the start of the first frame (2.7 kB)
    bad("flac_cut_in_first_frame", d / "cut.flac", "contains no audio samples that decode")

    (d / "notes.xyz").write_text("hello")
    bad("unknown_suffix", d / "notes.xyz", "unsupported audio format")

    make_image(d / "big.png", "RGB", (64, 64))
    data = (d / "big.png").read_bytes()
    (d / "corrupt.png").write_bytes(data[: len(data) * 2 // 3])  # pixel data cut short
    os.unlink(d / "big.png")
    bad("corrupt_png", d / "corrupt.png", "corrupt image data", input_kind="image")

    # ---- odd but valid
    cut = wav_bytes(_tone_int16(1.0, 16000), 16000)
    (d / "truncated.wav").write_bytes(cut[: 44 + 2 * 1000 + 1])  # claims 16000 frames, holds 1000.5
    # libsndfile reads what is there, like sox and ffmpeg: a recording cut off
    # by a crash is still usable audio.
    odd("truncated_wav", d / "truncated.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 1000})

    (d / "half.flac").write_bytes(flac[: len(flac) // 2])
    # FLAC decodes a frame of 4096 samples at a time: the one whole frame before the cut, with a warning.
    odd("truncated_flac", d / "half.flac", expect={"sample_rate": 16000, "channels": 1, "frames": 16000, "decoded": 4096})

    write_audio(d / "one.wav", np.array([0.5]), 16000, subtype="PCM_16")
    odd("one_sample", d / "one.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 1})

    write_audio(d / "silence.wav", np.zeros(8000), 16000, subtype="PCM_16")
    odd("silence", d / "silence.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 8000, "silent": True})

    make_tone(d / "multi.wav", 300.0, 0.25, 96000, subtype="PCM_24", channels=8)
    odd("96k_8ch_24bit", d / "multi.wav", expect={"sample_rate": 96000, "channels": 8, "frames": 24000})

    make_tone(d / "u8.wav", 440.0, 0.5, 8000, subtype="PCM_U8")
    odd("8bit_unsigned", d / "u8.wav", expect={"sample_rate": 8000, "channels": 1, "frames": 4000})

    make_tone(d / "f64.wav", 440.0, 0.5, 22050, subtype="DOUBLE")
    odd("float64", d / "f64.wav", expect={"sample_rate": 22050, "channels": 1, "frames": 11025})

    make_tone(d / "short.wav", 440.0, 0.01, 16000)
    odd("10ms", d / "short.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 160})

    name = os.fsencode(d) + b"/caf\xe9-\xff.wav"  # Latin-1 bytes: not UTF-8
    make_tone(d / "plain.wav", 440.0, 0.3, 16000)
    with open(name, "wb") as handle:  # soundfile cannot open such names itself
        handle.write((d / "plain.wav").read_bytes())
    os.unlink(d / "plain.wav")
    odd("non_utf8_name", name, expect={"sample_rate": 16000, "channels": 1, "frames": 4800})

    info = b"INFO" + b"INAM" + struct.pack("<I", 5) + b"tone\0" + b"\0"  # odd size, padded
    chunks = [(b"LIST", info), (b"junk", b"\0" * 27)]
    (d / "chunks.wav").write_bytes(wav_bytes(_tone_int16(0.3, 16000), 16000, chunks=chunks))
    odd("list_junk_chunks", d / "chunks.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 4800})

    make_tone(d / "tone.flac", 440.0, 0.3, 44100, subtype="PCM_16", channels=2)
    odd("stereo_flac_44k", d / "tone.flac", expect={"sample_rate": 44100, "channels": 2, "frames": 13230})

    make_noise(d / "noise.wav", 0.3, 16000, subtype="FLOAT")
    odd("float32_noise", d / "noise.wav", expect={"sample_rate": 16000, "channels": 1, "frames": 4800})

    if long:
        write_long_noise(d / "ten_minutes.wav", seconds=600.0, sr=8000)
        odd("10min", d / "ten_minutes.wav", expect={"sample_rate": 8000, "channels": 1, "frames": 4_800_000},
            slow=True)
    return cases


def deny_reads(monkeypatch, paths) -> None:
    """Make opening any of ``paths`` raise PermissionError inside specnet.

    Mode 000 does not stop root, so when the tests run as root this is how a
    file without read permission is simulated; otherwise the real mode bits
    do the job and nothing is patched.
    """
    if os.geteuid() != 0:
        return
    import builtins

    import specnet.catalog
    import specnet.paths

    denied = {os.fsencode(os.path.abspath(os.fsdecode(p))) for p in paths}
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            if os.fsencode(os.path.abspath(os.fsdecode(file))) in denied:
                raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(specnet.paths, "open", guarded_open, raising=False)
    monkeypatch.setattr(specnet.catalog, "open", guarded_open, raising=False)  # model files are checked there


#: Names of the cases make_corpus writes, for parametrising tests at collection time.
BAD_AUDIO = ["empty", "header_only", "random_bytes", "text_as_flac", "directory", "no_read_permission",
             "broken_symlink", "missing", "nan_samples", "inf_samples", "png_as_wav", "flac_cut_in_first_frame",
             "unknown_suffix"]
BAD_IMAGE = ["corrupt_png"]
ODD_AUDIO = ["truncated_wav", "truncated_flac", "one_sample", "silence", "96k_8ch_24bit", "8bit_unsigned", "float64", "10ms",
             "non_utf8_name", "list_junk_chunks", "stereo_flac_44k", "float32_noise", "10min"]

# One tiny model of each kind per test session, whichever test module asks first.
_MODELS: dict[str, Path] = {}


def tiny_audio_model(tmp_path_factory) -> Path:
    """A cnn_tiny audio model (classes "a", "b"; 16 kHz, 32 mels, 0.5 s clips), trained for one epoch."""
    if "audio" not in _MODELS:
        import specnet
        from helpers import make_class_folders

        root = tmp_path_factory.mktemp("tiny_audio_model")
        data = make_class_folders(root / "data", {"a": 3, "b": 3}, seconds=0.5)
        specnet.train(data, root / "run", arch="cnn_tiny", epochs=1, batch_size=4, num_workers=1,
                      augment=False, quiet=True, features={"n_mels": 32})
        _MODELS["audio"] = root / "run" / "model.safetensors"
    return _MODELS["audio"]


def tiny_image_model(tmp_path_factory) -> Path:
    """An untrained cnn_tiny RGB image model (classes "x", "y", 16 x 16 pixels)."""
    if "image" not in _MODELS:
        import torch

        from specnet.modelfile import save_model_file
        from specnet.network import SpecNet
        from specnet.modelspec import ModelSpec

        torch.manual_seed(0)
        spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=("x", "y"), in_chans=3,
                         image_size=(16, 16))
        path = tmp_path_factory.mktemp("tiny_image_model") / "image.safetensors"
        save_model_file(SpecNet(spec), path)
        _MODELS["image"] = path
    return _MODELS["image"]
