"""Image decoding and resizing: the single code path used by training, serving and benchmarks.

Every image, whatever its format, size or colour, becomes a uint8 [100, 100] grayscale
array here, so the server sees exactly the pixels the models were trained on.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.contract import IMAGE_SIZE

RESAMPLING = Image.Resampling.BILINEAR
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode (the message says why)."""


def to_model_pixels(image: Image.Image) -> np.ndarray:
    """Grayscale and resize a decoded PIL image to uint8 [IMAGE_SIZE, IMAGE_SIZE]."""
    gray = image.convert("L")
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), RESAMPLING)
    return np.asarray(gray, dtype=np.uint8)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/BMP bytes to uint8 [IMAGE_SIZE, IMAGE_SIZE]; raise ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            image.load()
            return to_model_pixels(image)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"image too large: {error}") from error


def load_image_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file; errors name the file."""
    try:
        return decode_image(Path(path).read_bytes(), max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{path}: {error}") from error


def invert_polarity(pixels: np.ndarray) -> np.ndarray:
    """Dark ink on white paper from light on dark, and back (uint8 or 0..255 floats)."""
    return (255 - pixels).astype(pixels.dtype)
