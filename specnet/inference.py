"""Using a trained model: ``load_model``, ``predict``, ``embed``, long-file windowing.

A clip longer than the model's training clip is cut into windows (``window``
seconds, every ``hop`` seconds; by default the model's clip length and half
of it). The clip's probabilities are the mean of its windows'; its clip-level
embedding the mean of its windows' embeddings. Windows of digital silence
(no sample above :data:`SILENT_PEAK`) are left out of both means unless the
whole clip is silent: a model that measures dB from each window's own peak
(``ref_peak``, the training default) would see rounding noise magnified into a
confident, meaningless vote. Files longer than
:data:`STREAM_SECONDS` are read as a stream, a batch of windows at a time, so
memory grows with their length only by what is kept per window (its outputs,
start and peak: ~110 bytes for a 10-class model, 0.6 MB for 3 hours of 4 s
windows every 2 s).
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .catalog import DEFAULT_MODEL, bundled_models
from .audio import float_samples, is_audio_file, iter_audio_blocks, load_audio, resample, unusable_samples
from .paths import display_name, naming, text_name
from .checks import as_numpy, check_int, is_finite_number
from .devices import resolve_device
from .errors import DataError, Given, GivenValueError, ModelFileError, ParameterError, SpecnetError, counted
from .fileio import check_output_path
from .image import image_from_array, is_image_file, is_pil_image, load_image
from .modelfile import load_model_file, save_model_file
from .modelspec import MAX_CLIP_SECONDS
from .catalog import read_metadata
from .models.layers import eval_mode
from .network import SpecNet
from .windows import Windows, clip_mean, default_hop, fit_length, is_silence, leaves_gaps, loudest_sample, warn_about_level, window_peaks

STREAM_SECONDS = 300.0
PREFETCH_FILES = 64
#: Most samples the files decoded ahead may hold together (64 MB of float32, 17 minutes at
#: 16 kHz), besides PREFETCH_FILES: 64 files of just under STREAM_SECONDS would hold 1.2 GB.
PREFETCH_SAMPLES = 2**24
#: Most log-mel cells (windows x mel bands x frames) in one forward pass: it bounds the
#: activation memory (64 bytes per cell for each 16-channel float32 layer output)
#: whatever the window length, e.g. 20 windows of 4 s at 10 ms frames and 64 bands.
MAX_BATCH_CELLS = 2**19
#: Most batches run through the network at once on a CPU (see :meth:`Model._lanes`).
MAX_LANES = 4
#: Windows of at most this many log-mel cells (64 bands x 128 frames) run in lanes; larger ones
#: give layer outputs that torch's threads share well within one batch (see :meth:`Model._lanes`).
MAX_LANE_WINDOW_CELLS = 2**13
#: The longest hop (in samples) a window may take: far beyond any recording.
MAX_HOP_SAMPLES = 2**53
#: Adapting to fewer windows than this gives a warning: the statistics are then noisy.
FEW_WINDOWS = 100
#: A 2-D audio array with at most this many columns and more rows is (time, channels), not a batch.
MAX_CHANNELS = 8

log = logging.getLogger("specnet")


def _warn_about_level(peak: float, name: str, *, gaps: bool = False) -> None:
    """:func:`~specnet.windows.warn_about_level`, saying what that means for scores and embeddings."""
    warn_about_level(peak, name, gaps=gaps, silent="what the model makes of it means nothing",
                     quiet="what the model hears is mostly noise; its output says little")


def resolve_model(name_or_path: str | bytes | os.PathLike | None) -> tuple[str, Path]:
    """``(display name, file)`` for a bundled model name, a model file, or None (the default)."""
    if not (name_or_path is None or isinstance(name_or_path, (str, bytes, os.PathLike))):
        raise ParameterError(f"model must be a bundled model's name or a model file's path, got {type(name_or_path).__name__}")
    name = DEFAULT_MODEL if name_or_path is None else os.fsdecode(name_or_path)
    if name == "":
        raise ModelFileError(f"empty model name: give a model file or a bundled model ({', '.join(bundled_models())}), "
                             f"or leave it out for {DEFAULT_MODEL}")
    bundled = bundled_models()
    if name in bundled:
        return name, bundled[name]
    path = Path(os.path.expanduser(name))
    if path.exists() or path.suffix or os.sep in name:
        return str(path), path
    known = ", ".join(bundled) or "none installed"
    raise ModelFileError(f"{name}: neither a model file nor a bundled model (bundled: {known})")


@dataclass
class Prediction:
    """What the model says about one input.

    predictions : top-k ``{"label", "score"}``, scores are softmax probabilities, descending.
    probabilities : (K,) probabilities of every class, in ``classes`` order.
    duration : seconds of audio (None for images).
    segments : per-window ``{"start", "end", "label", "score"}`` (seconds) when asked for;
        a window of digital silence has ``label`` and ``score`` None.
    """

    path: str | None
    predictions: list[dict[str, Any]]
    probabilities: np.ndarray
    duration: float | None = None
    segments: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON; ``path`` as text (see :func:`~specnet.paths.text_name`)."""
        path = None if self.path is None else text_name(self.path)
        out: dict[str, Any] = {"path": path, "predictions": self.predictions, "duration": self.duration}
        if self.segments is not None:
            out["segments"] = self.segments
        return out


@dataclass
class Failure:
    """An input that could not be used, and why (one line, naming it)."""

    path: str
    reason: str
    error: type[SpecnetError] = field(default=SpecnetError, repr=False)  # what predict() raises for it
    # What decoding logged before it failed, said just before the failure is (_HeldMessages).
    _messages: list[logging.LogRecord] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def message(self) -> str:
        """``reason`` as one line that names the input (the decoder's own messages already do)."""
        return naming(self.path, self.reason)


@dataclass
class _Item:
    """One decoded input: its windows, or an image (1, C, H, W); None for a file to stream."""

    index: int
    path: str | None
    windows: Windows | torch.Tensor | None
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    duration: float | None = None
    silent: np.ndarray | None = None  # (n,) bool: windows of digital silence (audio only)
    peak: float | None = None  # its loudest sample (audio decoded whole), which its user warns about
    outputs: torch.Tensor | None = None  # (n, K) probabilities or (n, D) embeddings, once run
    _messages: list[logging.LogRecord] = field(default_factory=list)  # decoding's warnings, said by its user


