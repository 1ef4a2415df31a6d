"""Image decoding and resizing: the single code path used by training, serving and benchmarks.

Every image, whatever its format, size or colour, becomes a uint8 [100, 100] grayscale
array here, so the server sees exactly the pixels the models were trained on.
"""

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.contract import IMAGE_SIZE

RESAMPLING = Image.Resampling.BILINEAR
DEFAULT_MAX_PIXELS = 40_000_000
# Exactly the documented formats: Pillow's other decoders (EPS runs Ghostscript) never run.
FORMATS = ("PNG", "JPEG", "BMP")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")
# max_pixels below is the limit that answers; Pillow's own warning about large images would
# only add noise on stderr for every image that is then refused with a clear error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode (the message says why)."""


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (v * 255 / 65535, so 257 * v8 gives back v8);
    Pillow's convert("L") would clip it to pure black and white instead."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")


def to_model_pixels(image: Image.Image) -> np.ndarray:
    """Grayscale and resize a decoded PIL image to uint8 [IMAGE_SIZE, IMAGE_SIZE]."""
    gray = eight_bit(image).convert("L")
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), RESAMPLING)
    return np.asarray(gray, dtype=np.uint8)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/BMP bytes to uint8 [IMAGE_SIZE, IMAGE_SIZE]; raise ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty image")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            image.load()
            return to_model_pixels(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image in a supported format (PNG, JPEG, BMP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"image too large: {error}") from error


def encoded_pixel_count(data: bytes) -> int:
    """Width x height from the header alone (0 if unreadable: decoding then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            return width * height
    except Exception:  # noqa: BLE001 - any unreadable header is reported by decode_image
        return 0


def load_image_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file; errors name the file."""
    try:
        return decode_image(Path(path).read_bytes(), max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{path}: {error}") from error


def invert_polarity(pixels: np.ndarray) -> np.ndarray:
    """Dark ink on white paper from light on dark, and back (uint8 or 0..255 floats)."""
    return (255 - pixels).astype(pixels.dtype)


def array_to_model_pixels(pixels: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Raw pixels to uint8 [IMAGE_SIZE, IMAGE_SIZE] through the same PIL path as decoded files.

    Accepts uint8 or float32 (values 0..255, rounded to 8 bits like every training image)
    of shape [H, W], [H, W, 1] or [H, W, 3] (RGB, grayscaled with PIL's own luma weights).
    """
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ImageDecodeError(f"shape {pixels.shape} is not [H, W], [H, W, 1] or [H, W, 3]")
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ImageDecodeError(f"empty image of {width}x{height} pixels")
    if height * width > max_pixels:
        raise ImageDecodeError(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    if pixels.dtype != np.uint8:
        if pixels.dtype.kind != "f":
            raise ImageDecodeError(f"unsupported dtype {pixels.dtype} (uint8 or float32)")
        if not np.isfinite(pixels).all():
            raise ImageDecodeError("pixel values must be finite")
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if pixels.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return pixels  # already what to_model_pixels would return, pixel for pixel
    return to_model_pixels(Image.fromarray(np.ascontiguousarray(pixels)))
