"""Tests for specnet.audio: decoding, errors, resampling and streaming."""

from __future__ import annotations

import logging
import math
import os
import re
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr
from helpers import make_noise, make_tone, peak_frequency, sine, write_audio

import specnet.audio as audio
import specnet.paths
from specnet.audio import (
    AUDIO_EXTENSIONS,
    AudioBlock,
    audio_info,
    is_audio_file,
    iter_audio_blocks,
    load_audio,
    resample,
)
from specnet.errors import AudioError, ParameterError
from specnet.windows import window_starts

RATES = [8000, 16000, 44100, 48000]
# Largest error a round trip may show, per subtype: half a quantisation step
# and a little more for the scaling libsndfile applies.
WAV_TOLERANCE = {"PCM_U8": 1 / 100, "PCM_16": 1e-4, "PCM_24": 1e-6, "PCM_32": 1e-6,
                 "FLOAT": 1e-7, "DOUBLE": 1e-7}


def _message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# --- names -------------------------------------------------------------------

def test_is_audio_file_checks_suffix_case_insensitively():
    assert is_audio_file("a/b/clip.WAV")
    assert is_audio_file(Path("x.flac"))
    assert is_audio_file(b"x.Ogg")
    assert not is_audio_file("notes.txt")
    assert not is_audio_file("wav")
    assert {".wav", ".flac", ".ogg", ".mp3"} <= AUDIO_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in AUDIO_EXTENSIONS)


# --- round trips -------------------------------------------------------------

@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("subtype", list(WAV_TOLERANCE))
def test_wav_round_trip(tmp_path, subtype, sr):
    path = make_tone(tmp_path / "tone.wav", 440.0, 0.25, sr, subtype)
    y, got_sr = load_audio(path)
    expected = sine(440.0, 0.25, sr)
    assert got_sr == sr
    assert y.shape == (round(0.25 * sr),)
    assert y.dtype == np.float32
    assert np.abs(y).max() <= 1.0
    np.testing.assert_allclose(y, expected, atol=WAV_TOLERANCE[subtype])


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize(("suffix", "subtype", "atol"), [(".flac", "PCM_16", 1e-4),
                                                         (".ogg", "VORBIS", None)])
def test_flac_and_ogg_round_trip(tmp_path, suffix, subtype, atol, sr):
    path = make_tone(tmp_path / f"tone{suffix}", 1000.0, 0.5, sr, subtype)
    y, got_sr = load_audio(path)
    assert got_sr == sr
    assert y.shape == (sr // 2,)
    assert y.dtype == np.float32
    assert np.abs(y).max() <= 1.0
    if atol is not None:
        np.testing.assert_allclose(y, sine(1000.0, 0.5, sr), atol=atol)
    # Vorbis is lossy: check what survives, the pitch and the loudness.
    assert abs(peak_frequency(y, sr) - 1000.0) <= 2.0
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


@pytest.mark.parametrize("freq", [440.0, 1000.0])
@pytest.mark.parametrize("orig_sr", [8000, 44100, 48000])
def test_resampling_keeps_frequency_and_level(tmp_path, orig_sr, freq):
    path = make_tone(tmp_path / "tone.wav", freq, 1.0, orig_sr, "FLOAT")
    y, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000
    assert y.shape == (16000,)
    assert y.dtype == np.float32
    assert abs(peak_frequency(y, sr) - freq) <= 2.0
    middle = y[1000:-1000]  # away from the filter's edge effects
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


def test_mp3_round_trip(tmp_path):
    path = tmp_path / "tone.mp3"
    try:
        make_tone(path, 440.0, 1.0, 16000, "MPEG_LAYER_III")
    except (sf.LibsndfileError, ValueError, TypeError):
        pytest.skip("this libsndfile cannot write MP3")
    y, sr = load_audio(path, sample_rate=8000)
    assert sr == 8000
    assert y.dtype == np.float32
    assert abs(len(y) - 8000) < 1000  # encoder padding may add a frame or so
    assert abs(peak_frequency(y, sr) - 440.0) <= 2.0


def test_opus_round_trip(tmp_path):
    path = make_tone(tmp_path / "tone.opus", 440.0, 0.5, 48000, "OPUS", format="OGG")
    y, sr = load_audio(path, sample_rate=16000)
    assert (sr, y.shape, y.dtype) == (16000, (8000,), np.float32)
    assert abs(peak_frequency(y, sr) - 440.0) <= 2.0


def test_float_samples_above_one_are_not_clipped(tmp_path):
    path = write_audio(tmp_path / "hot.wav", np.array([0.0, 1.5, -1.25, 0.5]), 8000,
                       subtype="DOUBLE")
    y, _ = load_audio(path)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [0.0, 1.5, -1.25, 0.5])


