"""Tests for specnet/plots.py: what the pictures say, not how they look."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from specnet import plots


def test_spectrogram_frequency_ticks_name_the_band_centres(tmp_path, monkeypatch):
    # Each tick labels a band; its number must be the frequency where that band's filter peaks.
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, overwrite=True: figures.append(fig))
    n_mels, f_min, f_max, rate = 64, 50.0, 8000.0, 16000
    plots.plot_spectrogram(np.zeros((n_mels, 100)), tmp_path / "s.png", sample_rate=rate, hop_length=160,
                           f_min=f_min, f_max=f_max)
    ax = figures[0].axes[0]
    bands = (ax.get_yticks() - 0.5).round().astype(int)
    labels = [float(t.get_text()) for t in ax.get_yticklabels()]
    assert bands[0] == 0 and bands[-1] == n_mels - 1

    n_fft = 8192  # a fine grid, so each filter's peak is found to within 2 Hz
    filters = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, rate, norm="slaney", mel_scale="slaney")
    peaks = torch.linspace(0, rate / 2, n_fft // 2 + 1)[filters.argmax(0)].numpy()
    np.testing.assert_allclose(labels, peaks[bands], atol=2.0)
    assert labels[0] == pytest.approx(96, abs=1) and labels[-1] == pytest.approx(7632, abs=1)


@pytest.mark.parametrize(
    ("low", "peak", "colours"),
    [(-60.0, 0.0, (-60.0, 0.0)),  # a floored spectrogram: its own range
     (-200.0, 0.0, (-80.0, 0.0)),  # at most 80 dB below the peak
     (-5.0, 0.0, (-20.0, 0.0)),  # a narrow range widened below the peak: the top colour is the loudest cell
     (0.0, 0.0, (0.0, 20.0))],  # a flat picture (silence) drawn dark
)
def test_spectrogram_colours_span_its_range_with_the_peak_on_top(tmp_path, monkeypatch, low, peak, colours):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, overwrite=True: figures.append(fig))
    logmel = np.linspace(low, peak, 8 * 10).reshape(8, 10)
    plots.plot_spectrogram(logmel, tmp_path / "s.png", sample_rate=8000, hop_length=80, f_min=0.0, f_max=4000.0)
    image = figures[0].axes[0].images[0]
    assert image.get_clim() == colours
    bar = figures[0].axes[1]
    ticks = [t for t in bar.get_yticks() if colours[0] <= t <= colours[1]]
    assert ticks and all(t == round(t) for t in ticks)  # whole dB, so "%+.0f dB" rounds none


def test_a_long_spectrogram_is_drawn_as_column_means_over_its_whole_time_and_range(tmp_path, monkeypatch):
    # An hour is 360,000 frames: drawn whole it took gigabytes, and the picture has ~1,700 pixel columns.
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, overwrite=True: figures.append(fig))
    monkeypatch.setattr(plots, "MAX_PICTURE_COLUMNS", 4)
    logmel = np.tile(np.array([-60.0, 0.0, -30.0, -10.0, -20.0, -40.0, -50.0, 0.0, -5.0, -35.0, -45.0]), (3, 1))
    plots.plot_spectrogram(logmel, tmp_path / "s.png", sample_rate=8000, hop_length=80, f_min=0.0, f_max=4000.0)
    image = figures[0].axes[0].images[0]
    # 11 frames in columns of 3, the last of 2; the colours span every frame's range, not the means'.
    np.testing.assert_allclose(image.get_array()[0], [-30.0, -70 / 3, -55 / 3, -40.0])
    assert image.get_clim() == (-60.0, 0.0) and image.get_extent() == [0.0, 11 * 80 / 8000, 0.0, 3.0]


def test_a_picture_suffix_names_its_format_and_others_are_refused(tmp_path):
    from specnet.errors import ParameterError

    assert [plots.picture_format(f"a.{s}") for s in ("png", "JPG", "svg", "pdf")] == ["png", "jpg", "svg", "pdf"]
    assert plots.picture_format(tmp_path / "no_suffix") == "png"
    with pytest.raises(ParameterError, match=r"a\.gif: \.gif is not a picture format specnet writes \(png, jpg"):
        plots.plot_spectrogram(np.zeros((8, 10)), tmp_path / "a.gif", sample_rate=8000, hop_length=80, f_min=0.0, f_max=4000.0)
    assert not (tmp_path / "a.gif").exists()
    plots.plot_confusion(np.eye(2, dtype=int), ["a", "b"], tmp_path / "m.pdf")
    assert (tmp_path / "m.pdf").read_bytes().startswith(b"%PDF")


def test_plot_confusion_is_public_and_keeps_existing_files(tmp_path):
    import specnet
    from specnet.errors import SpecnetError

    path = tmp_path / "folds.png"
    specnet.plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], path, title="two folds")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SpecnetError, match="already exists"):  # kept unless overwrite=True
        specnet.plot_confusion(np.eye(2, dtype=int), ["a", "b"], path)
    before = path.read_bytes()
    specnet.plot_confusion(np.eye(2, dtype=int), ["a", "b"], path, overwrite=True)
    assert path.read_bytes() != before
    # The matrix as metrics.json holds it (nested lists), summed over folds as README shows.
    folds = [json.loads(json.dumps({"confusion": [[3, 1], [0, 4]]}))["confusion"], [[2, 0], [1, 5]]]
    specnet.plot_confusion(sum(np.asarray(m) for m in folds), ["a", "b"], tmp_path / "sum.png")
    specnet.plot_confusion(folds[0], ["a", "b"], tmp_path / "lists.png")
    assert (tmp_path / "lists.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SpecnetError, match=r"shape \(2, 2\) does not fit 3 classes"):
        specnet.plot_confusion(folds[0], ["a", "b", "c"], tmp_path / "three.png")
    with pytest.raises(SpecnetError, match=r"shape \(2, 3\) does not fit 2 classes"):
        specnet.plot_confusion(np.ones((2, 3), int), ["a", "b"], tmp_path / "wide.png")
    for counts in ([[np.nan, 1], [1, 1]], [[-1, 1], [1, 1]], [[0.5, 1], [1, 1]], [["a", "b"], ["c", "d"]]):
        with pytest.raises(SpecnetError, match=r"^a confusion matrix holds counts: whole numbers >= 0$"):
            specnet.plot_confusion(counts, ["a", "b"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    specnet.plot_confusion(np.array([[3.0, 1.0], [0.0, 4.0]]), ["a", "b"], tmp_path / "floats.png")  # counts as floats


def test_names_of_any_bytes_are_drawn_escaped(tmp_path, monkeypatch):
    # Folder and file names are bytes: one that is not UTF-8 reaches Python as a lone surrogate,
    # which the font renderer refuses; a control character would break the line; a $ would start
    # matplotlib's maths markup, which refuses "$\frac$".
    odd, shown = "dat\udcffa\nb$\\frac$", "dat\\xffa\\nb\\$\\frac\\$"
    curves = plots.plot_curves([{"epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5, "val_macro_f1": 0.5}],
                               tmp_path / "curves.png", title=f"cnn on {odd}")
    confusion = plots.plot_confusion(np.eye(2), [odd, "b"], tmp_path / "confusion.png", title=odd)
    spectrogram = plots.plot_spectrogram(np.zeros((16, 10)), tmp_path / "s.png", sample_rate=8000, hop_length=80,
                                         f_min=0.0, f_max=4000.0, title=odd)
    for picture in (curves, confusion, spectrogram):
        assert picture.read_bytes().startswith(b"\x89PNG")

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, overwrite=True: figures.append(fig))
    plots.plot_curves([{"epoch": 0, "train_loss": 1.0}], tmp_path / "c2.png", title=f"cnn on {odd}")
    plots.plot_confusion(np.eye(2), [odd, "b"], tmp_path / "m2.png", title=odd)
    assert figures[0].texts[0].get_text() == f"cnn on {shown}"
    ax = figures[1].axes[0]
    assert ax.get_title() == shown and [t.get_text() for t in ax.get_xticklabels()] == [shown, "b"]


def test_characters_no_font_has_are_drawn_as_codes_with_one_warning(tmp_path, monkeypatch, caplog):
    # matplotlib drew the same empty box for every such character, with two lines of UserWarning per glyph.
    # STIXGeneral stands in for an installed CJK font: it has U+1D81, which DejaVu Sans lacks.
    import warnings

    import matplotlib

    monkeypatch.setattr(plots, "FALLBACK_FONTS", ("No Such Font", "STIXGeneral"))
    figures, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, **kwargs: figures.append(fig) or save(fig, path, **kwargs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion(np.eye(3), ["\u732b", "\u72ac", "\u1d81"], tmp_path / "c.png")  # saved: the text is rendered
    assert [str(w.message) for w in caught] == []  # U+1D81 drawn by the fallback font, the others as codes
    assert [t.get_text() for t in figures[0].axes[0].get_yticklabels()] == ["\\u732b", "\\u72ac", "\u1d81"]
    messages = [r.getMessage() for r in caplog.records if r.name == "specnet"]
    assert messages == [f"{tmp_path / 'c.png'}: the characters \u72ac \u732b of the names are in none of the fonts drawn with "
                        "(matplotlib's own and installed fallbacks such as Noto Sans CJK), so they are drawn as \\uXXXX codes"]
    caplog.clear()
    plots.plot_confusion(np.eye(2), ["caf\u00e9", "b"], tmp_path / "d.png")  # DejaVu Sans has it
    assert not caplog.records and [t.get_text() for t in figures[1].axes[0].get_yticklabels()] == ["caf\u00e9", "b"]
    # A caller's own font comes first, and what it has is drawn.
    monkeypatch.setattr(plots, "FALLBACK_FONTS", ())
    with matplotlib.rc_context({"font.family": ["STIXGeneral"]}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion(np.eye(2), ["\u1d81", "b"], tmp_path / "e.png")
    assert not caught and not caplog.records
    assert [t.get_text() for t in figures[2].axes[0].get_yticklabels()] == ["\u1d81", "b"]


def test_drawing_leaves_matplotlib_as_the_caller_had_it(tmp_path):
    # plot_confusion is public: a notebook calling it must keep its backend, its style and its figures.
    import matplotlib
    import matplotlib.pyplot as plt

    from specnet.errors import SpecnetError

    backend, font_size = matplotlib.get_backend(), matplotlib.rcParams["font.size"]
    with matplotlib.rc_context({"font.size": 13.0}):
        figures = plt.get_fignums()
        path = plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "c.svg")
        assert b"<svg" in path.read_bytes()[:400]
        for bad in (tmp_path / "c.txt", tmp_path / "c.svg"):  # a format it cannot write, a file it would overwrite
            with pytest.raises(SpecnetError):
                plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"], bad)
        assert matplotlib.rcParams["font.size"] == 13.0 and matplotlib.rcParams["axes.spines.top"]
        assert plt.get_fignums() == figures
    assert (matplotlib.get_backend(), matplotlib.rcParams["font.size"]) == (backend, font_size)


def test_an_existing_picture_is_refused_before_anything_is_drawn(tmp_path, monkeypatch):
    import matplotlib.axes

    from specnet.errors import SpecnetError

    (tmp_path / "c.png").write_bytes(b"mine")
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda *a, **k: pytest.fail("drew before refusing"))
    with pytest.raises(SpecnetError, match="c.png"):
        plots.plot_confusion(np.eye(60, dtype=int), [f"c{i}" for i in range(60)], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() == b"mine"


def test_the_family_style_is_drawn_in(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, overwrite=True: figures.append(fig))
    plots.plot_curves([{"epoch": 0, "train_loss": 1.0}], tmp_path / "curves.png")
    ax = figures[0].axes[0]
    assert not ax.spines["top"].get_visible() and ax.title.get_fontsize() > 0
    assert ax.xaxis.label.get_fontsize() == plots.STYLE["font.size"]
