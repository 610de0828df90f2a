"""Decoding one image file with Pillow, bounded: only the formats of :data:`pu_mining.image_types.PIL_FORMATS`,
the pixel limit checked from the header before decoding, the result as ``uint8`` grey or RGB pixels.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageFile

from pu_mining.image_types import (
    PIL_FORMATS,
    ImageDecodeError,
    ReadLimits,
    UnsafeArchiveError,
)

# ------------------------------------------------------------------------------------------------------ decoding

_PIL_LOCK = threading.Lock()


def decode_image(data: bytes, limits: ReadLimits | None = None, name: str = "<image>") -> np.ndarray:
    """The first frame of the image file in ``data`` as ``uint8`` ``[H, W]`` or ``[H, W, 3]`` (see the module).

    Only the Pillow decoders in :data:`PIL_FORMATS`. ImageDecodeError (naming ``name``) for anything that does not
    decode; UnsafeArchiveError for an image over ``limits.max_image_pixels``, checked from the header before the
    pixels are decoded. Pillow's global settings are changed for the call only, under a lock.
    """
    if limits is None:
        limits = ReadLimits()
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ImageDecodeError(f"{name}: an image of {width}x{height} pixels")
                if width * height > limits.max_image_pixels:
                    raise _pixel_bomb(name, width, height, limits)
                image.load()
                return _to_uint8_pixels(image, name)
        except (UnsafeArchiveError, ImageDecodeError):
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UnsafeArchiveError(
                f"{name}: over the {limits.max_image_pixels:,}-pixel limit ({error}); refused"
            ) from None
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... for bad files
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise ImageDecodeError(f"{name}: cannot decode the image ({detail})") from None
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _pixel_bomb(name: str, width: int, height: int, limits: ReadLimits) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{name}: {width}x{height} = {width * height:,} pixels, over the {limits.max_image_pixels:,}-pixel limit "
        "(a decompression bomb?); refused"
    )


def _to_uint8_pixels(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L"):
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    elif mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(f"{name}: 32-bit integer pixels outside 0..65535")
        pixels = ((values * 255 + 32767) // 65535).astype(np.uint8)
    elif mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageDecodeError(f"{name}: float pixels with NaN or infinite values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise ImageDecodeError(f"{name}: float pixels in [{low:g}, {high:g}], neither [0, 1] nor [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        pixels = np.rint(values * scale).clip(0, 255).astype(np.uint8)
    elif mode in ("LA", "La"):
        gray_alpha = np.asarray(image.convert("LA"), dtype=np.uint16)
        pixels = ((gray_alpha[..., 0] * gray_alpha[..., 1] + 127) // 255).astype(np.uint8)
    elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        pixels = ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    elif mode == "RGB":
        pixels = np.asarray(image, dtype=np.uint8)
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in ("P", "PA") and (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
        pixels = pixels[..., 0]  # a palette of greys (a grayscale GIF) is a grayscale image
    return np.ascontiguousarray(pixels)