def test_truncated_wav_reads_what_is_there(tmp_path, tone_wav):
    data = tone_wav.read_bytes()
    path = tmp_path / "trunc.wav"
    path.write_bytes(data[: len(data) // 2])  # the header still claims 16000 frames
    y, sr = load_audio(path)
    assert sr == 16000
    assert 0 < len(y) < 16000
    np.testing.assert_allclose(y, sine(440.0, 1.0, 16000)[: len(y)], atol=1e-4)


def test_a_wav_one_byte_short_warns_that_it_declares_more_than_it_holds(tmp_path, caplog):
    # 6912 samples declared (0.432 s), 6911 held (0.4319375 s): written at one precision, they differ.
    whole = write_audio(tmp_path / "whole.wav", np.zeros(6912), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:-1])
    with caplog.at_level("WARNING", logger="specnet"):
        assert len(load_audio(cut)[0]) == 6911
    assert [r.getMessage() for r in caplog.records] == [
        f"{cut}: truncated: the header declares 0.4320 s of audio, the file holds 0.4319 s; using what is there"]


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile cannot write MP3")
def test_an_mp3_that_stops_early_is_named_in_a_warning(tmp_path, caplog):
    # The decoder stops at the first bad frame (here: the file's end, halfway through what its
    # header declares) and libmpg123 says so without a file name; specnet names the file.
    whole = tmp_path / "whole.mp3"
    sf.write(whole, sine(440.0, 3.0, 16000).astype(np.float32) * 0.3, 16000, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="specnet"):
        assert len(load_audio(whole)[0]) == 48000
        assert caplog.records == []
        y, sr = load_audio(cut, sample_rate=8000)
        blocks = list(audio.iter_audio_blocks(cut, block_samples=4000))
    decoded = sum(b.n_valid for b in blocks)  # at the file's 16 kHz
    assert 0.5 < len(y) / sr < 2.5 and decoded == pytest.approx(len(y) * 2, abs=2)
    message = f"{cut}: decoding stopped at {decoded / 16000:.3f} s of the 3.000 s the file declares (damaged data?); using what was decoded"
    assert [r.getMessage() for r in caplog.records] == [message, message]  # decoded whole, and streamed


def test_cut_short_warning_threshold_and_partial_reads(tone_wav, caplog):
    mp3, flac = (SimpleNamespace(format=container, frames=16000, samplerate=16000) for container in ("MP3", "FLAC"))
    unknown_length = SimpleNamespace(format="FLAC", frames=2**63 - 1, samplerate=16000)  # libsndfile's SF_COUNT_MAX
    with caplog.at_level("WARNING", logger="specnet"):
        audio._warn_if_cut_short(mp3, "x.mp3", 15000, 16000)  # 1000 frames short: under 0.1 s, padding
        audio._warn_if_cut_short(unknown_length, "x.flac", 15999, 2**63 - 1)  # no length declared to fall short of
        y, _ = load_audio(tone_wav, offset=0.25, duration=0.5)  # asked for less than the file holds
        assert caplog.records == [] and len(y) == 8000
        tail, _ = load_audio(tone_wav, offset=0.75)  # read from 0.75 s to the end: all there is
        assert caplog.records == [] and len(tail) == 4000
        audio._warn_if_cut_short(mp3, "x.mp3", 15000, 15500)  # a window ending in the estimate's slack too
        audio._warn_if_cut_short(mp3, "x.mp3", 14000, 16000)
        audio._warn_if_cut_short(mp3, "x.mp3", 5000, 8000)  # a window that ends far before the file: short of it
        audio._warn_if_cut_short(flac, "x.flac", 15999, 16000)  # a FLAC header counts exactly: one frame short is short
    assert [r.getMessage() for r in caplog.records] == [
        "x.mp3: decoding stopped at 0.875 s of the 1.000 s the file declares (damaged data?); using what was decoded",
        "x.mp3: decoding stopped at 0.312 s of the 1.000 s the file declares (damaged data?); using what was decoded",
        "x.flac: decoding stopped at 0.9999 s of the 1.0000 s the file declares (damaged data?); using what was decoded",
    ]


def _flac_end_of_frame(tmp_path, samples: np.ndarray, frames: int) -> int:
    """The byte where FLAC frame ``frames - 1`` of ``samples`` (16 kHz, 16-bit) written whole ends. libFLAC
    codes each block of 4096 samples on its own, so a file of the first ``frames`` blocks is the whole
    file's first bytes (its header, the same size, differs only in what it counts)."""
    first = write_audio(tmp_path / "first_frames.flac", samples[: frames * 4096], 16000, subtype="PCM_16")
    return first.stat().st_size


def test_a_flac_file_cut_short_decodes_its_whole_frames_with_a_warning(tmp_path, monkeypatch, caplog):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 16000)
    whole = write_audio(tmp_path / "whole.flac", noise, 16000, subtype="PCM_16")
    original, _ = load_audio(whole)
    data = whole.read_bytes()
    samples_left = {  # bytes kept -> samples that decode (None: some whole frames)
        len(data) // 2: None,  # inside a frame: the frames before it
        _flac_end_of_frame(tmp_path, noise, 2): 2 * 4096,  # where a frame ends: every frame before the cut
        len(data) - 1: 11 * 4096,  # the last frame one byte short
    }
    for size, expected in samples_left.items():
        cut = tmp_path / f"cut{size}.flac"
        cut.write_bytes(data[:size])
        for read_frames in (1024, 4096, 1 << 16):  # reads that end where FLAC frames do, and one past them
            monkeypatch.setattr(audio, "_READ_FRAMES", read_frames)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="specnet"):
                y, _ = load_audio(cut)
                streamed = [block.samples[: block.n_valid] for block in iter_audio_blocks(cut, block_samples=3000)]
            assert 0 < len(y) < len(original) and len(y) % 4096 == 0 and len(y) == (expected or len(y)), (size, read_frames)
            np.testing.assert_array_equal(y, original[: len(y)])  # lossless: the very samples
            np.testing.assert_array_equal(np.concatenate(streamed), y)
            message = (f"{cut}: decoding stopped at {len(y) / 16000:.3f} s of the 3.000 s the file declares "
                       "(damaged data?); using what was decoded")
            assert [r.getMessage() for r in caplog.records] == [message, message]


