"""Audio file I/O: decode, inspect, resample and stream audio files.

Everything here returns float32 samples with time on the last axis: shape
``(samples,)`` for mono and ``(channels, samples)`` otherwise. Integer files
are scaled to [-1, 1); float files are passed through unclipped but must be
finite. Files are decoded with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis,
Opus, MP3, AIFF, AU, CAF, W64, RF64); formats libsndfile does not recognise
fall back to audioread, which needs ffmpeg or GStreamer for M4A/AAC/WebM.
Resampling uses soxr at "HQ" quality.

Every problem with a file raises :class:`~specnet.errors.AudioError` whose
message starts with the file name; bad argument values raise
:class:`~specnet.errors.ParameterError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import audioread
import numpy as np
import soundfile as sf
import soxr

from specnet.checks import is_finite_number, is_integer
from specnet.errors import AudioError, ParameterError
from specnet.paths import PathLike, display_name, open_for_reading
from specnet.windows import loudest_sample

log = logging.getLogger("specnet")

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioBlock",
    "AudioInfo",
    "audio_info",
    "is_audio_file",
    "iter_audio_blocks",
    "load_audio",
    "resample",
    "resampled_to",
]


# Suffixes libsndfile decodes by itself.
_SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
     ".au", ".snd", ".caf", ".w64", ".rf64"}
)
# Suffixes only audioread can decode, and only with ffmpeg or GStreamer installed.
_AUDIOREAD_EXTENSIONS = frozenset({".m4a", ".aac", ".webm"})

#: Lower-case file suffixes specnet treats as audio.
AUDIO_EXTENSIONS = _SOUNDFILE_EXTENSIONS | _AUDIOREAD_EXTENSIONS

_RESAMPLE_QUALITY = "HQ"
# Frames read per soundfile call when streaming: big enough to amortise the
# call overhead, small enough that memory stays O(block) for long files.
_READ_FRAMES = 1 << 16

#: The largest sample magnitude analysed. Full scale is 1, and a float file written with 32-bit
#: integer values reaches 2.1e9; from about 1e16 on, a spectrogram's power overflows float32
#: (inf, then NaN scores), so samples beyond this are refused as NaN samples are.
MAX_SAMPLE = 1e12
#: libsndfile formats whose length is only known by decoding (the others' headers count their samples).
_COMPRESSED_CONTAINERS = frozenset({"OGG", "FLAC", "MP3"})
# libsndfile's SF_ERR_UNRECOGNISED_FORMAT and SF_ERR_UNSUPPORTED_ENCODING.
_SF_UNRECOGNISED = 1
_SF_UNSUPPORTED_ENCODING = 4
# The frame count libsndfile reports for a FLAC stream whose header leaves its length out (SF_COUNT_MAX).
_UNKNOWN_FRAMES = 2**63 - 1


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says about its audio.

    ``frames`` counts samples per channel; for MP3 and files read through
    audioread it is an estimate from the header.
    """

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


class AudioBlock(NamedTuple):
    """One fixed-length window of a file, as yielded by :func:`iter_audio_blocks`.

    ``samples`` always holds ``block_samples`` samples; only the first
    ``n_valid`` are audio, the rest of the file's last window is zeros.
    """

    start: int
    """Index of the block's first sample, at the output sample rate."""
    samples: np.ndarray
    """float32 [shape=(block_samples,) or (channels, block_samples)]."""
    n_valid: int
    """How many leading samples are real audio rather than zero padding."""


def is_audio_file(path: PathLike) -> bool:
    """Whether ``path`` has a suffix in :data:`AUDIO_EXTENSIONS` (case-insensitive).

    Only the name is checked; the file need not exist.
    """
    return _suffix(path) in AUDIO_EXTENSIONS


