"""Tests for specnet.image: loading, channel conversion, resizing and errors."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from helpers import make_image
from PIL import Image

import specnet.paths
from specnet.errors import ImageError, ParameterError
from specnet.image import IMAGE_EXTENSIONS, image_from_array, is_image_file, load_image


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L conversion (ITU-R 601-2 luma), in [0, 1]."""
    return (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000 / 255


def test_is_image_file_checks_suffix_case_insensitively():
    assert is_image_file("spec.PNG")
    assert is_image_file(b"a.jpeg")
    assert not is_image_file("clip.wav")
    assert {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
            ".pbm", ".pgm", ".ppm", ".pnm", ".tga"} == IMAGE_EXTENSIONS


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff", ".webp", ".ppm", ".tga"])
def test_lossless_rgb_round_trip(tmp_path, suffix):
    save = {"lossless": True} if suffix == ".webp" else {}
    pixels = make_image(tmp_path / f"x{suffix}", "RGB", (24, 32), **save)
    x = load_image(tmp_path / f"x{suffix}")
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), pixels / 255, atol=1e-6)


def test_grey_png_stays_one_channel(tmp_path):
    pixels = make_image(tmp_path / "g.png", "L", (10, 12))
    x = load_image(tmp_path / "g.png")
    assert x.shape == (1, 10, 12)
    np.testing.assert_allclose(x[0].numpy(), pixels / 255, atol=1e-6)


def test_a_folder_of_netpbm_faces_is_found_and_stays_grey(tmp_path):
    # The ORL faces and other classic datasets come as .pgm: a folder of them was found empty.
    (tmp_path / "s1").mkdir()
    pixels = make_image(tmp_path / "s1" / "1.pgm", "L", (10, 12))
    make_image(tmp_path / "s1" / "2.jfif", "RGB", (10, 12))  # what browsers save JPEGs as
    assert specnet.paths.find_inputs(tmp_path, kind="image") == [str(tmp_path / "s1" / "1.pgm"), str(tmp_path / "s1" / "2.jfif")]
    x = load_image(tmp_path / "s1" / "1.pgm")
    assert x.shape == (1, 10, 12)
    np.testing.assert_allclose(x[0].numpy(), pixels / 255, atol=1e-6)


def test_grey_with_alpha_stays_one_channel(tmp_path):
    pixels = make_image(tmp_path / "ga.png", "LA", (10, 12))
    x = load_image(tmp_path / "ga.png")
    assert x.shape == (1, 10, 12)
    np.testing.assert_allclose(x[0].numpy(), pixels[..., 0] / 255, atol=1e-6)


def test_rgba_drops_alpha(tmp_path):
    pixels = make_image(tmp_path / "a.png", "RGBA", (8, 9))
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 8, 9)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), pixels[..., :3] / 255, atol=1e-6)


def test_jpeg_round_trip_is_close(tmp_path):
    # smooth content, so JPEG's loss stays small
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128), axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "r.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.jpg", quality=95)
    x = load_image(tmp_path / "r.jpg")
    g = load_image(tmp_path / "g.jpg")
    assert x.shape == (3, 64, 64) and g.shape == (1, 64, 64)
    assert np.abs(x.permute(1, 2, 0).numpy() - rgb / 255).mean() < 0.01
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_channel_conversion(tmp_path):
    rgb = make_image(tmp_path / "c.png", "RGB", (6, 7))
    grey = load_image(tmp_path / "c.png", channels=1)
    assert grey.shape == (1, 6, 7)
    np.testing.assert_allclose(grey[0].numpy(), _grey(rgb.astype(float)), atol=1 / 255 + 1e-6)
    grey_pixels = make_image(tmp_path / "l.png", "L", (6, 7))
    as_rgb = load_image(tmp_path / "l.png", channels=3)
    assert as_rgb.shape == (3, 6, 7)
    for channel in as_rgb:  # each channel is the grey picture itself
        np.testing.assert_allclose(channel.numpy(), grey_pixels / 255, atol=1e-6)


def test_a_lab_image_becomes_grey_through_rgb(tmp_path):
    # Pillow converts LAB to RGB but not to L: channels=1 called the file corrupt.
    pixels = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    lab = Image.fromarray(pixels).convert("LAB")
    lab.save(tmp_path / "lab.tif")
    expected = np.asarray(lab.convert("RGB"), dtype=np.float64)
    grey = load_image(tmp_path / "lab.tif", channels=1)
    assert grey.shape == (1, 6, 7)
    np.testing.assert_allclose(grey[0].numpy(), _grey(expected), atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "lab.tif").permute(1, 2, 0).numpy(), expected / 255, atol=1e-6)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    x = load_image(tmp_path / "deep.png")
    np.testing.assert_allclose(x[0, 0].numpy(), values[0] / 65535, atol=1e-6)
    as_rgb = load_image(tmp_path / "deep.png", channels=3)
    assert as_rgb.shape == (3, 1, 4)
    np.testing.assert_allclose(as_rgb[:, 0].numpy(), np.repeat(values / 65535, 3, axis=0), atol=1e-6)