def test_a_window_of_a_cut_flac_file_says_where_in_the_file_decoding_stopped(tmp_path, caplog):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(write_audio(tmp_path / "whole.flac", noise, 16000, subtype="PCM_16").read_bytes()[: _flac_end_of_frame(tmp_path, noise, 5)])
    with caplog.at_level(logging.WARNING, logger="specnet"):
        before, _ = load_audio(cut, offset=0.25, duration=0.5)  # ends before the damage: nothing to say
        assert caplog.records == [] and len(before) == 8000
        y, _ = load_audio(cut, offset=0.5, duration=2.0)  # 0.5-2.5 s asked for, frames decode to 1.28 s
    np.testing.assert_array_equal(y, load_audio(tmp_path / "whole.flac", offset=0.5, duration=0.78)[0])
    assert [r.getMessage() for r in caplog.records] == [
        f"{cut}: decoding stopped at 1.280 s of the 3.000 s the file declares (damaged data?); using what was decoded"]
    with pytest.raises(AudioError, match=rf"^{re.escape(str(cut))}: cannot seek to offset=2\.0 s: truncated or corrupt audio data \(.+\)$"):
        load_audio(cut, offset=2.0)  # past the damage: libsndfile cannot seek there


def test_a_flac_stream_that_leaves_its_length_out_decodes_whole(tmp_path, caplog):
    # A streaming encoder may leave STREAMINFO's 36-bit total_samples (the low nibble of byte 21,
    # bytes 22-25) at 0, unknown; libsndfile then reports 2**63 - 1 frames.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)
    data = bytearray(write_audio(tmp_path / "whole.flac", noise, 16000, subtype="PCM_16").read_bytes())
    data[21] &= 0xF0
    data[22:26] = bytes(4)
    path = tmp_path / "streamed.flac"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="specnet"):
        y, _ = load_audio(path)
        assert sum(block.n_valid for block in iter_audio_blocks(path, block_samples=3000)) == 16000
    np.testing.assert_array_equal(y, load_audio(tmp_path / "whole.flac")[0])
    assert caplog.records == []
    assert audio_info(path).frames == 16000  # counted: the header's SF_COUNT_MAX is no length


# --- channels, offset, duration ---------------------------------------------

def test_stereo_mixes_down_to_mean_of_channels(stereo_wav):
    both, sr = load_audio(stereo_wav, mono=False)
    mono, _ = load_audio(stereo_wav)
    assert both.shape == (2, 8000) and both.dtype == np.float32
    assert mono.shape == (8000,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, both.mean(axis=0), atol=1e-7)
    # channels keep their order: 440 Hz left, 880 Hz right
    assert peak_frequency(both[0], sr) == pytest.approx(440.0, abs=2.0)
    assert peak_frequency(both[1], sr) == pytest.approx(880.0, abs=2.0)


def test_stereo_resampled_keeps_channels(stereo_wav):
    both, sr = load_audio(stereo_wav, sample_rate=8000, mono=False)
    assert (sr, both.shape, both.dtype) == (8000, (2, 4000), np.float32)
    assert both.flags.c_contiguous
    assert peak_frequency(both[1], sr) == pytest.approx(880.0, abs=2.0)


def test_offset_and_duration_select_a_slice(tone_wav):
    whole, _ = load_audio(tone_wav)
    part, sr = load_audio(tone_wav, offset=0.25, duration=0.5)
    assert sr == 16000
    np.testing.assert_array_equal(part, whole[4000:12000])
    tail, _ = load_audio(tone_wav, offset=0.75, duration=10.0)
    np.testing.assert_array_equal(tail, whole[12000:])