def load_audio(
    path: PathLike,
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode an audio file.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file. Names that are not valid UTF-8 are fine.
    sample_rate : int > 0 or None
        Resample to this rate (soxr "HQ"); None keeps the file's rate.
    mono : bool
        Average the channels into one.
    offset : float >= 0
        Start reading this many seconds into the file.
    duration : float > 0 or None
        Read at most this many seconds; None reads to the end.

    Returns
    -------
    y : np.ndarray [shape=(samples,) if mono else (channels, samples), dtype=float32]
        The samples; integer formats are scaled to [-1, 1).
    sample_rate : int
        The rate of ``y`` in Hz.

    Raises
    ------
    AudioError
        The file is missing, unreadable, corrupt, empty, holds NaN or
        infinite samples or samples beyond :data:`MAX_SAMPLE` (far past full
        scale), or is in a format that cannot be decoded here.
    ParameterError
        ``sample_rate``, ``offset`` or ``duration`` is out of range.
    """
    _check_sample_rate("sample_rate", sample_rate, allow_none=True)
    if not (is_finite_number(offset) and offset >= 0):
        raise ParameterError(f"offset={offset!r} must be a finite number of seconds >= 0")
    if duration is not None and not (is_finite_number(duration) and duration > 0):
        raise ParameterError(f"duration={duration!r} must be a positive number of seconds or None")

    name = display_name(path)
    with _open(path, name) as f:
        if f is None:
            frames, native_sr = _decode_with_audioread(path, name)
            start = _start_frame(offset, native_sr, len(frames), name)
            stop = None if duration is None else start + max(1, round(duration * native_sr))
            frames = frames[start:stop]
        else:
            native_sr = f.samplerate
            start = _start_frame(offset, native_sr, f.frames, name)
            count = -1 if duration is None else max(1, round(duration * native_sr))
            if start:
                _call(name, f.seek, start, doing=f"cannot seek to offset={offset} s: ")
            frames = _read(f, name, count)
            if frames.shape[0]:
                _warn_if_cut_short(f, name, start + frames.shape[0], f.frames if count < 0 else min(start + count, f.frames))

    if frames.shape[0] == 0:
        raise _no_samples(name, None if f is None else f.format)
    if mono:
        y = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)  # (samples,)
    else:
        y = frames.T  # (channels, samples)
    if sample_rate is None or sample_rate == native_sr:
        return np.ascontiguousarray(y), native_sr
    return resampled_to(y, native_sr, sample_rate, name), sample_rate


def resampled_to(y: np.ndarray, native_sr: int, sample_rate: int, name: str) -> np.ndarray:
    """``y`` (..., samples) at ``native_sr`` Hz resampled to ``sample_rate`` Hz (soxr "HQ"), as
    :func:`load_audio` does; ``y`` itself when the rates agree. AudioError, naming ``name``, for
    a clip too short to give one sample."""
    if sample_rate == native_sr:
        return y
    out = resample(y, orig_sr=native_sr, target_sr=sample_rate)
    if out.shape[-1] == 0:
        raise AudioError(f"{name}: too short to resample ({y.shape[-1]} samples at {native_sr} Hz give none at {sample_rate} Hz)")
    return out


def audio_info(path: PathLike) -> AudioInfo:
    """Read sample rate, channel count and length from a file's header.

    The audio itself is not decoded, except for formats that only audioread
    reads, whose decoder reports the length, and a FLAC stream whose header
    leaves its length out (as streaming encoders may), whose frames are counted.

    Raises
    ------
    AudioError
        As for :func:`load_audio`.
    """
    name = display_name(path)
    with _open(path, name) as f:
        if f is not None:
            frames = _counted_frames(f, name) if f.frames == _UNKNOWN_FRAMES else f.frames
            return AudioInfo(sample_rate=f.samplerate, channels=f.channels, frames=frames)
    with _audioread_open(path, name) as reader:
        return AudioInfo(
            sample_rate=reader.samplerate,
            channels=reader.channels,
            frames=round(reader.duration * reader.samplerate),
        )


def _counted_frames(f: sf.SoundFile, name: str) -> int:
    """The frames ``f`` decodes to, counted block by block (for a header that leaves them out)."""
    count = 0
    while True:
        decoded = _read(f, name, _READ_FRAMES).shape[0]
        count += decoded
        if decoded < _READ_FRAMES:
            return count


def float_samples(y: np.ndarray) -> np.ndarray:
    """Samples ``y`` as float32, full scale at 1.0, the way soundfile reads PCM.

    PCM integers (8 to 32 bits) are scaled by ``2 ** (bits - 1)`` (unsigned ones centred
    first, as 8-bit WAV is), so an int16 array from ``soundfile.read(..., dtype="int16")``
    gives what the file gives; floats are kept as they are. Other dtypes (int64, the
    default of ``np.array`` of Python ints, is no PCM format) are a ParameterError.
    """
    if y.dtype.kind == "f":
        return y.astype(np.float32, copy=False)
    half = 2.0 ** (8 * y.dtype.itemsize - 1)
    if y.dtype.kind == "i" and y.dtype.itemsize <= 4:
        return (y / half).astype(np.float32)
    if y.dtype.kind == "u" and y.dtype.itemsize <= 4:
        return ((y - half) / half).astype(np.float32)
    raise ParameterError(f"samples of dtype {y.dtype} are not audio: give floats (full scale 1.0) or int8/16/32 PCM")


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with soxr at "HQ" quality.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n), floating point]
        Audio, time last.
    orig_sr, target_sr : int > 0
        Sample rates in Hz. When equal, ``y`` is returned as it is.

    Returns
    -------
    np.ndarray [shape=(..., m), same dtype as y]
        ``m`` is about ``n * target_sr / orig_sr`` (soxr rounds it).
    """
    _check_sample_rate("orig_sr", orig_sr)
    _check_sample_rate("target_sr", target_sr)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"y must be floating-point audio, got dtype {y.dtype}")
    if orig_sr == target_sr:
        return y
    lead, n = y.shape[:-1], y.shape[-1]
    if n == 0:
        return np.zeros((*lead, 0), dtype=y.dtype)
    # soxr takes float32 and float64: float16 is resampled as float32, longer floats as float64.
    work = np.float32 if y.dtype.itemsize <= 4 else np.float64
    if math.prod(lead) == 0:  # no channels, which soxr refuses: as long as one channel would be
        return np.zeros((*lead, len(soxr.resample(np.zeros(n, work), orig_sr, target_sr, quality=_RESAMPLE_QUALITY))), y.dtype)
    # soxr wants (frames, channels); fold any leading axes into channels.
    out = soxr.resample(np.ascontiguousarray(y.reshape(-1, n).T, dtype=work), orig_sr, target_sr, quality=_RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.reshape(-1, math.prod(lead)).T).reshape(*lead, -1).astype(y.dtype, copy=False)