def test_float_grey_in_range_loads_as_is(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "unit.tif")
    np.testing.assert_allclose(load_image(tmp_path / "unit.tif")[0, 0].numpy(), values[0])


@pytest.mark.parametrize("values, fragment", [
    (np.linspace(-80, 0, 8, dtype=np.float32), "-80 to 0 (mode F)"),  # a spectrogram in dB
    (np.linspace(0, 255, 8, dtype=np.float32), "0 to 255 (mode F)"),
    (np.array([0.5, np.nan], dtype=np.float32), "(mode F)"),
])
def test_float_grey_out_of_range_is_an_error_not_a_flat_image(tmp_path, values, fragment):
    Image.fromarray(values.reshape(1, -1)).save(tmp_path / "db.tif")
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "db.tif")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'db.tif'}: pixel values") and fragment in message and "0 to 1" in message


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (5, 4))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.save(tmp_path / "p.png", transparency=0)
    x = load_image(tmp_path / "p.png")
    assert x.shape == (3, 4, 5)
    assert x[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert x[:, 1, 1].tolist() == [1.0, 0.0, 0.0]


def test_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    x = load_image(tmp_path / "anim.gif")
    assert x.shape == (3, 4, 4)
    assert x[0].min() > 0.9 and x[1].max() < 0.1


def test_resize(tmp_path):
    make_image(tmp_path / "r.png", "RGB", (40, 60))
    x = load_image(tmp_path / "r.png", size=(20, 15))
    assert x.shape == (3, 20, 15) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    flat = Image.new("L", (30, 10), 51)
    flat.save(tmp_path / "flat.png")
    y = load_image(tmp_path / "flat.png", size=(64, 64))
    torch.testing.assert_close(y, torch.full((1, 64, 64), 0.2))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"channels": 2}, "channels=2"), ({"size": (0, 10)}, "size=(0, 10)"),
     ({"size": 32}, "size=32"), ({"size": (10.0, 10)}, "size=(10.0, 10)")],
)
def test_bad_arguments(tmp_path, kwargs, fragment):
    make_image(tmp_path / "x.png", "RGB", (4, 4))
    with pytest.raises(ParameterError) as excinfo:
        load_image(tmp_path / "x.png", **kwargs)
    assert fragment in str(excinfo.value)


def _truncated_png(tmp_path):
    make_image(tmp_path / "whole.png", "RGB", (64, 64))
    data = (tmp_path / "whole.png").read_bytes()
    path = tmp_path / "trunc.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_as_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n" * 10)
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    return path


def _directory(tmp_path):
    path = tmp_path / "dir.png"
    path.mkdir()
    return path


def _missing(tmp_path):
    return tmp_path / "missing.png"


def _broken_symlink(tmp_path):
    path = tmp_path / "link.png"
    path.symlink_to(tmp_path / "gone.png")
    return path


IMAGE_ERRORS = [
    (_truncated_png, "truncated or corrupt image data"),
    (_text_as_png, "not a readable image file (format not recognised)"),
    (_empty, "file is empty (0 bytes)"),
    (_directory, "is a directory, not an image"),
    (_missing, "file not found"),
    (_broken_symlink, "file not found"),
]


@pytest.mark.parametrize(("make", "fragment"), IMAGE_ERRORS,
                         ids=[m.__name__ for m, _ in IMAGE_ERRORS])