def test_offset_and_duration_round_to_the_nearest_sample(tmp_path):
    # 0.35 s and 0.57 s at 44.1 kHz are 15435 and 25137 samples, though in floating point
    # 0.35 * 44100 is 15434.999...: truncating would start a sample early and stop one short.
    path = make_noise(tmp_path / "noise.wav", 1.0, 44100, subtype="FLOAT")
    whole, _ = sf.read(path, dtype="float32")
    part, _ = load_audio(path, offset=0.35, duration=0.57)
    np.testing.assert_array_equal(part, whole[15435 : 15435 + 25137])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sample_rate": 0}, "sample_rate=0"),
        ({"sample_rate": -16000}, "sample_rate=-16000"),
        ({"sample_rate": 16000.5}, "sample_rate=16000.5"),
        ({"sample_rate": True}, "sample_rate=True"),
        ({"offset": -1.0}, "offset=-1.0"),
        ({"offset": float("nan")}, "offset=nan"),
        ({"offset": True}, "offset=True"),
        ({"duration": "1"}, "duration='1'"),
        ({"duration": 0}, "duration=0"),
        ({"offset": 5.0}, "past the end"),
        ({"offset": 1.0}, "past the end"),  # the 1 s file's end itself: no sample left to read
    ],
)
def test_bad_arguments_raise_parameter_error(tone_wav, kwargs, fragment):
    with pytest.raises(ParameterError) as excinfo:
        load_audio(tone_wav, **kwargs)
    assert fragment in _message(excinfo)


def test_numpy_integer_sample_rate_is_accepted(tone_wav):
    y, sr = load_audio(tone_wav, sample_rate=np.int64(8000))
    assert sr == 8000 and y.shape == (8000,)


# --- very short files --------------------------------------------------------

def test_ten_millisecond_clip(tmp_path):
    path = make_tone(tmp_path / "short.wav", 1000.0, 0.01, 16000)
    y, sr = load_audio(path)
    assert y.shape == (160,)
    y8, _ = load_audio(path, sample_rate=8000)
    assert y8.shape == (80,)
    blocks = list(iter_audio_blocks(path, block_samples=1600, sample_rate=8000))
    assert len(blocks) == 1
    assert blocks[0].n_valid == 80
    np.testing.assert_allclose(blocks[0].samples[:80], y8, atol=1e-6)
    assert not blocks[0].samples[80:].any()


def test_one_sample_file(tmp_path):
    path = write_audio(tmp_path / "one.wav", np.array([0.25]), 48000, subtype="FLOAT")
    y, sr = load_audio(path)
    assert (y.tolist(), sr) == ([0.25], 48000)
    assert audio_info(path).frames == 1
    up, _ = load_audio(path, sample_rate=96000)
    assert up.shape == (2,)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, sample_rate=16000)  # a third of a sample rounds to none
    assert _message(excinfo).startswith(f"{path}: too short to resample")
    with pytest.raises(AudioError):
        list(iter_audio_blocks(path, block_samples=10, sample_rate=16000))


# --- info ----------------------------------------------------------------------

def test_audio_info_reads_header(stereo_wav, tmp_path):
    info = audio_info(stereo_wav)
    assert (info.sample_rate, info.channels, info.frames) == (16000, 2, 8000)
    assert info.duration == pytest.approx(0.5)
    flac = make_tone(tmp_path / "t.flac", 440.0, 0.3, 44100)
    assert audio_info(flac).frames == round(0.3 * 44100)


# --- errors --------------------------------------------------------------------

def _missing(tmp_path):
    return tmp_path / "clip.wav"


def _directory(tmp_path):
    path = tmp_path / "folder.wav"
    path.mkdir()
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    return path


def _header_only(tmp_path):
    return write_audio(tmp_path / "hdr.wav", np.zeros(0), 16000, subtype="PCM_16")


def _wav_with_unsized_data(tmp_path):  # a recorder stopped before it wrote the data chunk's size
    data = bytearray(make_tone(tmp_path / "whole.wav", 440.0, 0.5, 8000, "PCM_16").read_bytes())
    size_field = data.index(b"data") + 4
    data[size_field : size_field + 4] = bytes(4)
    path = tmp_path / "unsized.wav"
    path.write_bytes(bytes(data))
    return path


def _half_of(tmp_path, name, subtype):
    whole = make_tone(tmp_path / f"whole_{name}", 440.0, 1.0, 16000, subtype)
    data = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    return path


def _flac_cut_in_its_header(tmp_path):
    data = make_tone(tmp_path / "whole.flac", 440.0, 1.0, 16000).read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[:30])  # inside STREAMINFO
    return path


def _flac_cut_in_its_first_frame(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)
    data = write_audio(tmp_path / "whole.flac", noise, 16000, subtype="PCM_16").read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: _flac_end_of_frame(tmp_path, noise, 1) - 1])  # the header, and the first frame one byte short
    return path


def _truncated_ogg(tmp_path):
    return _half_of(tmp_path, "trunc.ogg", "VORBIS")


def _ogg_cut_in_its_first_audio_page(tmp_path):
    # Vorbis headers fill the first pages ("OggS" starts each); the cut falls in the first audio page.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 16000)
    data = write_audio(tmp_path / "whole.ogg", noise, 16000, subtype="VORBIS").read_bytes()
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    path = tmp_path / "cut.ogg"
    path.write_bytes(data[: pages[2] + 100])
    return path


