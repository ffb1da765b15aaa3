"""Image file I/O: load pictures (saved spectrograms, say) as float tensors.

Images come back as float32 tensors of shape ``(C, H, W)`` in [0, 1], the
layout the models take. Every problem with a file raises
:class:`~specnet.errors.ImageError` whose message starts with the file name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from specnet.checks import as_numpy, is_integer
from specnet.errors import ImageError, ParameterError
from specnet.paths import PathLike, display_name, open_for_reading

__all__ = ["IMAGE_EXTENSIONS", "image_from_array", "is_image_file", "load_image"]

#: Lower-case file suffixes specnet treats as images: the common formats, Netpbm (the grey and
#: colour maps of classic datasets such as the ORL faces) and TGA.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".pbm", ".pgm", ".ppm", ".pnm", ".tga"}
)

# Pillow modes that hold one grey value per pixel (with or without alpha).
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Modes whose values do not fit 8 bits: scaled here instead of by Pillow's
# convert("L"), which would clip 16-bit grey at 255.
_WIDE_GREY_SCALE = {"I": 65535.0, "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0,
                    "I;16N": 65535.0, "F": 1.0}


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has a suffix in :data:`IMAGE_EXTENSIONS` (case-insensitive).

    Only the name is checked; the file need not exist.
    """
    return Path(os.fsdecode(path)).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    path: PathLike,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Load an image as a float tensor.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file; any format Pillow reads. Animated images give their first frame.
    channels : {1, 3} or None
        1 converts to grey, 3 to RGB. None keeps grey images (with or without
        alpha) as 1 channel and makes everything else RGB. Alpha is dropped;
        an EXIF orientation (phone photos) is applied, so the image is upright as shown.
    size : (int > 0, int > 0) or None
        Resize to ``(height, width)`` with bilinear interpolation
        (antialiased when shrinking); None keeps the file's size.

    Returns
    -------
    torch.Tensor [shape=(channels, height, width), dtype=float32]
        Pixel values in [0, 1].

    Raises
    ------
    ImageError
        The file is missing, empty, a directory, unreadable, truncated or
        corrupt, not an image, too large (Pillow's decompression-bomb limit),
        or a float or 32-bit grey image with values outside 0-1 or 0-65535.
    ParameterError
        ``channels`` or ``size`` is invalid.
    """
    _check_channels_and_size(channels, size, none=True)
    name = display_name(path)
    with open_for_reading(path, name, ImageError, "an image") as fh:
        try:
            with Image.open(fh) as img:
                # Pillow refuses more than twice MAX_IMAGE_PIXELS and only warns above it: refuse
                # those too (no multi-GB decode for a picture the model shrinks to a few pixels),
                # by the size, as changing warning filters is not safe in decoding threads.
                limit, pixels = Image.MAX_IMAGE_PIXELS, img.width * img.height
                if limit is not None and pixels > limit:
                    raise Image.DecompressionBombError(f"Image size ({pixels} pixels) exceeds limit of {limit} pixels")
                x = _to_array(_upright(img), channels)
        except _PixelError as exc:
            raise ImageError(f"{name}: {exc}") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a readable image file (format not recognised)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{name}: image too large to load safely ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Pillow signals bad data with all of these (SyntaxError: "broken PNG file").
            raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from None

    image = torch.from_numpy(x).permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)
    return _resized(image, size)


def image_from_array(pixels: Any, *, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image held in memory, made what :func:`load_image` makes of a file.

    pixels : a Pillow image (converted as a file's pixels are), or an array or tensor
        ``(C, height, width)``, C = 1 (grey), 2 (grey and alpha),
        3 (RGB) or 4 (RGBA), alpha dropped as for files; uint8 values are scaled by 1/255
        and uint16 by 1/65535, float values must lie in [0, 1]. One image only:
        ``(3, height, width)`` is one RGB image, and a batch ``(images, C, height, width)``
        is refused.
    channels : 1 or 3; grey is repeated to RGB, RGB is made grey with the ITU-R
        601 weights Pillow uses for files.
    size : (height, width) to resize to, bilinear and antialiased as for files.

    Returns float32 ``(channels, height, width)`` in [0, 1]; raises ParameterError
    for any other shape, scale or a value that is not finite.
    """
    _check_channels_and_size(channels, size, none=False)
    if isinstance(pixels, Image.Image):  # converted as a file's pixels are
        try:
            x = _to_array(_upright(pixels), channels)
        except _PixelError as exc:
            raise ParameterError(str(exc)) from None
        except (OSError, ValueError) as exc:  # a closed image, or one whose file is gone or truncated
            raise ParameterError(f"the Pillow image cannot be read ({exc})") from None
        return _resized(torch.from_numpy(x).permute(2, 0, 1).contiguous(), size)
    raw = as_numpy(pixels)
    shape = tuple(raw.shape)
    if raw.ndim != 3 or shape[0] not in _COLOUR_OF_CHANNELS or 0 in shape:
        looks_hwc = raw.ndim == 3 and shape[-1] in _COLOUR_OF_CHANNELS and shape[0] not in _COLOUR_OF_CHANNELS
        raise ParameterError(
            f"an image array must be (channels, height, width) with 1 to 4 channels (grey, grey and alpha, RGB, RGBA), "
            f"got shape {shape}"
            + ("; it holds no pixels" if raw.ndim == 3 and shape[0] in _COLOUR_OF_CHANNELS
               else "; that looks like (height, width, channels): transpose it to (channels, height, width)" if looks_hwc
               else "; a grey image is (1, height, width), a batch of them (images, 1, height, width)" if raw.ndim == 3 else "")
        )
    raw = raw[: _COLOUR_OF_CHANNELS[shape[0]]]  # alpha dropped, as Pillow drops it converting a file
    if raw.dtype == np.uint8 or raw.dtype == np.uint16:
        x = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    elif np.issubdtype(raw.dtype, np.floating):
        x = raw.astype(np.float32)
        if not np.isfinite(x).all():
            raise ParameterError("image pixels contain NaN or infinite values")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ParameterError(
                f"float image pixels must lie in [0, 1], got {x.min():g} to {x.max():g}; scale them, or pass uint8"
            )
    else:
        raise ParameterError(f"image pixels must be uint8, uint16 or float in [0, 1], got {raw.dtype}")
    image = torch.from_numpy(np.ascontiguousarray(x))
    if image.shape[0] != channels:
        image = image.expand(3, -1, -1) if channels == 3 else (_LUMA.view(3, 1, 1) * image).sum(0, keepdim=True)
    return _resized(image.contiguous(), size)


def _check_channels_and_size(channels: object, size: object, *, none: bool) -> None:
    """ParameterError unless ``channels`` is 1 or 3 (or None, if ``none``) and ``size`` a
    (height, width) pair of positive integers or None."""
    if not ((none and channels is None) or (is_integer(channels) and channels in (1, 3))):
        raise ParameterError(f"channels={channels!r} must be " + ("1, 3 or None" if none else "1 or 3"))
    if size is not None and not (
        isinstance(size, (tuple, list)) and len(size) == 2
        and all(is_integer(s) and s > 0 for s in size)
    ):
        raise ParameterError(f"size={size!r} must be a (height, width) pair of positive integers")


#: The EXIF tag saying how to turn the stored pixels to show them upright.
_EXIF_ORIENTATION = 0x0112

#: Colour channels of an image array by its channel count: alpha (the last of 2 or 4) is dropped.
_COLOUR_OF_CHANNELS = {1: 1, 2: 1, 3: 3, 4: 3}

#: Pillow's RGB -> L weights (ITU-R 601-2 luma), for arrays as for files.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _resized(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``image`` (C, H, W) resized to ``size`` (bilinear, antialiased when shrinking), values kept in [0, 1]."""
    if size is None or tuple(size) == tuple(image.shape[1:]):
        return image
    return F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)