def test_file_errors_name_the_file(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert str(excinfo.value).startswith(f"{path}: ")
    assert fragment in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    make_image(tmp_path / "big.png", "L", (100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10 000 pixels is over twice this
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")
    # Between the limit and twice it Pillow only warns: refused the same way, in one line,
    # without touching the warning filters (other threads may be decoding).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    filters = list(warnings.filters)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(
            ImageError, match=r"big.png: image too large to load safely \(Image size \(10000 pixels\) exceeds limit of 6000 pixels\)$"):
        load_image(tmp_path / "big.png")
    assert warnings.filters == filters


def test_an_array_becomes_what_its_file_becomes(tmp_path):
    pixels = make_image(tmp_path / "a.png", "RGB", (12, 20))  # (H, W, 3) uint8
    chw = np.moveaxis(pixels, -1, 0)
    for channels, size in ((3, None), (3, (8, 8)), (1, (5, 30))):
        from_file = load_image(tmp_path / "a.png", channels=channels, size=size)
        for array in (chw, torch.from_numpy(chw), chw.astype(np.float32) / 255):
            np.testing.assert_allclose(image_from_array(array, channels=channels, size=size), from_file, atol=1 / 255 + 1e-6)
    grey = make_image(tmp_path / "g.png", "L", (6, 7))
    torch.testing.assert_close(image_from_array(grey[None], channels=3), load_image(tmp_path / "g.png", channels=3))
    rgba = make_image(tmp_path / "t.png", "RGBA", (6, 7))  # alpha dropped, from a file as from an array
    torch.testing.assert_close(image_from_array(np.moveaxis(rgba, -1, 0), channels=3), load_image(tmp_path / "t.png", channels=3))
    grey_alpha = make_image(tmp_path / "la.png", "LA", (6, 7))
    for channels in (1, 3):
        torch.testing.assert_close(image_from_array(np.moveaxis(grey_alpha, -1, 0), channels=channels),
                                   load_image(tmp_path / "la.png", channels=channels))
    sixteen = (np.arange(42, dtype=np.uint16) * 1500).reshape(1, 6, 7)
    np.testing.assert_allclose(image_from_array(sixteen, channels=1)[0], sixteen[0] / 65535, rtol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    pixels = make_image(tmp_path / "plain.png", "RGB", (4, 6))  # (H, W, 3), stored as a camera writes it
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    shown = np.rot90(pixels, k=-1)  # (6, 4, 3)
    np.testing.assert_allclose(load_image(tmp_path / "turned.png", channels=3), np.moveaxis(shown, -1, 0) / 255, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "plain.png", channels=3), np.moveaxis(pixels, -1, 0) / 255, atol=1e-6)
    # A Pillow image in memory is turned as its file is; a closed one is one line.
    picture = Image.open(tmp_path / "turned.png")
    torch.testing.assert_close(image_from_array(picture, channels=3), load_image(tmp_path / "turned.png", channels=3))
    picture.close()
    with pytest.raises(ParameterError, match=r"^the Pillow image cannot be read \(Operation on closed image\)$"):
        image_from_array(picture, channels=3)


@pytest.mark.parametrize(
    ("pixels", "fragment"),
    [
        (np.zeros((32, 32, 3), np.uint8), r"got shape \(32, 32, 3\); that looks like \(height, width, channels\): transpose it"),
        (np.zeros((5, 8, 8), np.uint8), r"with 1 to 4 channels \(grey, grey and alpha, RGB, RGBA\), got shape \(5, 8, 8\); a grey image is \(1, height, width\), "
                                        r"a batch of them \(images, 1, height, width\)$"),
        (np.zeros((3, 0, 0)), r"got shape \(3, 0, 0\); it holds no pixels$"),  # was told a grey image is (1, height, width)
        (np.zeros((1, 4, 0), np.uint8), r"got shape \(1, 4, 0\); it holds no pixels$"),
        (np.zeros((8, 8)), r"got shape \(8, 8\)$"),
        (np.full((3, 4, 4), np.nan), "NaN or infinite"),
        (np.full((3, 4, 4), 255.0), r"must lie in \[0, 1\], got 255 to 255; scale them, or pass uint8"),
        (np.zeros((3, 4, 4), np.int64), "must be uint8, uint16 or float"),
    ],
)
def test_bad_image_arrays_are_parameter_errors(pixels, fragment):
    with pytest.raises(ParameterError, match=fragment):
        image_from_array(pixels, channels=3)


def test_permission_denied(tmp_path, monkeypatch):
    make_image(tmp_path / "locked.png", "RGB", (4, 4))
    path = tmp_path / "locked.png"
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make open() refuse instead
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        # image.py opens files through specnet.audio's helper
        monkeypatch.setattr(specnet.paths, "open", refuse, raising=False)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert str(excinfo.value) == f"{path}: permission denied"


def test_non_utf8_file_name(tmp_path):
    make_image(tmp_path / "plain.png", "L", (3, 5))
    raw = os.fsencode(tmp_path) + b"/spec-\xff.png"
    os.rename(tmp_path / "plain.png", raw)
    assert load_image(raw).shape == (1, 3, 5)
    assert load_image(os.fsdecode(raw)).shape == (1, 3, 5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # channels=5 (or 2, or 0) gave a grey image; a bad size reached torch's interpolate
        ({"channels": 5}, r"^channels=5 must be 1 or 3$"),
        ({"channels": 0}, r"^channels=0 must be 1 or 3$"),
        ({"channels": None}, r"^channels=None must be 1 or 3$"),
        ({"channels": 3, "size": (0, 4)}, r"^size=\(0, 4\) must be a \(height, width\) pair of positive integers$"),
        ({"channels": 1, "size": 5}, r"^size=5 must be a \(height, width\) pair of positive integers$"),
    ],
)
def test_image_from_array_checks_channels_and_size_as_load_image_does(options, message):
    with pytest.raises(ParameterError, match=message):
        image_from_array(np.zeros((3, 8, 8), np.uint8), **options)