def _bad_wav_header(tmp_path):
    data = make_tone(tmp_path / "whole.wav", 440.0, 0.1, 16000).read_bytes()
    path = tmp_path / "badfmt.wav"
    path.write_bytes(data[:20])  # cut inside the 'fmt ' chunk
    return path


def _random_bytes(tmp_path):
    path = tmp_path / "rand.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _text_as_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    return path


def _broken_symlink(tmp_path):
    path = tmp_path / "link.wav"
    path.symlink_to(tmp_path / "gone.wav")
    return path


def _unsupported_suffix(tmp_path):
    path = tmp_path / "notes.xyz"
    path.write_text("plain text")
    return path


def _unknown_m4a(tmp_path):
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    return path


def _nan_float_wav(tmp_path):
    return write_audio(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.5]), 8000, subtype="FLOAT")


def _inf_double_wav(tmp_path):
    return write_audio(tmp_path / "inf.wav", np.array([0.0, 0.5, -np.inf]), 8000,
                       subtype="DOUBLE")


def _huge_float_wav(tmp_path):  # finite, but its spectrogram's power overflows float32
    return write_audio(tmp_path / "huge.wav", 3e38 * np.sin(np.arange(800) / 5), 8000, subtype="FLOAT")


FILE_ERRORS = [
    (_missing, "file not found"),
    (_directory, "is a directory, not an audio file"),
    (_empty, "file is empty (0 bytes)"),
    (_header_only, "contains no audio samples"),
    (_wav_with_unsized_data, "the WAV header gives its audio a size of 0 bytes, yet 8000 bytes follow it (a recording stopped"),
    (_flac_cut_in_its_header, "truncated or corrupt audio data"),
    (_flac_cut_in_its_first_frame, "contains no audio samples that decode (empty, or truncated before its first"),
    (_truncated_ogg, "truncated or corrupt audio data"),
    (_ogg_cut_in_its_first_audio_page, "contains no audio samples that decode (empty, or truncated before its first"),
    (_bad_wav_header, "truncated or corrupt audio data"),
    (_random_bytes, "not a readable audio file (format not recognised)"),
    (_text_as_wav, "not a readable audio file (format not recognised)"),
    (_broken_symlink, "file not found"),
    (_unsupported_suffix, "unsupported audio format '.xyz'"),
    # Without ffmpeg or GStreamer no decoder is found; with one, the junk fails to decode.
    (_unknown_m4a, ("no installed decoder reads this file", "not a readable audio file", "truncated or corrupt audio data")),
    (_nan_float_wav, "contains NaN or infinite samples"),
    (_inf_double_wav, "contains NaN or infinite samples"),
    (_huge_float_wav, "samples reach 3e+38, far beyond full scale (1.0), where a spectrogram overflows; rescale them to within ±1"),
]

# Problems only decoding finds: audio_info reads the header alone.
HEADER_IS_FINE = {_header_only, _flac_cut_in_its_first_frame, _ogg_cut_in_its_first_audio_page, _nan_float_wav, _inf_double_wav, _huge_float_wav}


# audioread's stdlib backend imports aifc/audioop/sunau, deprecated in Python 3.11+
@pytest.mark.filterwarnings("ignore:'.*' is deprecated and slated for removal:DeprecationWarning")
@pytest.mark.parametrize(("make", "fragment"), FILE_ERRORS,
                         ids=[m.__name__ for m, _ in FILE_ERRORS])
def test_file_errors_name_the_file(tmp_path, make, fragment):
    path = make(tmp_path)
    readers = [load_audio,
               lambda p: list(iter_audio_blocks(p, block_samples=1000, sample_rate=8000))]
    if make not in HEADER_IS_FINE:
        readers.append(audio_info)
    for read in readers:
        with pytest.raises(AudioError) as excinfo:
            read(path)
        assert _message(excinfo).startswith(f"{path}: ")
        assert any(f in _message(excinfo) for f in (fragment if isinstance(fragment, tuple) else (fragment,)))
        assert excinfo.value.__cause__ is None  # no raw decoder exception chained


def test_samples_whose_spectrogram_would_overflow_are_refused(tmp_path):
    # 1e17 is a finite float32 sample, but a 1024-point FFT of a tone that loud has bins whose
    # power, (1e17 * 512 / 2) ** 2 = 6.6e38, is past float32's largest number (3.4e38).
    y = 1e17 * np.sin(np.arange(16000) / 5)
    bins = np.fft.rfft(np.hanning(1024) * y[:1024])  # in float64, where it fits
    assert (np.abs(bins) ** 2).max() > np.finfo(np.float32).max
    path = write_audio(tmp_path / "hot.wav", y, 16000, subtype="FLOAT")
    for read in (load_audio, lambda p: list(iter_audio_blocks(p, block_samples=4000))):
        with pytest.raises(AudioError, match=r"samples reach 1e\+17, far beyond full scale"):
            read(path)


def test_a_decoder_error_without_words_still_gives_a_reason(tmp_path, monkeypatch):
    # audioread's backends raise a bare EOFError() for a few bytes named .m4a or .aac: "()" says nothing.
    import audioread

    def bare_eof(path):
        raise EOFError()

    monkeypatch.setattr(audioread, "audio_open", bare_eof)
    junk = tmp_path / "junk.m4a"
    junk.write_text("junk\n")
    with pytest.raises(AudioError, match=rf"^{junk}: not a readable audio file \(the file ends before any audio\)$"):
        load_audio(junk)