class Model:
    """A model ready for inference: one :func:`load_model` loaded, or ``Model(net)`` for a
    :class:`~specnet.network.SpecNet` built or trained in Python.

    net : the :class:`~specnet.network.SpecNet` (raw samples or pixels in, logits out), in eval mode.
    name : how messages name the model.
    device : the ``torch.device`` it runs on (``device`` given as :func:`load_model` takes it).
    classes : class names in logit order.
    config : the model's :class:`~specnet.modelspec.ModelSpec` (features, clip length, provenance).
    """

    def __init__(self, net: SpecNet, *, name: str = "model", device: str | torch.device = "auto") -> None:
        if not isinstance(net, SpecNet):
            raise ParameterError(f"Model() takes a specnet SpecNet, got {type(net).__name__} "
                                 "(specnet.load_model loads a model file or a bundled model)")
        device = resolve_device(device)
        self.net = net.to(device).eval()
        if device.type != "mps":  # as in training: channels_last convolutions ran ~20 % faster on CPU
            self.net.backbone.to(memory_format=torch.channels_last)
        self.name = name
        self.device = device

    def __repr__(self) -> str:
        spec = self.config
        shown = ", ".join(spec.classes[:4]) + (", ..." if len(spec.classes) > 4 else "")
        clips = f", {spec.clip_seconds:g} s clips" if spec.clip_seconds else ""
        takes = (f"audio at {spec.sample_rate} Hz{clips}" if spec.input_kind == "audio"
                 else f"images of {spec.image_size[0]} x {spec.image_size[1]} pixels")
        return f"<specnet.Model {self.name!r}: {spec.arch}, {len(spec.classes)} classes ({shown}), {takes}, on {self.device}>"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.net.classes

    @property
    def config(self):
        return self.net.spec

    @property
    def input_kind(self) -> str:
        return self.net.spec.input_kind

    @property
    def sample_rate(self) -> int | None:
        return self.net.spec.sample_rate

    def summary_view(self, input_size: Sequence[int] | None = None) -> tuple[nn.Module, Sequence[int] | None]:
        """What a layer summary (:func:`specnet.summary`) shows of the model: its network's
        :meth:`~specnet.network.SpecNet.summary_view`."""
        return self.net.summary_view(input_size)

    def _window_samples(self, window: float | None, hop: float | None) -> tuple[int, int]:
        rate = self.sample_rate
        if window is not None and not (is_finite_number(window) and 0 < window <= MAX_CLIP_SECONDS):
            raise ParameterError(f"window={window!r} must be a positive number of seconds, at most {MAX_CLIP_SECONDS:g}")
        if window is None and self.config.clip_seconds is None:  # a SpecNet built in Python may have none
            raise ParameterError(f"{self.name} has no clip length (clip_seconds) to window inputs by: give window= in seconds")
        window_s = window if window is not None else self.config.clip_seconds  # the model's own, whatever its length
        hop_s = hop if hop is not None else window_s / 2  # in samples: default_hop below
        if not (is_finite_number(hop_s) and hop_s > 0):
            raise ParameterError(f"hop={hop_s!r} must be a positive number of seconds")
        # Given values are named as Given, so the command line says them as its flags (--hop 3 s).
        given_hop = Given("hop", f"{hop_s:g} s")
        if hop_s * rate > MAX_HOP_SAMPLES:  # beyond any recording (and beyond what an int holds)
            raise GivenValueError(f"%s must be at most {MAX_HOP_SAMPLES / rate:g} s", given_hop)
        if hop is not None and round(hop_s * rate, 6) < 1:  # 0.8 samples too, not only what rounds to none
            raise GivenValueError(f"%s is less than one sample of the model's {rate} Hz audio ({1 / rate:g} s)", given_hop)
        given_window = Given("window", f"{window_s:g} s") if window is not None else f"the model's {window_s:g} s window"
        if window is not None and round(window_s * rate, 6) < 1:
            raise GivenValueError(f"%s is less than one sample of the model's {rate} Hz audio ({1 / rate:g} s)", given_window)
        if hop_s > window_s:
            # The first and the end-aligned last window cover a file up to twice the window; beyond that, gaps.
            log.warning("%s is longer than %s: in files longer than %g s, the audio between the windows is skipped",
                        given_hop, given_window, 2 * window_s)
        features = self.config.features
        window_n = max(1, int(round(window_s * rate)))
        if not features.center and window_n < features.n_fft:  # uncentred frames: none in a shorter window
            raise GivenValueError(f"%s is shorter than one of the model's FFT frames ({features.n_fft / rate:g} s), "
                                  "which it takes whole (center=False)", given_window)
        trained_on = self.config.clip_seconds
        if window_s * rate < features.window_length:
            log.warning("%s is shorter than one of the model's FFT frames (%g s): the model's output says little",
                        given_window, features.window_length / rate)
        elif trained_on and window_s < trained_on / 2:  # a model hears a window as it heard its training clips
            log.warning("%s is less than half the %g s clips the model was trained on: the model's output says little",
                        given_window, trained_on)
        return window_n, default_hop(window_n) if hop is None else int(round(hop_s * rate))

    # ---------------------------------------------------------- decoding

    def _check_kind(self, path: str) -> None:
        """Refuse a file whose suffix names the other kind of input than the model's."""
        other = "image" if self.input_kind == "audio" else "audio"
        if (is_image_file if other == "image" else is_audio_file)(path):
            takes = "images" if self.input_kind == "image" else "audio"
            raise DataError(f"{display_name(path)}: an {other} file, and the model ({self.name}) takes {takes}")

    def _decode_path(self, index: int, path: str, window: int, hop: int) -> _Item:
        self._check_kind(path)
        if self.input_kind == "image":
            spec = self.config
            image = load_image(path, channels=spec.in_chans, size=spec.image_size)
            return _Item(index, path, image.unsqueeze(0))
        # Read at most STREAM_SECONDS + 1 s: a longer file is streamed later, in order. One
        # open per file (a header read first cost a third of decoding a short file), and no
        # more memory than a file just under STREAM_SECONDS, which is decoded whole anyway.
        samples, _ = load_audio(path, sample_rate=self.sample_rate, duration=STREAM_SECONDS + 1.0)
        if samples.shape[-1] > STREAM_SECONDS * self.sample_rate:
            return _Item(index, path, None)
        return self._cut(index, path, samples, window, hop)

    def _cut(self, index: int, path: str | None, samples: np.ndarray, window: int, hop: int) -> _Item:
        """An input's :class:`_Item` from its ``samples`` ``(n,)`` at the model's rate."""
        windows = Windows(samples, window, hop)
        peaks = windows.peaks()  # the clip's own peak, unless the windows leave gaps (then said so)
        return _Item(index, path, windows, windows.starts, len(samples) / self.sample_rate, silent=is_silence(peaks),
                     peak=float(peaks.max()))

    def _warn_about(self, num_samples: int, peak: float, name: str, *, gaps: bool = False) -> None:
        """What classify and embed say about an input of ``num_samples`` (at the model's rate)
        whose loudest sample is ``peak`` (of its windows, which skip audio if ``gaps``): shorter
        than one FFT frame, silent or nearly."""
        self._warn_if_shorter_than_a_frame(num_samples, name)
        _warn_about_level(peak, name, gaps=gaps)

    def _warn_if_shorter_than_a_frame(self, num_samples: int, name: str, *, meaning: str = "the model's output says little") -> None:
        """Warn when an input of ``num_samples`` (at the model's rate) is shorter than one FFT
        frame, saying what that ``meaning`` is for its user. Said by the user of each input, in
        input order (decoding runs ahead)."""
        frame = self.config.features.window_length
        if num_samples < frame:
            log.warning("%s: %g s is shorter than one of the model's FFT frames (%g s): %s",
                        name, num_samples / self.sample_rate, frame / self.sample_rate, meaning)

    def _from_samples(self, index: int, samples: Any, sample_rate: int | None, window: int, hop: int) -> _Item:
        if self.input_kind == "image":
            self._check_array(samples)
            spec = self.config
            return _Item(index, None, image_from_array(samples, channels=spec.in_chans, size=spec.image_size).unsqueeze(0))
        y = self._samples(samples, sample_rate)
        return self._cut(index, None, y, window, hop)

    def _check_array(self, samples: Any) -> None:
        """Refuse an input given in memory that is not an array (an empty file name, a number)."""
        if isinstance(samples, (str, bytes, os.PathLike)):  # what is left of paths here: an empty one
            raise ParameterError("an empty file name")
        if not (isinstance(samples, (np.ndarray, torch.Tensor, list, tuple)) or (self.input_kind == "image" and is_pil_image(samples))):
            what = "samples" if self.input_kind == "audio" else "pixels"
            hint = " (each item of a list is one input: pass np.asarray(the_list) for one clip)" if isinstance(samples, numbers.Number) else ""
            given = "a Pillow image, and the model takes audio" if is_pil_image(samples) else type(samples).__name__
            raise ParameterError(f"expected a file path or an array of {what}, got {given}{hint}")

    def _samples(self, samples: Any, sample_rate: int | None) -> np.ndarray:
        """Audio given in memory as mono float32 samples ``(n,)`` at the model's rate."""
        self._check_array(samples)
        if sample_rate is None:
            raise ParameterError("raw samples need sample_rate= (Hz)")
        y = float_samples(as_numpy(samples))
        if y.ndim != 1 or y.size == 0:
            raise ParameterError(f"expected a non-empty 1-D array of samples, got shape {y.shape}")
        if problem := unusable_samples(loudest_sample(y), non_finite="samples contain NaN or infinite values"):
            raise ParameterError(problem)
        resampled = resample(y, orig_sr=int(sample_rate), target_sr=self.sample_rate)
        if resampled.size == 0:
            raise ParameterError(f"{counted(y.size, 'sample')} at {sample_rate} Hz make less than one "
                                 f"sample at the model's {self.sample_rate} Hz")
        return resampled

    def _decode_overlaps_network(self) -> bool:
        """Whether files are decoded in worker threads while the network runs.

        Only when there are cores to spare: on a CPU device whose threads already
        fill every core, a decoding thread beside them makes each layer wait for the
        thread it displaced, and short files decode faster in the calling thread
        (no hand-over, no contention for the GIL), between network batches.
        """
        return self.device.type != "cpu" or (os.cpu_count() or 1) > torch.get_num_threads()

    def _lanes(self, window: int) -> int:
        """How many batches of ``window``-sample windows run through the network at once, each in
        a worker thread with its share of torch's threads, while the caller decodes the next
        files; 0: one at a time, in the caller's thread, between decoding.

        Lanes on a CPU whose cores torch's threads fill (:meth:`_decode_overlaps_network` is
        False), for windows of at most MAX_LANE_WINDOW_CELLS log-mel cells: there decoding
        would otherwise leave a core idle, and a small window's layer outputs keep two threads
        busy less well than two batches keep one each (FSDD's 0.8 s windows: 10-15 % more
        files a second on 2 cores, benchmarks/README.md; ESC-10's 5 s ones: 5 % fewer). None
        for images, on a GPU, with cores to spare for decoding, or while batches must run in
        the caller's thread (:meth:`_runs_here_only`). A worker sets torch's thread count,
        which torch also keeps for the whole process: a thread that first runs torch while
        workers run starts with theirs.
        """
        threads = torch.get_num_threads()
        cells = self._window_cells(window)
        if cells is None or cells > MAX_LANE_WINDOW_CELLS or self._decode_overlaps_network() or threads < 2 \
                or self._runs_here_only():
            return 0
        return min(threads, MAX_LANES)

    def _runs_here_only(self) -> bool:
        """Whether a batch must run in this thread, as :meth:`_run` runs it: while a layer is in
        training mode (eval mode is set around each batch, which batches running together could
        not share) or has a caller's forward hook (which would see batches from several threads,
        out of order), or under a caller's autocast (which holds in the caller's thread only)."""
        return torch.is_autocast_enabled(self.device.type) or any(
            m.training or m._forward_hooks or m._forward_pre_hooks for m in self.net.modules())

    @contextmanager
    def _batch_runner(self, lanes: int, *, embed: str | None) -> Iterator[Callable[..., Future]]:
        """``submit``: ``submit(batch)`` gives a Future of the batch's outputs (probabilities, or
        embeddings with ``embed``), run in one of ``lanes`` worker threads, or at once in this
        thread, on all of torch's threads: with ``here=True``, when ``lanes`` is 0 (see
        :meth:`_lanes`), or while a batch must run here (a layer set training between two
        results, say: :meth:`_runs_here_only`). Batches submitted and not yet started when the
        block ends are dropped; those started are waited for."""
        run_here = partial(_InlineExecutor().submit, partial(self._run, embed=embed))
        if not lanes:
            yield lambda batch, here=False: run_here(batch)
            return
        threads = torch.get_num_threads()
        pool = ThreadPoolExecutor(lanes, thread_name_prefix="specnet-forward",
                                  initializer=torch.set_num_threads, initargs=(max(1, threads // lanes),))
        in_a_lane = partial(pool.submit, partial(self._forward, embed=embed))
        try:
            yield lambda batch, here=False: run_here(batch) if here or self._runs_here_only() else in_a_lane(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)  # a worker's setting also resized a thread pool torch shares

    def _items(self, inputs: Any, sample_rate: int | None, window: int, hop: int, *, num_workers: int) -> Iterator[_Item | Failure]:
        """Decoded inputs in order.

        With cores to spare (or a GPU), ``num_workers`` threads decode up to
        PREFETCH_FILES files ahead while the caller runs the network; otherwise
        the calling thread decodes each file when it is needed, between batches.
        Either way the files ahead hold at most about PREFETCH_SAMPLES samples (or one
        file), a file still decoding counted as long as the last one handed on (at
        first, as long as a file decoded whole may be).
        """
        if sample_rate is not None:
            check_int("sample_rate", sample_rate, minimum=1)
        entries = _as_entries(inputs, kind=self.input_kind)
        pool = ThreadPoolExecutor(max_workers=max(1, num_workers)) if self._decode_overlaps_network() else _InlineExecutor()
        pending: deque = deque()
        ahead = _Lookahead(guess=int(STREAM_SECONDS * (self.sample_rate or 0)))
        try:
            for index, entry in enumerate(entries):
                path = _input_path(entry)  # bytes names (not UTF-8) round-trip via surrogateescape
                if path:  # an empty one is refused with the samples' checks
                    # A long file comes back from the worker without windows and is streamed
                    # later, in order; checking its length there keeps header reads off this thread.
                    pending.append((index, path, pool.submit(_HELD.run, self._decode_path, index, path, window, hop)))
                else:
                    # Copied here, before the caller's next entry: windows are views of the samples and
                    # run batches later, and a generator may refill one buffer (a recorder's loop).
                    entry = _taken(entry)
                    pending.append((index, None, pool.submit(_HELD.run, self._from_samples, index, entry, sample_rate, window, hop)))
                while len(pending) > PREFETCH_FILES or (len(pending) > 1 and ahead.samples(pending) > PREFETCH_SAMPLES):
                    item = _resolve(pending.popleft())
                    ahead.handed_on(item)
                    yield item
            while pending:
                yield _resolve(pending.popleft())
        finally:
            # Stopped early (a closed generator, Ctrl-C): files queued but not started are dropped,
            # not decoded first; only those the workers have started are waited for.
            pool.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------- network

    def _run(self, batch: np.ndarray | torch.Tensor, *, embed: str | None = None) -> torch.Tensor:
        """Probabilities ``(B, classes)`` (or embeddings) of a batch, in eval mode whatever mode a
        caller left the network in (``model.net.train()`` to fine-tune it, say)."""
        with eval_mode(self.net):
            return self._forward(batch, embed=embed)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray | torch.Tensor, *, embed: str | None = None) -> torch.Tensor:
        """:meth:`_run` in the modes the network's layers are in (:meth:`adapt` measures in training mode)."""
        inputs = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        inputs = inputs.to(self.device, non_blocking=True)
        if embed:
            return self.net.embed(inputs, level=embed).float().cpu()
        return self.net(inputs).float().softmax(-1).cpu()

    def _window_outputs(self, items: Iterable[_Item | Failure], *, batch_size: int, lanes: int, embed: str | None) -> Iterator[_Item | Failure]:
        """The items again, in order, with ``outputs`` set.

        Windows are queued across inputs and run ``batch_size`` at a time (a smaller
        batch only at the end, or before a long file), so forward passes have one shape and
        a bounded size; a file's windows may span several batches, and up to ``lanes`` batches
        run while this thread decodes the next inputs (:meth:`_lanes`). Items without
        windows (long files, which the caller streams) and failures pass through
        as soon as every input before them is done: a long file runs the windows
        queued before it, in a smaller batch.
        """
        pending: deque[_Item | Failure] = deque()  # in input order, not yet handed on
        with self._batch_runner(lanes, embed=embed) as submit:
            queue = _WindowQueue(submit, in_flight=lanes)
            for item in items:
                pending.append(item)
                if isinstance(item, _Item) and item.windows is not None:
                    queue.add(item)
                    while queue.waiting >= batch_size:
                        queue.run(batch_size)
                elif isinstance(item, _Item):  # a long file, which the caller streams: what is before it goes first
                    queue.run_all()
                yield from _done(pending)  # a failure or a long file at the head goes at once
                while queue.hand_out_next_finished():  # each batch's items go on before a later batch's error
                    yield from _done(pending)
            queue.run_all()
        yield from pending

    def _stream(self, path: str, window: int, hop: int, *, batch_size: int, embed: str | None) -> tuple[_Item, torch.Tensor]:
        """Window outputs of a long file read block by block (memory independent of its length,
        but for each window's outputs, start and peak, kept in arrays that double as they fill)."""
        outputs, starts, peaks = _GrowingRows(), _GrowingRows(), _GrowingRows()
        batch: list = []  # AudioBlocks not yet run
        total = 0

        def run_batch() -> None:
            samples = np.stack([block.samples for block in batch])
            outputs.append(self._run(samples, embed=embed).numpy())
            starts.append(np.array([block.start for block in batch], dtype=np.int64))
            peaks.append(window_peaks(samples))
            batch.clear()

        for block in self._blocks(path, window, hop):
            batch.append(block)
            total = block.start + block.n_valid
            if len(batch) == batch_size:
                run_batch()
        if batch:
            run_batch()
        _warn_about_level(float(peaks.rows().max(initial=0.0)), display_name(path), gaps=leaves_gaps(starts.rows(), window))
        item = _Item(-1, path, None, starts.rows(), total / self.sample_rate, silent=is_silence(peaks.rows()))
        return item, torch.from_numpy(outputs.rows())

    def _blocks(self, path: str, window: int, hop: int) -> Iterator:
        """A long file's windows, block by block, placed as :class:`~specnet.windows.Windows` places them. Its
        start was decoded (and a cut-short file reported) by :meth:`_decode_path`."""
        return iter_audio_blocks(path, block_samples=window, hop_samples=hop, sample_rate=self.sample_rate,
                                 warn_truncated=False, align_last=True)

    def _windows_per_batch(self, batch_size: int, window: int, *, lanes: int = 0) -> int:
        """Windows of ``window`` samples in one batch: ``batch_size``, shared by the ``lanes`` batches
        that run at once (64 windows in 2 lanes: 32 each, the memory of one batch of 64), and
        lowered so that they stay within MAX_BATCH_CELLS together."""
        share = max(1, lanes)
        cells = self._window_cells(window)
        if cells is None:
            return max(1, batch_size // share)
        return max(1, min(batch_size // share, MAX_BATCH_CELLS // share // cells))

    def _window_cells(self, window: int) -> int | None:
        """Log-mel cells (bands x frames) of a ``window``-sample window; None for image models."""
        features = self.config.features
        return None if features is None else features.n_mels * features.num_frames(window)

    def check_audio_options(self, **options: Any) -> None:
        """Refuse, on an image model, the options only audio takes (``sample_rate``, ``window``,
        ``hop``, ``timeline``) that ``options`` gives (a value other than None or False)."""
        given = [f"{name}=" for name, value in options.items() if value not in (None, False)]
        if given and self.input_kind != "audio":
            raise ParameterError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} an audio model; {self.name} takes images")

    def _window_sizes(self, window: float | None, hop: float | None, **audio_options: Any) -> tuple[int, int]:
        """``(window, hop)`` in samples for audio models (said once per call: it may warn); ``(0, 0)``
        for images, which refuse ``window``, ``hop`` and the other ``audio_options`` given."""
        self.check_audio_options(**audio_options, window=window, hop=hop)
        return self._window_samples(window, hop) if self.input_kind == "audio" else (0, 0)

    def _outputs(self, inputs: Any, *, sample_rate, window_n, hop_n, batch_size, num_workers, embed) -> Iterator[tuple[_Item, torch.Tensor] | Failure]:
        """Per input in order: ``(item, window outputs)``, or a :class:`Failure`; windows of
        ``window_n`` samples every ``hop_n`` (from :meth:`_window_sizes`)."""
        check_int("batch_size", batch_size, minimum=1)
        check_int("num_workers", num_workers, minimum=0)
        lanes = self._lanes(window_n)
        items = self._items(inputs, sample_rate, window_n, hop_n, num_workers=num_workers)
        queued = self._window_outputs(items, batch_size=self._windows_per_batch(batch_size, window_n, lanes=lanes),
                                      lanes=lanes, embed=embed)
        batch_size = self._windows_per_batch(batch_size, window_n)  # a long file's, streamed one batch at a time
        for item in queued:
            _say(item._messages)
            if isinstance(item, Failure):
                yield item
                continue
            if item.outputs is not None:
                if item.peak is not None:  # audio decoded whole
                    self._warn_about(item.windows.num_samples, item.peak, _name(item), gaps=item.windows.leave_gaps())
                yield item, item.outputs
            else:  # a long file, streamed now
                try:
                    yield self._stream(item.path, window_n, hop_n, batch_size=batch_size, embed=embed)
                except SpecnetError as exc:
                    yield Failure(item.path, str(exc), type(exc))

    # ---------------------------------------------------------- public

    def predict_iter(
        self, inputs: Any, *, sample_rate: int | None = None, top_k: int = 5, window: float | None = None,
        hop: float | None = None, timeline: bool = False, batch_size: int = 64, num_workers: int = 2,
    ) -> Iterator[Prediction | Failure]:
        """Like :meth:`predict`, one result at a time and in input order; bad inputs give a :class:`Failure`."""
        check_int("top_k", top_k, minimum=1)
        window_n, hop_n = self._window_sizes(window, hop, sample_rate=sample_rate, timeline=timeline)
        for result in self._outputs(inputs, sample_rate=sample_rate, window_n=window_n, hop_n=hop_n, batch_size=batch_size, num_workers=num_workers, embed=None):
            if isinstance(result, Failure):
                yield result
                continue
            item, probs = result
            yield self._prediction(item, probs, top_k=top_k, timeline=timeline, window_n=window_n)

    def _prediction(self, item: _Item, window_probs: torch.Tensor, *, top_k: int, timeline: bool, window_n: int) -> Prediction:
        rows = window_probs.numpy()
        probs = clip_mean(rows, item.silent)
        order = np.argsort(-probs, kind="stable")[:top_k]
        segments = None
        if timeline and self.input_kind == "audio":
            segments = []
            for start, p, silent in zip(item.starts, rows, item.silent):
                begin = float(start) / self.sample_rate
                end = min(item.duration, begin + window_n / self.sample_rate)
                best = None if silent else int(p.argmax())  # a silent window's vote means nothing
                segments.append({"start": round(begin, 4), "end": round(end, 4),
                                 "label": None if best is None else self.classes[best],
                                 "score": None if best is None else float(p[best])})
        return Prediction(
            path=item.path,
            predictions=[{"label": self.classes[i], "score": float(probs[i])} for i in order],
            probabilities=probs,
            duration=item.duration,
            segments=segments,
        )

    def predict(self, inputs: Any, *, sample_rate: int | None = None, top_k: int = 5, window: float | None = None, hop: float | None = None, timeline: bool = False, batch_size: int = 64) -> list[Prediction]:
        """Top-k labels with probabilities for each input.

        inputs : a path, any iterable of paths but a dict or set, samples ``(n,)`` or a batch ``(B, n)`` /
            list of arrays with ``sample_rate=`` (Hz; floats, or integer PCM scaled as
            soundfile scales it; a ``(time, channels)`` array is refused: mix it down), or
            images ``(C, H, W)`` or a batch ``(B, C, H, W)`` (C = 1, 3 or 4; uint8, or float in
            [0, 1]) or Pillow images, each made what a file would be (see
            :func:`specnet.image.image_from_array`). Folders and glob patterns: :func:`specnet.find_inputs`.
        Raises the first failing input's :class:`SpecnetError`.
        """
        results = list(self.predict_iter(inputs, sample_rate=sample_rate, top_k=top_k, window=window, hop=hop, timeline=timeline, batch_size=batch_size))
        return _raise_first_failure(results)

    def embed(self, inputs: Any, *, sample_rate: int | None = None, level: str = "clip", window: float | None = None, hop: float | None = None, batch_size: int = 64):
        """Pre-logit embeddings.

        level="clip": ``(n, D)`` array, the mean over each input's windows of what the final
        layer reads: the pooled vector, after the hidden dense layers a model has
        (``D = net.backbone.num_features``).
        level="frame": ``(embeddings (n, frames, C), timestamps (frames,) in s)``, as
        :meth:`embed_frames` gives them (requires audio; each clip whole, so no window or hop);
        ``C`` is the last block's channels, which differs from ``D`` when the pooling keeps
        frequency bands apart or a hidden layer follows it (see :meth:`SpecNet.embed`).
        """
        if level == "clip":
            results = _raise_first_failure(list(self.embed_iter(inputs, sample_rate=sample_rate, window=window, hop=hop, batch_size=batch_size)))
            return np.stack(results) if results else np.zeros((0, self.net.backbone.num_features), np.float32)
        if level != "frame":
            raise ParameterError(f"level={level!r} must be 'clip' or 'frame'")
        if window is not None or hop is not None:
            raise ParameterError("window and hop cut clips for level='clip'; level='frame' embeds each clip whole")
        return self.embed_frames(inputs, sample_rate=sample_rate, batch_size=batch_size)

    def embed_iter(self, inputs: Any, *, sample_rate: int | None = None, window: float | None = None, hop: float | None = None, batch_size: int = 64, num_workers: int = 2) -> Iterator[np.ndarray | Failure]:
        """Clip-level embeddings ``(dim,)`` one input at a time; bad inputs give a :class:`Failure`."""
        window_n, hop_n = self._window_sizes(window, hop, sample_rate=sample_rate)
        for result in self._outputs(inputs, sample_rate=sample_rate, window_n=window_n, hop_n=hop_n, batch_size=batch_size, num_workers=num_workers, embed="clip"):
            yield result if isinstance(result, Failure) else clip_mean(result[1].numpy(), result[0].silent)

    def embed_frames(self, inputs: Any, *, sample_rate: int | None = None, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Frame-level embeddings of whole clips: ``((n, frames, dim), timestamps (frames,) s)``.

        Each clip is zero-padded to at least the model's clip length with zeros of its
        own, so its frames do not depend on the other inputs, and keeps the frames
        centred inside its audio (at least one); ``frames`` is the most any clip keeps,
        and a shorter clip's row ends in NaN. The timestamps, shared by every row, are
        the frames' centres: a clip shorter than the first one (75 ms for the bundled
        models) keeps that frame, stamped past its end (:meth:`embed_frames_iter` and
        ``specnet.hear`` stamp it at the clip's middle). Raises the first bad input's
        error; see :meth:`embed_frames_iter` to skip bad inputs instead.
        """
        self._check_frame_options(sample_rate, batch_size)
        clips = []
        for index, entry in enumerate(_as_entries(inputs, kind="audio")):
            try:
                clips.append(self._frame_clip(index, entry, sample_rate))
            except SpecnetError as exc:  # named as predict and embed name it (a file's errors already do)
                raise type(exc)(naming(_input_path(entry) or f"input {index}", str(exc))) from None
        frames, timestamps, _ = self._frame_embeddings(clips, batch_size=batch_size)
        return frames, timestamps

    def embed_frames_iter(self, inputs: Any, *, sample_rate: int | None = None, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray] | Failure]:
        """Frame-level embeddings one input at a time: ``(frames (count, dim), timestamps (count,) s)``,
        the frames centred inside that clip's audio, as :meth:`embed_frames` gives its row; a bad
        input gives a :class:`Failure` and the next one is read."""
        self._check_frame_options(sample_rate, batch_size)
        for index, entry in enumerate(_as_entries(inputs, kind="audio")):
            try:
                clip = self._frame_clip(index, entry, sample_rate)
            except SpecnetError as exc:
                yield Failure(_input_path(entry) or f"input {index}", str(exc), type(exc))
                continue
            frames, _, (count,) = self._frame_embeddings([clip], batch_size=batch_size)
            yield frames[0, :count], self.net.frame_times_inside(frames.shape[1], len(clip) / self.sample_rate)

    def _check_frame_options(self, sample_rate: int | None, batch_size: int) -> None:
        """Refuse, once for all inputs, frame embeddings this model or these options cannot give."""
        if self.input_kind != "audio":
            raise ParameterError("frame-level embeddings need an audio model")
        if sample_rate is not None:
            check_int("sample_rate", sample_rate, minimum=1)
        check_int("batch_size", batch_size, minimum=1)

    def _frame_clip(self, index: int, entry: Any, sample_rate: int | None) -> np.ndarray:
        """One input for frame embeddings: mono samples ``(T,)`` at the model's rate."""
        path = _input_path(entry)
        if path:  # an empty path is refused with the samples' checks
            self._check_kind(path)
            clip = load_audio(path, sample_rate=self.sample_rate)[0]
        else:
            clip = self._samples(entry, sample_rate)
        self._warn_about(len(clip), loudest_sample(clip), display_name(path) if path else f"input {index}")
        return clip

    @torch.no_grad()
    def _frame_embeddings(self, clips: list[np.ndarray], *, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`embed_frames` of decoded ``clips``, and how many frames of each are real ``(n,)``."""
        with eval_mode(self.net):  # whatever mode a caller left it in
            # Clips padded to the same length run in one batch; in eval mode its rows are independent.
            by_length: dict[int, list[int]] = {}
            for i, clip in enumerate(clips):
                by_length.setdefault(max(len(clip), self.config.clip_samples or 1), []).append(i)
            rows: list[np.ndarray] = [np.empty(0)] * len(clips)
            for length, members in by_length.items():
                step = self._windows_per_batch(batch_size, length)
                for first in range(0, len(members), step):
                    chunk = members[first : first + step]
                    batch = np.stack([fit_length(clips[i], length, offset=0) for i in chunk])
                    out = self.net.embed(torch.from_numpy(batch).to(self.device), level="frame").float().cpu().numpy()
                    for i, row in zip(chunk, out):
                        rows[i] = row
            # Frames centred inside the audio, as hear.get_timestamp_embeddings keeps them.
            counts = [self.net.frames_inside(len(row), len(clip) / self.sample_rate) for row, clip in zip(rows, clips)]
            longest = max(counts, default=0)  # the timestamps' count
            # The width of a frame embedding (the clip embedding's, unless frequency bands are kept
            # apart there: frames average them), also for no input, so that results concatenate.
            if rows:
                dim = rows[0].shape[-1]
            else:
                dim = self.net.embed(torch.zeros(1, self.config.clip_samples or 1, device=self.device), level="frame").shape[-1]
            return nan_padded([row[:count] for row, count in zip(rows, counts)], dim), self.net.frame_times(longest), np.array(counts, dtype=np.int64)

    # ---------------------------------------------------------- adapting to new recordings

    def adapt(self, inputs: Any, *, sample_rate: int | None = None, window: float | None = None, hop: float | None = None,
              batch_size: int = 64, num_workers: int = 2, on_failure: Callable[[Failure], None] | None = None) -> Adaptation:
        """Re-measure the network's batch-norm statistics on unlabelled ``inputs``, in place.

        Each layer's channels are normalised with means and variances measured on the
        training data; recordings from another microphone, room or voice reach every layer
        shifted. Measuring them again on recordings of the new conditions (AdaBN, Li et al.
        2016) moves the network to those conditions; the weights stay as they are. The
        inputs should hold the classes about as the recordings to classify will: the
        statistics of one class alone describe that class, not the conditions.

        inputs : as for :meth:`predict`; windows are cut as it cuts them, and windows of
            digital silence are left out. They run in batches of ``batch_size`` (at least 2,
            so that a batch has a spread), each layer normalising a batch by its own statistics
            as in training; a layer's new mean and variance are those of every window it saw,
            pooled. What a deeper layer sees still depends on the batches the layers before it
            normalised: on FSDD, another order or batch size moved a channel's variance by up
            to 6 % (and not the accuracy).
        on_failure : called with each input skipped, as it is skipped (a long file that fails
            part-way keeps the windows read before); without it, each is a warning. The result
            lists them too.
        Raises ParameterError for a model without batch norm, DataError (the model
        unchanged) when fewer than 2 windows are left.
        """
        check_int("batch_size", batch_size, minimum=1)
        check_int("num_workers", num_workers, minimum=0)
        norms = self._batch_norms()
        window_n, hop_n = self._window_sizes(window, hop)
        batches = _AdaptationBatches(self._forward, size=max(2, self._windows_per_batch(batch_size, window_n)))
        report = on_failure if on_failure is not None else _warn_skipping
        seen, inputs_heard, failures = 0, 0, []
        with _restored_on_error(self.net), _pooling_moments(norms) as pooled:
            for seen, item in enumerate(self._items(inputs, sample_rate, window_n, hop_n, num_workers=num_workers), start=1):
                _say(item._messages)
                if isinstance(item, Failure):
                    heard, failure = 0, item
                else:
                    heard, failure = self._feed(item, batches, window_n, hop_n)
                if failure is not None:
                    failures.append(failure)
                    report(failure)
                inputs_heard += heard > 0
            self._check_enough_to_adapt(batches.windows_added, seen=seen, failed=len(failures))
            batches.run_rest()
            for norm, moments in pooled.items():
                moments.set_running_stats(norm)
        result = Adaptation(inputs=inputs_heard, windows=batches.windows_run, failures=failures)
        self._warn_if_few(result.windows)
        self._record_adaptation(result)
        return result

    def _batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """The network's batch-norm layers, whose statistics adapting measures; a ParameterError
        when it has none."""
        norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise ParameterError(f"{self.name}: has no batch-norm layers, so there are no statistics to adapt")
        return norms

    def _feed(self, item: _Item, batches: _AdaptationBatches, window_n: int, hop_n: int) -> tuple[int, Failure | None]:
        """Hand ``batches`` an input's windows of ``window_n`` samples every ``hop_n``, the silent
        ones left out: ``(how many it heard, the Failure of a long file damaged part-way, or None)``.
        The windows read before such a failure still count."""
        self._warn_before_adapting_to(item)
        heard = 0
        try:
            for rows in self._heard_windows(item, window_n, hop_n, batches.size):
                batches.add(rows)
                heard += len(rows)
        except SpecnetError as exc:  # a long file damaged part-way
            return heard, Failure(item.path, str(exc), type(exc))
        return heard, None

    def _warn_before_adapting_to(self, item: _Item) -> None:
        """What adapting says about an input decoded whole: shorter than one FFT frame (unless it
        is silent: left out whatever its length), silent, or nearly."""
        if item.peak is None:  # an image, or a long file (streamed: its level is not known yet)
            return
        name = _name(item)
        if not item.silent.all():
            self._warn_if_shorter_than_a_frame(item.windows.num_samples, name,
                                               meaning="what it adds to the statistics is mostly padding")
        warn_about_level(item.peak, name, gaps=item.windows.leave_gaps(), silent="left out, with nothing to adapt to",
                         quiet="what it adds to the statistics is mostly noise")

    def _check_enough_to_adapt(self, windows: int, *, seen: int, failed: int) -> None:
        """Refuse to adapt to fewer than 2 ``windows`` (or images), a spread's least, saying why
        the ``seen`` inputs, ``failed`` of them skipped, gave so few."""
        if windows >= 2:
            return
        if failed == seen:
            raise DataError("no input to adapt to" if not seen else
                            f"nothing to adapt to: {'the input' if seen == 1 else f'all {seen} inputs'} failed")
        if self.input_kind == "image":
            raise DataError(f"too little to adapt to: {counted(windows, 'image')}, and a spread needs 2 "
                            "(failed inputs are left out)")
        raise DataError(f"too little to adapt to: {counted(windows, 'window')} of sound in {counted(seen, 'input')}, "
                        "and a spread needs 2 (failed inputs and silence are left out)")

    def _warn_if_few(self, windows: int) -> None:
        """Warn when the statistics come from fewer than FEW_WINDOWS ``windows`` (or images): they are noisy."""
        if windows < FEW_WINDOWS:
            unit = "images" if self.input_kind == "image" else "windows"
            log.warning("adapted to %d %s: statistics from fewer than %d are noisy", windows, unit, FEW_WINDOWS)

    def _record_adaptation(self, result: Adaptation) -> None:
        """Note in the model's spec (``extra["adapted"]``) what it was adapted to, and from which
        model: adapting again keeps the first model's name."""
        first = (self.net.spec.extra.get("adapted") or {}).get("from") or Path(self.name).name
        self.net.spec = self.net.spec.with_extra(adapted={"inputs": result.inputs, "windows": result.windows, "from": first})

    def _heard_windows(self, item: _Item, window_n: int, hop_n: int, batch_size: int) -> Iterator[np.ndarray | torch.Tensor]:
        """An input's windows without the silent ones, in pieces: ``batch_size`` windows at a time,
        a long file's block by block."""
        if isinstance(item.windows, torch.Tensor):  # an image
            yield item.windows
            return
        if item.windows is not None:
            for first, rows in item.windows.chunks(batch_size):
                heard = rows[~item.silent[first : first + len(rows)]]
                if len(heard):
                    yield heard
            return
        for block in self._blocks(item.path, window_n, hop_n):
            if not is_silence(loudest_sample(block.samples)):
                yield block.samples[None]

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model (an adapted one, say) to a ``.safetensors`` model file, atomically;
        refuses an existing one unless ``overwrite``."""
        check_output_path(path, overwrite=overwrite, suffix=".safetensors", holds="model files")
        return save_model_file(self.net, path, overwrite=overwrite)


@dataclass
class Adaptation:
    """What :meth:`Model.adapt` measured on: inputs with a window heard, windows run, inputs skipped."""

    inputs: int
    windows: int
    failures: list[Failure]


class _HeldMessages(logging.Filter):
    """Holds back what specnet logs in one thread while it decodes an input, for the input's
    user to say beside its result (:func:`_say`): decoding runs ahead of the results (in
    worker threads, or a batch before the network runs), and a warning about a file (a
    truncated WAV, say) belongs in input order, next to what the file gave."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def run(self, decode: Callable[..., _Item], *args: Any) -> _Item:
        """``decode(*args)``, with what it logged in the item's ``_messages``; an input that
        fails raises a SpecnetError holding them as ``held_messages``, for its Failure."""
        self._local.held = held = []
        try:
            item = decode(*args)
        except SpecnetError as exc:
            exc.held_messages = held
            raise
        except BaseException:  # not an input's failure but specnet's: say everything now
            _say(held)
            raise
        finally:
            self._local.held = None
        item._messages = held
        return item

    def filter(self, record: logging.LogRecord) -> bool:
        held = getattr(self._local, "held", None)
        if held is None:
            return True
        held.append(record)
        return False


_HELD = _HeldMessages()
# The decoders log to "specnet". First among its filters, so a user's own filters see each
# record once, when _say hands it on, however early they were added.
log.filters.insert(0, _HELD)


def _say(records: list[logging.LogRecord]) -> None:
    """Log ``records`` held back by :class:`_HeldMessages` now, as they were logged."""
    for record in records:
        logging.getLogger(record.name).handle(record)


def _taken(entry: Any) -> Any:
    """An input given in memory as the caller holds it now: a copy of an array, a tensor, a list
    or tuple of samples, or a Pillow image (anything else is refused later, as it is)."""
    if isinstance(entry, torch.Tensor):
        return entry.clone()
    if isinstance(entry, np.ndarray):
        return entry.copy()
    if isinstance(entry, (list, tuple)):
        try:
            return np.array(entry)
        except ValueError:  # ragged: refused with the other checks, as this input's failure
            return entry
    return entry.copy() if is_pil_image(entry) else entry


def nan_padded(frames: list[np.ndarray], dim: int) -> np.ndarray:
    """Clips' frame embeddings ``(count_i, dim)`` as one float32 array ``(clips, most frames, dim)``,
    each row ending in NaN after its own frames."""
    rows = np.full((len(frames), max(map(len, frames), default=0), dim), np.nan, dtype=np.float32)
    for row, clip_frames in zip(rows, frames):
        row[: len(clip_frames)] = clip_frames
    return rows


class _PooledMoments:
    """Each channel's mean and variance over every batch a batch-norm layer is given, pooled
    (Chan et al.'s parallel update: per batch in the input's precision, combined in float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None  # the sum of squared differences from the mean

    def add(self, batch: torch.Tensor) -> None:
        """Take in a layer's input ``(B, C, ...)``: its C channels' values."""
        dims = [d for d in range(batch.dim()) if d != 1]
        var, mean = torch.var_mean(batch.float(), dim=dims, correction=0)
        n = batch.numel() // batch.shape[1]
        var, mean = var.double(), mean.double()
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, var * n
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta.square() * (self.count * n / total)
        self.count = total

    def set_running_stats(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        """Give ``norm`` these statistics as its running ones (the variance unbiased, as batch norm
        keeps it); a layer no batch reached keeps its own."""
        if self.mean is None:
            return
        norm.running_mean.copy_(self.mean)
        norm.running_var.copy_(self.m2 / max(1, self.count - 1))


class _WindowQueue:
    """Inputs' windows queued across inputs, in input order, and run a given number at a time
    through ``submit`` (windows ``(n, samples)`` or images ``(1, C, H, W)`` -> a Future of outputs
    ``(n, K or D)``; ``here=True``: run in this thread), with up to ``in_flight`` batches running
    while the caller goes on; an input's ``outputs`` are set once its last window has run, in
    input order."""

    def __init__(self, submit: Callable[..., Future], *, in_flight: int = 0) -> None:
        self.waiting = 0  # windows queued and not yet run
        self._submit = submit
        self._in_flight = in_flight
        self._queue: deque[list] = deque()  # [item, first window not yet run], in input order
        self._running: deque[tuple[list, Future]] = deque()  # (windows taken, their outputs to come), in order
        self._head_outputs: list[torch.Tensor] = []  # outputs so far of the queue's first item, run in part

    def add(self, item: _Item) -> None:
        """Queue all of ``item``'s windows."""
        self._queue.append([item, 0])
        self.waiting += len(item.windows)

    def run(self, count: int, *, here: bool = False) -> None:
        """Run the first ``count`` queued windows as one batch (in this thread with ``here``), waiting
        for the oldest batches while more than ``in_flight`` run; completes the items the batches
        waited for finish."""
        taken = self._take(count)
        self._running.append((taken, self._submit(_joined([windows for _, windows, _ in taken]), here=here)))
        while len(self._running) > self._in_flight:
            self._hand_out_oldest()

    def run_all(self) -> None:
        """Run every queued window, as one batch, and wait for every batch; the batch runs in this
        thread when no other is running (nothing is left to overlap it with)."""
        if self.waiting:
            self.run(self.waiting, here=not self._running)
        while self._running:
            self._hand_out_oldest()

    def hand_out_next_finished(self) -> bool:
        """Complete the items of the oldest batch running if it has finished (without waiting):
        whether it had; raises what the batch raised."""
        if not (self._running and self._running[0][1].done()):
            return False
        self._hand_out_oldest()
        return True

    def _hand_out_oldest(self) -> None:
        taken, outputs = self._running.popleft()
        self._hand_out(taken, outputs.result())

    def _take(self, count: int) -> list[tuple[_Item, np.ndarray | torch.Tensor, bool]]:
        """The first ``count`` queued windows as ``(item, its windows taken, whether they are its
        last)``, in order; the queue moves past them."""
        self.waiting -= count
        taken = []
        while count:
            entry = self._queue[0]
            item, first = entry
            last = min(len(item.windows), first + count)
            taken.append((item, item.windows[first:last], last == len(item.windows)))
            count -= last - first
            entry[1] = last
            if last == len(item.windows):
                self._queue.popleft()
        return taken

    def _hand_out(self, taken: list[tuple[_Item, np.ndarray | torch.Tensor, bool]], outputs: torch.Tensor) -> None:
        """Give each item in ``taken`` its rows of ``outputs``; an item whose last window has run gets
        all its outputs, those of earlier batches first (batches are handed out in order)."""
        offset = 0
        for item, windows, ends_item in taken:
            self._head_outputs.append(outputs[offset : offset + len(windows)])
            offset += len(windows)
            if ends_item:
                item.outputs = self._head_outputs[0] if len(self._head_outputs) == 1 else torch.cat(self._head_outputs)
                self._head_outputs.clear()


def _done(pending: deque[_Item | Failure]) -> Iterator[_Item | Failure]:
    """Pop the head of ``pending`` while it is done: a failure, a long file (which its user
    streams), or an input whose windows have all run."""
    while pending and not (isinstance(pending[0], _Item) and pending[0].windows is not None and pending[0].outputs is None):
        yield pending.popleft()


class _AdaptationBatches:
    """Windows handed in pieces, run through ``run`` ``size`` at a time in the order given, and
    never as a batch of one: batch norm in training mode needs a spread in every batch."""

    def __init__(self, run: Callable[[np.ndarray | torch.Tensor], Any], *, size: int) -> None:
        self.size = size
        self.windows_run = 0
        self._run = run
        self._pending: list[np.ndarray | torch.Tensor] = []  # windows (n, samples) or images (1, C, H, W) not yet run
        self._pending_count = 0

    @property
    def windows_added(self) -> int:
        """Every window (or image) handed in so far, run or not."""
        return self.windows_run + self._pending_count

    def add(self, rows: np.ndarray | torch.Tensor) -> None:
        """Take windows ``(n, samples)`` or an image ``(1, C, H, W)``; run full batches while a
        full one is left for the end (what :meth:`run_rest` needs to avoid a batch of one)."""
        self._pending.append(rows)
        self._pending_count += len(rows)
        while self._pending_count >= 2 * self.size:
            self._run_first(self.size)

    def run_rest(self) -> None:
        """Run what is left (fewer than 2 full batches): as one batch, unless a full batch leaves
        at least 2 for a second."""
        if self._pending_count - self.size >= 2:
            self._run_first(self.size)
        if self._pending_count:
            self._run_first(self._pending_count)

    def _run_first(self, count: int) -> None:
        """Run the first ``count`` windows waiting, as one batch."""
        rows = _joined(self._pending)
        self._run(rows[:count])
        self._pending = [rows[count:]]
        self._pending_count -= count
        self.windows_run += count


@contextmanager
def _restored_on_error(net: nn.Module) -> Iterator[None]:
    """Put ``net``'s weights and buffers back as they were when the block raises (Ctrl-C too)."""
    before = {name: value.clone() for name, value in net.state_dict().items()}
    try:
        yield
    except BaseException:
        net.load_state_dict(before)
        raise


@contextmanager
def _pooling_moments(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[dict[nn.modules.batchnorm._BatchNorm, _PooledMoments]]:
    """Within the block, batch-norm layers ``norms`` in training mode (each batch normalised by
    its own statistics, as in training), the moments of every batch each one is given pooled
    in the :class:`_PooledMoments` yielded; after it, unhooked and in eval mode."""
    pooled = {m: _PooledMoments() for m in norms}
    hooks = [m.register_forward_pre_hook(lambda m, inputs: pooled[m].add(inputs[0])) for m in norms]
    try:
        for m in norms:
            m.train()
        yield pooled
    finally:
        for hook in hooks:
            hook.remove()
        for m in norms:
            m.eval()


def _warn_skipping(failure: Failure) -> None:
    """What adapting says of an input it skips when the caller gives no ``on_failure``."""
    log.warning("skipping %s", failure.message)


def _joined(rows: list[np.ndarray] | list[torch.Tensor]) -> np.ndarray | torch.Tensor:
    """Windows ``(n_i, samples)`` (or images ``(n_i, C, H, W)``) as one batch ``(sum n_i, ...)``."""
    return np.concatenate(rows) if isinstance(rows[0], np.ndarray) else torch.cat(rows)


class _GrowingRows:
    """Rows ``(n, ...)`` added a batch at a time to one array that doubles when full.

    A long file's per-window outputs, starts and peaks, kept this way rather than as an
    array or list items per batch: with the C allocator as ``specnet`` sets it up
    (``cli._keep_freed_memory``), each small block kept between batches split the freed
    memory the next batch's layers would reuse, and the heap grew by 150-460 MB over a
    3-hour file (benchmarks/README.md, change 16).
    """

    def __init__(self) -> None:
        self._rows: np.ndarray | None = None  # (capacity, ...), the first `count` rows filled
        self.count = 0

    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` ``(b, ...)``, the array grown to twice what it holds when they do not fit."""
        needed = self.count + len(rows)
        if self._rows is None or needed > len(self._rows):
            grown = np.empty((max(needed, 2 * self.count), *rows.shape[1:]), rows.dtype)
            if self.count:
                grown[: self.count] = self.rows()
            self._rows = grown
        self._rows[self.count : needed] = rows
        self.count = needed

    def rows(self) -> np.ndarray:
        """The rows added so far ``(count, ...)``, a view of the array that holds them."""
        return self._rows[: self.count]


class _InlineExecutor:
    """Runs each job at once, in the calling thread, behind ThreadPoolExecutor's interface."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # handed on like a worker's exception, by .result()
            future.set_exception(exc)
        return future

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        return None  # every job ran when it was submitted


def _name(item: _Item) -> str:
    """How messages name an input: its file, or its place among arrays."""
    return display_name(item.path) if item.path is not None else f"input {item.index}"


def _samples_held(item: _Item | Failure) -> int:
    """Samples a decoded input holds: its clip's, or none for an image, a file streamed later or a failure."""
    return item.windows.num_samples if isinstance(item, _Item) and isinstance(item.windows, Windows) else 0


class _Lookahead:
    """The samples that the queued ``(index, path, future)`` inputs of :meth:`Model._items` hold.

    Inputs are counted once, in queue order, as they finish decoding: each decoded one its own
    samples; each from the first one still decoding on, ``guess`` (the last input handed on's,
    at first as long as a file decoded whole may be), a cautious count. O(1) per input.
    """

    def __init__(self, guess: int) -> None:
        self.guess = guess
        self.counted = 0  # the first `counted` queued inputs are decoded and in `held`
        self.held = 0

    def samples(self, pending: deque[tuple[int, str | None, Future]]) -> int:
        while self.counted < len(pending) and (future := pending[self.counted][2]).done():
            self.held += 0 if future.exception() else _samples_held(future.result())
            self.counted += 1
        return self.held + (len(pending) - self.counted) * self.guess

    def handed_on(self, item: _Item | Failure) -> None:
        """The first queued input, ``item``, left the queue."""
        held = _samples_held(item)
        if self.counted:
            self.counted -= 1
            self.held -= held
        if isinstance(item, _Item):
            self.guess = held


def _resolve(entry: tuple[int, str | None, Future]) -> _Item | Failure:
    """The decoded input a queued ``(index, path, future)`` holds, or its :class:`Failure`."""
    index, path, future = entry
    try:
        return future.result()
    except SpecnetError as exc:
        failure = Failure(path or f"input {index}", str(exc), type(exc))
        failure._messages = getattr(exc, "held_messages", [])
        return failure


def _raise_first_failure(results: list) -> list:
    for result in results:
        if isinstance(result, Failure):
            # Same class as the original error, so `except ParameterError` (a ValueError) still works.
            raise result.error(result.message)
    return results


def _input_path(entry: Any) -> str | None:
    """The path an input names, or None for samples (arrays, tensors)."""
    return os.fsdecode(entry) if isinstance(entry, (str, bytes, os.PathLike)) else None


def _as_entries(inputs: Any, *, kind: str) -> Iterable[Any]:
    """Single inputs (paths, arrays or tensors) from whatever the user passed: one of them,
    a batch array, or any iterable of them but a dict or set (a generator is read as it is used)."""
    if isinstance(inputs, (str, bytes, os.PathLike)) or is_pil_image(inputs):
        return [inputs]
    if isinstance(inputs, np.ndarray) and (inputs.dtype.kind in "US" or (
            inputs.dtype.kind == "O" and inputs.size and all(isinstance(p, (str, bytes, os.PathLike)) for p in inputs.flat))):
        return [os.fsdecode(p) for p in inputs.reshape(-1).tolist()]  # an array of paths (str, bytes or Path)
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        single_dims = 1 if kind == "audio" else 3
        if inputs.ndim == single_dims:
            return [inputs]
        if kind == "audio" and inputs.ndim == 2 and inputs.shape[1] <= MAX_CHANNELS < inputs.shape[0]:
            raise ParameterError(
                f"samples of shape {tuple(inputs.shape)} look like (time, channels), as soundfile.read gives "
                "them: pass y.mean(axis=1) for mono; a batch of clips is (clips, time)"
            )
        if inputs.ndim == single_dims + 1:
            return list(inputs)
        hint = "; a grey image is (1, height, width): pixels[None]" if kind == "image" and inputs.ndim == 2 else ""
        raise ParameterError(f"expected {single_dims}-D input or a batch of them, got shape {tuple(inputs.shape)}{hint}")
    if isinstance(inputs, (dict, set, frozenset)):  # read as its keys, or in no set order
        what = "samples" if kind == "audio" else "pixels"
        hint = "list(inputs.values()) for its values" if isinstance(inputs, dict) else "sorted(inputs) for an order"
        raise ParameterError(f"expected a path, an array of {what} or a list of them, got a {type(inputs).__name__}: pass {hint}")
    if isinstance(inputs, Iterable):
        return inputs
    raise ParameterError(f"cannot use an input of type {type(inputs).__name__}")


def load_model(path: str | bytes | os.PathLike | None = None, *, device: str | torch.device = "auto") -> Model:
    """Load a model file or a bundled model by name (None: the default, ``esc10``) onto
    ``device``: ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"`` or a ``torch.device``."""
    name, file = resolve_model(path)
    if not file.exists():
        raise ModelFileError(f"{file}: model file not found")
    target = resolve_device(device)  # a device this machine lacks is said before the file is read
    return Model(load_model_file(file), name=name, device=target)


def model_metadata(path: str | os.PathLike | None) -> dict[str, Any]:
    """The metadata document of a model file or bundled model, without loading weights."""
    return read_metadata(resolve_model(path)[1])