def iter_audio_blocks(
    path: PathLike,
    *,
    block_samples: int,
    hop_samples: int | None = None,
    sample_rate: int | None = None,
    mono: bool = True,
    warn_truncated: bool = True,
    align_last: bool = False,
) -> Iterator[AudioBlock]:
    """Stream a file as fixed-length, possibly overlapping windows.

    The file is read in chunks and resampled with a stateful soxr stream, so
    memory stays O(block_samples) however long the file is, and the samples
    equal those of ``load_audio(path, sample_rate=...)`` up to float rounding.
    Formats that only audioread decodes are loaded whole, then cut up.

    Windows start at ``0, hop_samples, 2 * hop_samples, ...`` and stop with the
    first one that reaches the end of the file; that last one is zero-padded
    to ``block_samples``. A file of ``n`` samples (at ``sample_rate``) gives
    ``1 + max(0, ceil((n - block_samples) / hop_samples))`` windows when
    ``hop_samples <= block_samples``. With ``align_last``, a file of at least
    ``block_samples`` ends instead with a full window ending at its last sample,
    as :func:`specnet.windows.window_starts` places windows in memory.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file.
    block_samples : int > 0
        Window length in samples at ``sample_rate``.
    hop_samples : int > 0 or None
        Distance between window starts; None means ``block_samples`` (no
        overlap). Smaller values overlap windows, larger ones skip audio.
    sample_rate : int > 0 or None
        Resample to this rate; None keeps the file's rate.
    mono : bool
        Average the channels into one.
    warn_truncated : bool
        Log a warning when a WAV file holds less audio than its header
        declares, as :func:`load_audio` does; False for a caller that has
        already read the file's start and so reported it once.
    align_last : bool
        End on a full window aligned to the file's end rather than a
        zero-padded one (for files at least ``block_samples`` long).

    Yields
    ------
    AudioBlock
        ``(start, samples, n_valid)``: ``samples`` is float32 with shape
        ``(block_samples,)`` if mono else ``(channels, block_samples)``.

    Raises
    ------
    AudioError
        As for :func:`load_audio`, once iteration starts; a problem found
        mid-file is raised after the windows before it have been yielded.
    ParameterError
        At the call, if an argument is out of range.
    """
    _check_positive_int("block_samples", block_samples)
    if hop_samples is not None:
        _check_positive_int("hop_samples", hop_samples)
    _check_sample_rate("sample_rate", sample_rate, allow_none=True)
    hop = block_samples if hop_samples is None else hop_samples
    # A separate generator, so bad arguments raise at the call, not at first next().
    return _iter_blocks(path, block_samples=int(block_samples), hop_samples=int(hop),
                        sample_rate=sample_rate, mono=mono, warn_truncated=warn_truncated, align_last=align_last)