class _FakeAudioreadFile:
    """What ``audioread.audio_open`` gives for a file only ffmpeg or GStreamer decodes: 16-bit
    little-endian PCM with the channels interleaved, in blocks that need not end on a frame."""

    def __init__(self, pcm: np.ndarray, samplerate: int) -> None:  # pcm: int16 (frames, channels)
        self.samplerate, self.channels, self.duration = samplerate, pcm.shape[1], len(pcm) / samplerate
        self._bytes = pcm.astype("<i2").tobytes()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __iter__(self):
        yield self._bytes[:1001]
        yield self._bytes[1001:]


def test_a_file_only_audioread_decodes_is_scaled_split_into_channels_and_sliced(tmp_path, monkeypatch):
    import audioread

    pcm = np.random.default_rng(0).integers(-32768, 32768, size=(8000, 2)).astype(np.int16)
    pcm[0] = [-32768, 32767]
    monkeypatch.setattr(audioread, "audio_open", lambda path: _FakeAudioreadFile(pcm, 8000))
    path = tmp_path / "voice.m4a"
    path.write_text("junk\n")  # soundfile does not recognise it
    expected = pcm / 32768.0  # as soundfile reads PCM_16: -32768 is -1.0
    both, sr = load_audio(path, mono=False)
    assert sr == 8000 and both.shape == (2, 8000) and both[0, 0] == -1.0
    np.testing.assert_array_equal(both, expected.T.astype(np.float32))
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono, expected.mean(axis=1), atol=1e-7)
    part, _ = load_audio(path, offset=0.25, duration=0.5)  # samples 2000 to 6000
    np.testing.assert_allclose(part, expected[2000:6000].mean(axis=1), atol=1e-7)


def test_unsupported_suffix_lists_supported_formats(tmp_path):
    with pytest.raises(AudioError) as excinfo:
        load_audio(_unsupported_suffix(tmp_path))
    for ext in (".wav", ".flac", ".ogg", ".mp3"):
        assert ext in _message(excinfo)


def test_permission_denied(tmp_path, tone_wav, monkeypatch):
    tone_wav.chmod(0)
    if os.access(tone_wav, os.R_OK):  # root reads anything: make open() refuse instead
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(specnet.paths, "open", refuse, raising=False)
    with pytest.raises(AudioError) as excinfo:
        load_audio(tone_wav)
    assert _message(excinfo) == f"{tone_wav}: permission denied"


def test_a_problem_mid_stream_is_raised_after_the_blocks_before_it(tmp_path, monkeypatch):
    samples = np.zeros(3000)
    samples[2500] = np.nan
    path = write_audio(tmp_path / "nan.wav", samples, 8000, subtype="FLOAT")
    monkeypatch.setattr(audio, "_READ_FRAMES", 1024)
    blocks = iter_audio_blocks(path, block_samples=1024)
    first = next(blocks)  # the intact start still decodes
    assert first.n_valid == 1024
    with pytest.raises(AudioError) as excinfo:
        list(blocks)
    assert _message(excinfo) == f"{path}: contains NaN or infinite samples"


@pytest.mark.parametrize("as_bytes", [True, False])
def test_non_utf8_file_names(tmp_path, as_bytes):
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff.wav"  # Latin-1, not UTF-8
    written = make_tone(tmp_path / "plain.wav", 440.0, 0.1, 8000)
    try:
        os.rename(written, raw)
    except OSError:
        pytest.skip("this file system does not take non-UTF-8 names")
    path = raw if as_bytes else os.fsdecode(raw)
    y, sr = load_audio(path)
    assert (y.shape, sr) == ((800,), 8000)
    assert audio_info(path).frames == 800
    assert len(list(iter_audio_blocks(path, block_samples=400))) == 2
    assert is_audio_file(path)
    missing = raw.replace(b".wav", b"-missing.wav")
    with pytest.raises(AudioError) as excinfo:
        load_audio(missing if as_bytes else os.fsdecode(missing))
    assert "caf\\xe9-\\xff-missing.wav: file not found" in _message(excinfo)


# --- resample ----------------------------------------------------------------

def test_resample_is_identity_at_same_rate():
    y = np.linspace(-1, 1, 100, dtype=np.float32)
    assert resample(y, orig_sr=16000, target_sr=16000) is y


def test_resample_matches_soxr_and_keeps_leading_axes():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((2, 3, 4410)).astype(np.float32)
    out = resample(y, orig_sr=44100, target_sr=16000)
    assert out.shape == (2, 3, 1600) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], soxr.resample(y[1, 2], 44100, 16000, quality="HQ"),
                               atol=1e-6)
    assert resample(np.zeros((2, 0)), orig_sr=8000, target_sr=16000).shape == (2, 0)
    # No channels: as many samples as a channel would get (soxr itself refuses it).
    assert resample(np.zeros((0, 1601), np.float32), orig_sr=16000, target_sr=8000).shape == (0, 801)


