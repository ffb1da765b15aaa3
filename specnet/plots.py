"""The pictures: training curves, confusion matrices, spectrograms — one family look."""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ParameterError
from .fileio import atomic_write, check_output_path, output_path
from .paths import display_name, one_line

FIGURE_DPI = 120
COLORMAP = "magma"
ACCENT = ("#3b4cc0", "#d1495b")  # train, validation

log = logging.getLogger("specnet")


#: The family look, applied only while specnet draws (a notebook's own settings stay as they are).
STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


#: Fonts that draw what matplotlib's own (DejaVu Sans) lacks, above all Chinese, Japanese and
#: Korean; those installed follow it, in this order, for names in other scripts.
FALLBACK_FONTS = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Hiragino Sans", "PingFang SC",
    "Apple SD Gothic Neo", "Microsoft YaHei", "Yu Gothic", "Malgun Gothic", "Arial Unicode MS",
    "Noto Sans", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai",
)


#: One drawing at a time: rc_context restores the settings it found, so two drawings
#: overlapping in threads (a training's curves beside an evaluation) would leave the style set.
_DRAWING = threading.Lock()
#: The drawing in progress: the fonts it draws with (``FT2Font``), and the characters of its names
#: that none of them has (drawn as ``\\uXXXX``).
_drawing_fonts: list[Any] = []
_undrawable: set[str] = set()


def _styled(draw: Callable[..., Path]) -> Callable[..., Path]:
    """``draw`` run with :data:`STYLE` in matplotlib's settings, and the installed
    :data:`FALLBACK_FONTS` after the caller's own fonts, restored afterwards; one warning names
    the characters of names that none of those fonts has."""

    @functools.wraps(draw)
    def styled(*args: Any, **kwargs: Any) -> Path:
        import matplotlib

        with _DRAWING:
            families = _families()
            with matplotlib.rc_context({**STYLE, "font.family": families}):
                _drawing_fonts[:] = _fonts(families)
                _undrawable.clear()
                written = draw(*args, **kwargs)
            if _undrawable:
                chars = sorted(_undrawable)
                log.warning("%s: %s %s of the names %s in none of the fonts drawn with (matplotlib's own and "
                            "installed fallbacks such as Noto Sans CJK), so %s drawn as \\uXXXX codes",
                            display_name(written), "the character" if len(chars) == 1 else "the characters",
                            one_line(" ".join(chars[:12])) + (" ..." if len(chars) > 12 else ""),
                            "is" if len(chars) == 1 else "are", "it is" if len(chars) == 1 else "they are")
            return written

    return styled


def _families() -> list[str]:
    """matplotlib's ``font.family`` as the caller has it, then the installed :data:`FALLBACK_FONTS`
    it lacks: matplotlib draws a character with the first of these families that has it."""
    import matplotlib
    from matplotlib import font_manager

    own = matplotlib.rcParams["font.family"]
    own = [own] if isinstance(own, str) else list(own)
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return own + [name for name in FALLBACK_FONTS if name in installed and name not in own]


def _fonts(families: list[str]) -> list[Any]:
    """The font (``FT2Font``) matplotlib takes for each of ``families`` that it finds (a generic
    family such as ``sans-serif`` is the first installed font of its list)."""
    from matplotlib import font_manager

    fonts = []
    for family in families:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False)
        except ValueError:  # not installed: matplotlib skips it too
            continue
        fonts.append(font_manager.get_font(path))
    return fonts


def _drawable(char: str) -> bool:
    """Whether a font of the drawing in progress has a glyph for ``char`` (a space counts as drawn)."""
    return char.isspace() or any(font.get_char_index(ord(char)) for font in _drawing_fonts)


def _figure(path: str | os.PathLike, *, overwrite: bool, figsize: tuple[float, float]) -> Any:
    """A new matplotlib Figure for a picture at ``path``, once ``path`` is known to be writable
    (format, folder, an existing file) so that a refusal comes before the drawing. The figure is
    not pyplot's: no backend is chosen, and nothing is left in pyplot's list of open figures."""
    picture_format(path)
    check_output_path(path, overwrite=overwrite)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


PICTURE_FORMATS = ("png", "jpg", "jpeg", "svg", "pdf")
MIN_SPAN_DB = 20.0  # the least a spectrogram's colour bar spans
#: Most time columns a spectrogram picture draws (its widest figure is 14 inches, 1,680 pixels at
#: FIGURE_DPI): a longer one is averaged over time down to at most this many, as drawing it would
#: smooth it anyway, so that drawing an hour-long file does not take gigabytes.
MAX_PICTURE_COLUMNS = 4096


def picture_format(path: str | bytes | os.PathLike) -> str:
    """The format a picture at ``path`` is written in: its suffix, one of :data:`PICTURE_FORMATS`
    (PNG for a name without one). Any other suffix is a ParameterError, raised before any work."""
    suffix = output_path(path).suffix.lower().lstrip(".")
    if suffix and suffix not in PICTURE_FORMATS:
        raise ParameterError(f"{display_name(path)}: .{suffix} is not a picture format specnet writes ({', '.join(PICTURE_FORMATS)})")
    return suffix or "png"