def _iter_blocks(
    path: PathLike, *, block_samples: int, hop_samples: int, sample_rate: int | None, mono: bool,
    warn_truncated: bool, align_last: bool,
) -> Iterator[AudioBlock]:
    name = display_name(path)
    with _open(path, name, warn_truncated=warn_truncated) as f:
        if f is None:
            y, _ = load_audio(path, sample_rate=sample_rate, mono=mono)
            chunks: Iterable[np.ndarray] = [y]
        else:
            chunks = _stream_chunks(f, name, sample_rate=sample_rate, mono=mono)
        yield from _cut_blocks(chunks, block_samples=block_samples, hop_samples=hop_samples, align_last=align_last)


def _stream_chunks(
    f: sf.SoundFile, name: str, *, sample_rate: int | None, mono: bool
) -> Iterator[np.ndarray]:
    """Read ``f`` chunk by chunk, yielding (samples,) or (channels, samples) at ``sample_rate``."""
    channels = 1 if mono else f.channels
    stream = None
    if sample_rate is not None and sample_rate != f.samplerate:
        stream = soxr.ResampleStream(f.samplerate, sample_rate, channels, dtype="float32",
                                     quality=_RESAMPLE_QUALITY)
    # About _READ_FRAMES samples out per read, however far the rate goes up: 65,536 frames of a
    # 1 Hz file would come out as a billion samples at 16 kHz.
    per_read = max(1, min(_READ_FRAMES, _READ_FRAMES * f.samplerate // (sample_rate or f.samplerate)))
    n_in = n_out = 0
    while True:
        frames = _read(f, name, per_read)  # (frames, file channels)
        last = frames.shape[0] < per_read
        n_in += frames.shape[0]
        x = frames.mean(axis=1) if mono else frames  # soxr's (frames[, channels]) layout
        if stream is not None:
            x = stream.resample_chunk(x, last=last)
        n_out += x.shape[0]
        if x.shape[0]:
            yield np.ascontiguousarray(x.T)
        if last:
            break
    if n_in == 0:
        raise _no_samples(name, f.format)
    _warn_if_cut_short(f, name, n_in, f.frames)
    if n_out == 0:
        raise AudioError(
            f"{name}: too short to resample ({n_in} samples at {f.samplerate} Hz "
            f"give none at {sample_rate} Hz)"
        )


def _cut_blocks(
    chunks: Iterable[np.ndarray], *, block_samples: int, hop_samples: int, align_last: bool = False
) -> Iterator[AudioBlock]:
    """Cut a stream of (..., n) chunks into windows; see :func:`iter_audio_blocks`."""
    buf: np.ndarray | None = None  # samples from buf_start on that a window may still need
    buf_start = 0
    next_start = 0
    total = 0
    keep = block_samples if align_last else 0  # the last window, should the file end here
    for chunk in chunks:
        total += chunk.shape[-1]
        buf = chunk if buf is None else np.concatenate([buf, chunk], axis=-1)
        while buf_start + buf.shape[-1] >= next_start + block_samples:
            i = next_start - buf_start
            yield AudioBlock(next_start, buf[..., i:i + block_samples].copy(), block_samples)
            next_start += hop_samples
        drop = min(next_start - buf_start, max(buf.shape[-1] - keep, 0))
        buf, buf_start = buf[..., drop:], buf_start + drop
    if buf is None:
        return
    covered = next_start - hop_samples + block_samples if next_start else 0
    if align_last and block_samples <= total:
        if covered < total:  # one full window ending at the file's end
            i = total - block_samples - buf_start
            yield AudioBlock(total - block_samples, buf[..., i:i + block_samples].copy(), block_samples)
        return
    # The tail: zero-padded windows, until one reaches the end of the file.
    while next_start < total and covered < total:
        valid = buf[..., next_start - buf_start:]
        block = np.zeros((*buf.shape[:-1], block_samples), dtype=np.float32)
        block[..., :valid.shape[-1]] = valid
        yield AudioBlock(next_start, block, valid.shape[-1])
        covered = next_start + block_samples
        next_start += hop_samples


def _check_positive_int(arg: str, value: object, *, unit: str = "") -> None:
    if not (is_integer(value) and value > 0):
        raise ParameterError(f"{arg}={value!r} must be a positive integer{unit}")


def _check_sample_rate(arg: str, value: object, *, allow_none: bool = False) -> None:
    if not (value is None and allow_none):
        _check_positive_int(arg, value, unit=" (Hz)")


def _suffix(path: PathLike) -> str:
    return Path(os.fsdecode(path)).suffix.lower()


def _supported_formats() -> str:
    return ", ".join(sorted(AUDIO_EXTENSIONS))


@contextlib.contextmanager
def _open(path: PathLike, name: str, *, warn_truncated: bool = True) -> Iterator[sf.SoundFile | None]:
    """Open ``path`` with soundfile; yield None for a suffix only audioread decodes
    (the caller then uses :func:`_decode_with_audioread`).
    """
    with open_for_reading(path, name, AudioError, "an audio file") as fh:
        # By descriptor where the OS has them: libsndfile then reads the file itself,
        # without a Python callback per read (a third of the cost of a short WAV).
        source = fh.fileno() if os.name == "posix" else fh
        try:
            f = sf.SoundFile(source, closefd=False) if isinstance(source, int) else sf.SoundFile(source)
        except sf.LibsndfileError as exc:
            if exc.code == _SF_UNSUPPORTED_ENCODING:
                raise AudioError(
                    f"{name}: unsupported audio encoding ({exc.error_string.rstrip('.')})"
                ) from None
            if exc.code != _SF_UNRECOGNISED:
                raise AudioError(
                    f"{name}: truncated or corrupt audio data ({exc.error_string.rstrip('.')})"
                ) from None
            f = None
        except (sf.SoundFileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"{name}: truncated or corrupt audio data ({exc})") from None
        if f is None:
            suffix = _suffix(path)
            if suffix in _AUDIOREAD_EXTENSIONS:
                yield None
                return
            if suffix in AUDIO_EXTENSIONS:
                raise AudioError(f"{name}: not a readable audio file (format not recognised)")
            raise AudioError(
                f"{name}: unsupported audio format '{suffix or '(no suffix)'}' "
                f"(supported: {_supported_formats()})"
            )
        with f:
            _refuse_unsized_wav(f, name)
            if warn_truncated:
                _warn_if_truncated(f, name)
                if f.format == "OGG":
                    _warn_if_ogg_cut(source, name)
            yield f


# libsndfile reads what a WAV file holds and notes a shorter data chunk in its log.
_DATA_CHUNK_LOG = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_SIZE = 0x7FFFF000  # from here up: sizes streaming writers leave in a header they cannot rewrite


# A data chunk whose size field is 0 and, after it, bytes that are no chunk: audio a writer never sized.
_UNSIZED_DATA_LOG = re.compile(r"^data\s*:\s*0\s*\n\*\*\* Unknown chunk marker \(\w+\) at position (\d+)", re.MULTILINE)
_FILE_LENGTH_LOG = re.compile(r"^Length\s*:\s*(\d+)", re.MULTILINE)


def _refuse_unsized_wav(f: sf.SoundFile, name: str) -> None:
    """Raise AudioError for a WAV file whose header gives its audio a size of 0 though audio
    follows: a recorder stopped before it wrote the size in (libsndfile then reads no samples,
    which would be reported as an empty file)."""
    if f.format not in ("WAV", "WAVEX") or f.frames:
        return
    log_text = f.extra_info
    unsized, length = _UNSIZED_DATA_LOG.search(log_text), _FILE_LENGTH_LOG.search(log_text)
    if unsized and length and int(length.group(1)) > int(unsized.group(1)):
        following = int(length.group(1)) - int(unsized.group(1))
        raise AudioError(f"{name}: the WAV header gives its audio a size of 0 bytes, yet {following} bytes follow it "
                         "(a recording stopped before its header was finished?); `sox --ignore-length IN OUT` rewrites it")


def _no_samples(name: str, container: str | None) -> AudioError:
    """The error for a file that decodes to no samples. An uncompressed file's header counts
    its samples; a compressed one cut short before its first complete block of audio (an
    Ogg page, say) decodes to nothing just as an empty one does."""
    if container in _COMPRESSED_CONTAINERS or container is None:  # None: decoded by audioread
        return AudioError(f"{name}: contains no audio samples that decode (empty, or truncated before its first complete block of audio)")
    return AudioError(f"{name}: contains no audio samples")


def _warn_if_truncated(f: sf.SoundFile, name: str) -> None:
    """Log a warning when a WAV file holds less audio than its header declares.

    An interrupted copy or download still decodes, to its first part only; the
    file is used as it is, but the user hears of it.
    """
    if f.format not in ("WAV", "WAVEX") or not f.frames:
        return
    match = _DATA_CHUNK_LOG.search(f.extra_info)
    if match is None:
        return
    declared, held = (int(n) for n in match.groups())
    if declared >= _UNKNOWN_SIZE or held >= declared:
        return
    seconds = f.frames / f.samplerate
    declared_text, held_text = _distinct_seconds(seconds * declared / held, seconds)
    log.warning("%s: truncated: the header declares %s s of audio, the file holds %s s; using what is there",
                name, declared_text, held_text)


def _distinct_seconds(longer: float, shorter: float) -> tuple[str, str]:
    """Two durations in seconds, ``longer > shorter``, written with the same decimals: three,
    or as many more as it takes for the longer to read as longer (a file one byte short)."""
    for decimals in range(3, 10):  # a byte of audio at 384 kHz, 8 channels of doubles, lasts 4e-8 s
        longer_text, shorter_text = f"{longer:.{decimals}f}", f"{shorter:.{decimals}f}"
        if longer_text != shorter_text:
            break
    return longer_text, shorter_text


def _warn_if_ogg_cut(fh: Any, name: str) -> None:
    """Log a warning when an Ogg file does not end with the last page of its stream.

    libsndfile reads an Ogg file's length from its last page and decodes a file cut short
    without a word. A complete stream's last page is flagged end-of-stream; bytes after
    it (an ID3 tag, padding) are allowed. ``fh`` is the open file (or its descriptor),
    read without moving the position libsndfile reads from.
    """
    if isinstance(fh, int):
        size = os.fstat(fh).st_size
        tail = os.pread(fh, _OGG_MAX_PAGE, max(0, size - _OGG_MAX_PAGE))
    else:
        position = fh.tell()
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - _OGG_MAX_PAGE))
        tail = fh.read(_OGG_MAX_PAGE)
        fh.seek(position)
    start = tail.rfind(b"OggS")
    while start >= 0:  # the last whole page: version 0, its segments all inside the file
        segments = tail[start + 26] if start + 26 < len(tail) else None
        header_end = start + 27 + (segments or 0)
        if tail[start + 4 : start + 5] == b"\0" and segments is not None and header_end <= len(tail) \
                and header_end + sum(tail[start + 27 : header_end]) <= len(tail):
            if tail[start + 5] & 0x04:  # header type: end of stream
                return
            break
        start = tail.rfind(b"OggS", 0, start)
    log.warning("%s: truncated: the Ogg stream stops before its end (a cut copy or download?); using what decodes", name)