class _PixelError(Exception):
    """Pixels that do not become values in [0, 1]: wide grey outside the range its mode is scaled
    from (or not finite), or a mode Pillow cannot convert."""


def _upright(img: Image.Image) -> Image.Image:
    """``img`` decoded (so that truncated data fails here) and turned as its EXIF orientation
    says: a phone photo as it is shown, not as it is stored."""
    img.load()
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    return img


def _to_array(img: Image.Image, channels: int | None) -> np.ndarray:
    """Pixels of ``img`` as float32 [shape=(H, W, channels)] in [0, 1]."""
    grey = img.mode in _GREY_MODES
    if channels is None:
        channels = 1 if grey else 3
    if img.mode in _WIDE_GREY_SCALE:
        raw, top = np.asarray(img, dtype=np.float32), _WIDE_GREY_SCALE[img.mode]
        if raw.size and not (np.isfinite(raw).all() and raw.min() >= 0.0 and raw.max() <= top):
            # Clipping would make a float image in dB, say, one flat grey without a word.
            raise _PixelError(
                f"pixel values {np.nanmin(raw):g} to {np.nanmax(raw):g} (mode {img.mode}) are not all within "
                f"0 to {top:g}; scale them to that range or save 8- or 16-bit pixels"
            )
        return np.repeat((raw / top)[..., None], channels, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        # Pillow warns when converting such palettes straight to RGB or L.
        img = img.convert("RGBA")
    target = "L" if channels == 1 else "RGB"
    try:
        img = img.convert(target)
    except ValueError:  # Pillow makes RGB of LAB, but not grey
        try:
            img = img.convert("RGB").convert(target)
        except ValueError:
            raise _PixelError(f"image mode {img.mode} cannot be converted to {'grey' if channels == 1 else 'RGB'}") from None
    x = np.asarray(img, dtype=np.float32) / 255.0
    return x[..., None] if channels == 1 else x


def is_pil_image(value: Any) -> bool:
    """Whether ``value`` is a Pillow image (one input, where an iterable would be many)."""
    return isinstance(value, Image.Image)