def test_resample_takes_every_float_type_and_gives_it_back():
    # float16 and long double gave soxr's TypeError: "Data type must be one of [float32, float64, ...]"
    y = np.sin(np.arange(4410) / 7)
    reference = soxr.resample(y, 44100, 16000, quality="HQ")
    for dtype, atol in ((np.float16, 2e-3), (np.longdouble, 1e-12)):
        out = resample(y.astype(dtype), orig_sr=44100, target_sr=16000)
        assert out.dtype == dtype and out.shape == reference.shape
        np.testing.assert_allclose(out.astype(np.float64), reference, atol=atol)


def test_resample_rejects_bad_input():
    with pytest.raises(ParameterError, match="dtype int16"):
        resample(np.zeros(10, np.int16), orig_sr=8000, target_sr=16000)
    with pytest.raises(ParameterError, match="target_sr=0"):
        resample(np.zeros(10), orig_sr=8000, target_sr=0)


# --- streaming -----------------------------------------------------------------

def _expected_blocks(n, block, hop):
    return 1 + max(0, math.ceil((n - block) / hop))


@pytest.mark.parametrize(("orig_sr", "target_sr"), [(44100, 16000), (8000, 16000), (16000, 16000)])
@pytest.mark.parametrize(("block", "hop"), [(4000, None), (4000, 1000), (3000, 4500)])
def test_stream_equals_whole_file(tmp_path, monkeypatch, orig_sr, target_sr, block, hop):
    # small reads, so many chunk boundaries fall inside every block
    monkeypatch.setattr(audio, "_READ_FRAMES", 1021)
    path = make_noise(tmp_path / "noise.wav", 2.0, orig_sr, subtype="FLOAT")
    whole, _ = load_audio(path, sample_rate=target_sr)
    blocks = list(iter_audio_blocks(path, block_samples=block, hop_samples=hop,
                                    sample_rate=target_sr))
    step = hop or block
    n = len(whole)
    if step <= block:
        assert len(blocks) == _expected_blocks(n, block, step)
    else:
        assert len(blocks) == math.ceil(n / step)
    for i, b in enumerate(blocks):
        assert isinstance(b, AudioBlock)
        assert b.start == i * step
        assert b.samples.shape == (block,) and b.samples.dtype == np.float32
        assert b.n_valid == min(block, n - b.start)
        np.testing.assert_allclose(b.samples[: b.n_valid], whole[b.start:b.start + b.n_valid],
                                   atol=1e-3)
        assert not b.samples[b.n_valid:].any()  # zero padding
    last = blocks[-1]
    assert last.start + block >= n  # the whole file is covered ...
    assert step > block or len(blocks) == 1 or blocks[-2].start + block < n  # ... only once


@pytest.mark.parametrize(("block", "hop"), [(4000, None), (4000, 1000), (3000, 4500), (32000, 8000), (1999, 7)])
def test_stream_align_last_places_windows_as_in_memory(tmp_path, monkeypatch, block, hop):
    # Streaming (long files) and Windows (the rest) must give a file the same windows.
    monkeypatch.setattr(audio, "_READ_FRAMES", 1021)
    path = make_noise(tmp_path / "noise.wav", 2.0, 16000, subtype="FLOAT")
    whole, _ = load_audio(path)
    blocks = list(iter_audio_blocks(path, block_samples=block, hop_samples=hop, align_last=True))
    np.testing.assert_array_equal([b.start for b in blocks], window_starts(len(whole), block, hop or block))
    for b in blocks:
        assert b.n_valid == block
        np.testing.assert_array_equal(b.samples, whole[b.start:b.start + block])
    assert blocks[-1].start + block == len(whole)


def test_stream_align_last_pads_a_file_shorter_than_a_block(tmp_path):
    path = make_noise(tmp_path / "short.wav", 0.1, 16000, subtype="FLOAT")
    (only,) = iter_audio_blocks(path, block_samples=4000, align_last=True)
    assert only.start == 0 and only.n_valid == 1600 and not only.samples[1600:].any()


def test_stream_without_resampling_is_exact(tone_wav):
    whole, _ = load_audio(tone_wav)
    blocks = list(iter_audio_blocks(tone_wav, block_samples=4000))
    assert [b.start for b in blocks] == [0, 4000, 8000, 12000]
    np.testing.assert_array_equal(np.concatenate([b.samples for b in blocks]), whole)


def test_stream_block_ending_at_file_end_is_last(tmp_path):
    path = make_noise(tmp_path / "n.wav", 1.0, 8000)  # 8000 samples
    blocks = list(iter_audio_blocks(path, block_samples=4000, hop_samples=2000))
    assert [(b.start, b.n_valid) for b in blocks] == [(0, 4000), (2000, 4000), (4000, 4000)]


def test_stream_longer_block_than_file(tone_wav):
    (only,) = iter_audio_blocks(tone_wav, block_samples=20000, sample_rate=16000)
    assert (only.start, only.n_valid, only.samples.shape) == (0, 16000, (20000,))