#: The longest Ogg page: a 27-byte header, 255 segment sizes, 255 segments of 255 bytes.
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


def _warn_if_cut_short(f: sf.SoundFile, name: str, stopped_at: int, expected_end: int) -> None:
    """Log a warning when decoding ``f`` stopped at frame ``stopped_at``, before the frame
    ``expected_end`` that its header says the read would reach (both counted from the file's
    start, so a read from an offset names where in the file it stopped).

    A damaged or cut MP3 makes the decoder stop at the first bad frame (libmpg123 prints
    its own lines to stderr, naming no file), and a FLAC file stops at its first FLAC frame
    cut short (see :func:`_read_flac`): this names the file and says how much of it was used
    (for a cut Ogg file, see :func:`_warn_if_ogg_cut`). A FLAC header counts its samples
    exactly, so any shortfall is said; an MP3's count is an estimate (encoder padding), so a
    stop within its last 0.1 s or 2 %, whichever is longer, passes. A FLAC stream whose header
    leaves its length out declares nothing to fall short of.
    """
    if f.frames == _UNKNOWN_FRAMES:
        return
    slack = 0 if f.format == "FLAC" else max(f.samplerate // 10, f.frames // 50)
    if stopped_at < min(expected_end, f.frames - slack):
        declared_text, stopped_text = _distinct_seconds(f.frames / f.samplerate, stopped_at / f.samplerate)
        log.warning(
            "%s: decoding stopped at %s s of the %s s the file declares (damaged data?); using what was decoded",
            name, stopped_text, declared_text,
        )


def _read(f: sf.SoundFile, name: str, frames: int) -> np.ndarray:
    """Read up to ``frames`` frames (-1: all) as float32 [shape=(frames, channels)].

    Fewer frames than asked means the audio ended: at the end of the file or, in a FLAC
    file, at its first FLAC frame that does not decode (see :func:`_read_flac`).
    Raises AudioError for decoder errors and for NaN or infinite samples.
    """
    if frames < 0 or frames > _READ_FRAMES:
        # Block by block: soundfile sizes its output array from the frame count in the
        # header, and a corrupt FLAC header can claim 2**36 frames in a 2 kB file.
        blocks, left = [], frames
        while left != 0:
            want = _READ_FRAMES if left < 0 else min(left, _READ_FRAMES)
            blocks.append(_read(f, name, want))
            left = left if left < 0 else left - blocks[-1].shape[0]
            if blocks[-1].shape[0] < want:
                break
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    if f.format == "FLAC":
        data = _call(name, _read_flac, f, frames)
    else:
        data = _call(name, f.read, frames, dtype="float32", always_2d=True)
    if problem := unusable_samples(loudest_sample(data), non_finite="contains NaN or infinite samples"):
        raise AudioError(f"{name}: {problem}")
    return data


def _read_flac(f: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames of a FLAC file as float32 [shape=(frames, channels)]: fewer at its
    end, or where a FLAC frame is cut short or damaged (the frames before it).

    libsndfile decodes whole FLAC frames into the array it is given and fails at one that does
    not decode (or soundfile's seek past the frames decoded fails there), leaving the rest of the
    array as it was: NaN, which FLAC's integer samples never are. A read after such a failure
    decodes nothing, so the caller, given fewer frames than it asked for, stops.
    """
    out = np.full((max(0, min(frames, f.frames - f.tell())), f.channels), np.nan, dtype=np.float32)
    try:
        return f.read(out=out)
    except sf.LibsndfileError:
        unwritten = np.isnan(out[:, 0])
        return out[: unwritten.argmax() if unwritten.any() else len(out)]


def unusable_samples(peak: float, *, non_finite: str) -> str:
    """Why samples whose largest magnitude is ``peak`` (NaN if any sample is, so one pass over
    them checks both) cannot be analysed: ``non_finite`` for NaN or infinite samples, or that
    they lie beyond :data:`MAX_SAMPLE`, where a spectrogram overflows; "" if they can."""
    if not math.isfinite(peak):
        return non_finite
    if peak > MAX_SAMPLE:
        return f"samples reach {peak:.3g}, far beyond full scale (1.0), where a spectrogram overflows; rescale them to within ±1"
    return ""


def _call(name: str, method, *args, doing: str = "", **kwargs):
    """Call a soundfile read or seek, wrapping libsndfile's errors; ``doing`` leads the reason
    (``"cannot seek to offset=3 s: "``)."""
    try:
        return method(*args, **kwargs)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
        raise AudioError(
            f"{name}: {doing}truncated or corrupt audio data ({reason.rstrip('.')})"
        ) from None


def _start_frame(offset: float, sample_rate: int, frames: int, name: str) -> int:
    start = round(offset * sample_rate)
    if start and start >= frames:
        raise ParameterError(
            f"offset={offset} s is past the end of {name} ({frames / sample_rate:.3f} s long)"
        )
    return start


def _reason(exc: BaseException) -> str:
    """A decoder's error as words: its message, or what an error without one means (a
    backend's bare ``EOFError()`` on a file of a few bytes)."""
    if str(exc):
        return str(exc)
    return "the file ends before any audio" if isinstance(exc, EOFError) else type(exc).__name__


@contextlib.contextmanager
def _audioread_open(path: PathLike, name: str):
    try:
        reader = audioread.audio_open(os.fsdecode(path))
    except audioread.NoBackendError:
        raise AudioError(
            f"{name}: no installed decoder reads this file (audioread needs ffmpeg or "
            f"GStreamer for '{_suffix(path)}'; soundfile reads "
            f"{', '.join(sorted(_SOUNDFILE_EXTENSIONS))} without them)"
        ) from None
    except (audioread.DecodeError, OSError, EOFError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_reason(exc)})") from None
    with reader:
        yield reader


def _decode_with_audioread(path: PathLike, name: str) -> tuple[np.ndarray, int]:
    """Decode a whole file with audioread: float32 [shape=(frames, channels)] and its rate."""
    with _audioread_open(path, name) as reader:
        try:
            pcm = b"".join(reader)  # 16-bit signed little-endian, channels interleaved
        except (audioread.DecodeError, OSError, EOFError) as exc:
            raise AudioError(f"{name}: truncated or corrupt audio data ({_reason(exc)})") from None
        frames = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        usable = len(frames) - len(frames) % reader.channels
        return frames[:usable].reshape(-1, reader.channels), reader.samplerate