def _save(fig: Any, path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Write ``fig`` atomically, in the format :func:`picture_format` gives."""
    fmt = picture_format(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=FIGURE_DPI, bbox_inches="tight")
    return atomic_write(path, buffer.getvalue(), overwrite=overwrite)


def _drawn(name: str) -> str:
    """A file or folder name as a picture shows it: as :func:`~specnet.paths.display_name` does
    (bytes that are not UTF-8 as ``\\xNN``, control characters escaped), ``$`` as itself, not the
    start of matplotlib's maths markup, and a character no installed font has as its ``\\uXXXX``
    code, so that two such names still differ (matplotlib would draw the same empty boxes and warn)."""
    shown = display_name(name).replace("$", r"\$")
    if shown.isascii():
        return shown
    missing = {c for c in shown if not _drawable(c)}
    _undrawable.update(missing)
    return "".join(c.encode("unicode_escape").decode("ascii") if c in missing else c for c in shown)


@_styled
def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Loss and validation accuracy per epoch (rows of ``metrics.jsonl``) as a picture
    (:func:`picture_format`)."""
    fig = _figure(path, overwrite=True, figsize=(9, 3.4))  # the run's own picture: the run folder guards what was there
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] + 1 for row in history]
    train_loss = [math.nan if r["train_loss"] is None else r["train_loss"] for r in history]  # None: every step skipped
    ax_loss.plot(epochs, train_loss, color=ACCENT[0], label="train")
    validated = all("val_loss" in r for r in history)
    if validated:
        ax_loss.plot(epochs, [r["val_loss"] for r in history], color=ACCENT[1], label="validation")
        ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in history], color=ACCENT[1], label="accuracy")
        ax_acc.plot(epochs, [100 * r["val_macro_f1"] for r in history], color=ACCENT[1], linestyle="--", label="macro-F1")
        ax_acc.legend(frameon=False)
    else:
        ax_acc.text(0.5, 0.5, "trained without validation", ha="center", va="center", transform=ax_acc.transAxes)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_loss.legend(frameon=False)
    ax_acc.set(xlabel="epoch", ylabel="%", title="validation")
    if title:
        fig.suptitle(_drawn(title))
    return _save(fig, path, overwrite=True)


@_styled
def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike, *, title: str = "", overwrite: bool = False) -> Path:
    """A (K, K) confusion matrix (rows true, columns predicted) with counts, as a picture
    (:func:`picture_format`); an existing ``path`` is kept unless ``overwrite``.

    ``confusion`` may be any array-like, such as the nested lists of a ``metrics.json``."""
    confusion = np.asarray(confusion)
    k = len(classes)
    if confusion.shape != (k, k):
        raise ParameterError(f"a confusion matrix of shape {confusion.shape} does not fit {k} classes (it needs ({k}, {k}))")
    if not (np.issubdtype(confusion.dtype, np.number) and np.all(np.isfinite(confusion))
            and np.all(confusion >= 0) and np.all(confusion == np.round(confusion))):
        raise ParameterError("a confusion matrix holds counts: whole numbers >= 0")
    size = max(4.0, 0.5 * k + 2)
    fig = _figure(path, overwrite=overwrite, figsize=(size + 1, size))
    ax = fig.subplots()
    row_sums = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, row_sums, out=np.zeros_like(confusion, dtype=float), where=row_sums > 0)
    image = ax.imshow(share, cmap=COLORMAP, vmin=0, vmax=1)
    labels = [_drawn(name) for name in classes]
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted", ylabel="true", title=_drawn(title) if title else "confusion matrix")
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                        color="black" if share[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return _save(fig, path, overwrite=overwrite)


@_styled
def plot_spectrogram(
    logmel: np.ndarray,
    path: str | os.PathLike,
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float,
    f_max: float,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """A log-mel spectrogram (n_mels, frames) in dB as a picture: time in s, mel axis labelled in Hz.
    Over :data:`MAX_PICTURE_COLUMNS` frames, each drawn column is the mean of its frames' dB.

    The colours span the picture's own range, at most 80 dB below its peak and at
    least MIN_SPAN_DB (widened below the peak), so a spectrogram floored by ``top_db``
    uses the whole colour map and the top of the colour bar is its loudest cell.
    The format follows ``path``'s suffix (:func:`picture_format`)."""
    import librosa
    from matplotlib.ticker import MaxNLocator

    n_mels, frames = logmel.shape
    seconds = frames * hop_length / sample_rate
    peak = float(logmel.max())
    low = max(float(logmel.min()), peak - 80)  # of every frame: the colour bar spans the spectrogram's range
    if frames > MAX_PICTURE_COLUMNS:
        starts = np.arange(0, frames, -(-frames // MAX_PICTURE_COLUMNS))  # each drawn column's first frame
        logmel = np.add.reduceat(logmel, starts, axis=1) / np.diff(starts, append=frames)
    # A narrow range is widened below its peak (the top colour stays the loudest cell); a flat
    # picture (silence) is drawn dark.
    vmin, vmax = (low, low + MIN_SPAN_DB) if low == peak else (min(low, peak - MIN_SPAN_DB), peak)
    fig = _figure(path, overwrite=overwrite, figsize=(min(14.0, 3 + 1.2 * seconds), 3.6))
    ax = fig.subplots()
    image = ax.imshow(logmel, origin="lower", aspect="auto", cmap=COLORMAP, extent=(0, seconds, 0, n_mels), vmin=vmin, vmax=vmax)
    # Band i's triangle peaks at the (i + 1)-th of n_mels + 2 points equally spaced in (Slaney) mel.
    centres = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=f_min, fmax=f_max)[1:-1]
    ticks = np.linspace(0, n_mels - 1, 6).round().astype(int)
    ax.set_yticks(ticks + 0.5, [f"{centres[t]:.0f}" for t in ticks])
    ax.set(xlabel="time (s)", ylabel="frequency (Hz, mel scale)", title=_drawn(title))
    fig.colorbar(image, ax=ax, format="%+.0f dB", pad=0.01, ticks=MaxNLocator(integer=True))  # whole dB: no tick rounded
    return _save(fig, path, overwrite=overwrite)