def test_stream_stereo(stereo_wav):
    whole, _ = load_audio(stereo_wav, sample_rate=8000, mono=False)
    blocks = list(iter_audio_blocks(stereo_wav, block_samples=1500, sample_rate=8000, mono=False))
    assert len(blocks) == 3
    assert all(b.samples.shape == (2, 1500) for b in blocks)
    assert blocks[-1].n_valid == 1000
    joined = np.concatenate([b.samples for b in blocks], axis=1)[:, :4000]
    np.testing.assert_allclose(joined, whole, atol=1e-3)


@pytest.mark.parametrize(("sample_rate", "atol"), [(None, 1e-7), (8000, 1e-3)])
def test_stream_mono_mixes_a_stereo_file_down_to_the_mean_of_its_channels(stereo_wav, sample_rate, atol):
    # classify streams long files: a stereo one is heard as both channels, as load_audio mixes it.
    channels, sr = sf.read(stereo_wav, dtype="float64")  # (frames, 2): 440 Hz left, 880 Hz right
    mean = channels.mean(axis=1)
    if sample_rate:
        mean = soxr.resample(mean, sr, sample_rate, quality="HQ")
    blocks = list(iter_audio_blocks(stereo_wav, block_samples=1500, sample_rate=sample_rate))
    assert all(b.samples.shape == (1500,) for b in blocks)
    joined = np.concatenate([b.samples for b in blocks])[: len(mean)]
    np.testing.assert_allclose(joined, mean, atol=atol)


def _streamed_blocks_and_peak_memory(path, **options) -> tuple[int, int]:
    """How many blocks ``iter_audio_blocks(path, **options)`` gives, and the peak of what NumPy allocated meanwhile."""
    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_audio_blocks(path, **options))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_memory_does_not_grow_with_length(tmp_path):
    path = make_noise(tmp_path / "long.wav", 120.0, 16000)  # 7.7 MB as float32
    n, peak = _streamed_blocks_and_peak_memory(path, block_samples=16000, sample_rate=8000)
    assert n == 60
    assert peak < 2_000_000


def test_stream_memory_stays_small_for_a_low_rate_file(tmp_path):
    # 30,000 samples at 100 Hz are 300 s: 4.8 million samples at 16 kHz, read a few at a time.
    path = tmp_path / "low.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 30000).astype(np.float32), 100, subtype="FLOAT")
    n, peak = _streamed_blocks_and_peak_memory(path, block_samples=16000, sample_rate=16000)
    assert n == 300
    assert peak < 4_000_000  # 19 MB or more when the file was read in one go


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"block_samples": 0}, "block_samples=0"),
     ({"block_samples": 100, "hop_samples": -1}, "hop_samples=-1"),
     ({"block_samples": 10.5}, "block_samples=10.5"),
     ({"block_samples": 100, "sample_rate": 0}, "sample_rate=0")],
)
def test_stream_bad_arguments_raise_at_call(tone_wav, kwargs, fragment):
    with pytest.raises(ParameterError) as excinfo:
        iter_audio_blocks(tone_wav, **kwargs)  # no iteration needed
    assert fragment in _message(excinfo)


def test_an_ogg_file_cut_short_decodes_with_a_warning(tmp_path, caplog):
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 20 * 16000)
    data = write_audio(tmp_path / "whole.ogg", noise, 16000, subtype="VORBIS").read_bytes()
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    middle = pages[len(pages) // 2]
    (tmp_path / "at_a_page.ogg").write_bytes(data[:middle])  # whole pages, but not the last one
    (tmp_path / "in_a_page.ogg").write_bytes(data[: middle + 1000])
    (tmp_path / "tagged.ogg").write_bytes(data + b"TAG" + bytes(125))  # an ID3v1 tag after the last page
    write_audio(tmp_path / "opus.ogg", noise[:16000], 16000, subtype="OPUS")
    for complete in ("whole.ogg", "tagged.ogg", "opus.ogg"):
        with caplog.at_level(logging.WARNING, logger="specnet"):
            samples = load_audio(tmp_path / complete)[0]
        assert caplog.records == [] and len(samples) > 0, complete
    assert len(load_audio(tmp_path / "whole.ogg")[0]) == len(noise)
    with open(tmp_path / "in_a_page.ogg", "rb") as handle:  # as on systems without descriptors
        audio._warn_if_ogg_cut(handle, "in_a_page.ogg")
        assert handle.tell() == 0
    assert [r.getMessage() for r in caplog.records] == [
        "in_a_page.ogg: truncated: the Ogg stream stops before its end (a cut copy or download?); using what decodes"]
    for name in ("at_a_page.ogg", "in_a_page.ogg"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="specnet"):
            samples = load_audio(tmp_path / name)[0]
        assert 0 < len(samples) < len(noise), name
        assert [r.getMessage() for r in caplog.records] == [
            f"{tmp_path / name}: truncated: the Ogg stream stops before its end (a cut copy or download?); using what decodes"]
