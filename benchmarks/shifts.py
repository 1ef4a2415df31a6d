"""Controlled shifts of digit images: what other writers, pens and scanners do to a digit.

Each shift takes uint8 [N, H, W] images and a strength ("mild" or "strong") and returns
uint8 images of the same shape, deterministically (seeded per shift). Geometric shifts fill
with each image's own background (the median of its border), so neither polarity grows a
frame. Strokes are thickened or thinned on the ink, whichever polarity the image has.
"""

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

STRENGTHS = ("mild", "strong")
ONE_SETTING = ("inverted",)  # shifts with nothing to grade: run at "mild" only
Shift = Callable[[np.ndarray, str], np.ndarray]


def background(image: np.ndarray) -> int:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return int(np.median(border))


def ink_is_dark(image: np.ndarray) -> bool:
    """The models' own rule (training/models.py PolarityNormalization): mostly light = paper."""
    low, high = int(image.min()), int(image.max())
    return float(image.mean()) > (low + high) / 2


def _each(images: np.ndarray, transform: Callable[[Image.Image, int], Image.Image]) -> np.ndarray:
    """Apply a PIL transform image by image (with the image's index, for seeded choices)."""
    return np.stack(
        [np.asarray(transform(Image.fromarray(image, "L"), i)) for i, image in enumerate(images)]
    ).astype(np.uint8)


def _signs(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=count)


def low_resolution(images: np.ndarray, strength: str) -> np.ndarray:
    """Down to 16x16 (mild) or 8x8 (strong) and back up: a cheap scanner, a thumbnail."""
    side = {"mild": 16, "strong": 8}[strength]

    def transform(im: Image.Image, _: int) -> Image.Image:
        return im.resize((side, side), Image.BILINEAR).resize(im.size, Image.BILINEAR)

    return _each(images, transform)


def blur(images: np.ndarray, strength: str) -> np.ndarray:
    radius = {"mild": 1.5, "strong": 3.0}[strength]
    return _each(images, lambda im, _: im.filter(ImageFilter.GaussianBlur(radius)))


def _morphology(images: np.ndarray, strength: str, thicker: bool) -> np.ndarray:
    size = {"mild": 3, "strong": 5}[strength]

    def transform(im: Image.Image, _: int) -> Image.Image:
        grows_dark = ink_is_dark(np.asarray(im)) == thicker
        return im.filter(ImageFilter.MinFilter(size) if grows_dark else ImageFilter.MaxFilter(size))

    return _each(images, transform)


def thick_strokes(images: np.ndarray, strength: str) -> np.ndarray:
    """A broad pen: the ink dilated by a 3x3 (mild) or 5x5 (strong) window."""
    return _morphology(images, strength, thicker=True)


def thin_strokes(images: np.ndarray, strength: str) -> np.ndarray:
    """A fine pen: the ink eroded by a 3x3 (mild) or 5x5 (strong) window."""
    return _morphology(images, strength, thicker=False)


def rotation(images: np.ndarray, strength: str) -> np.ndarray:
    """Turned by 10 (mild) or 20 (strong) degrees, clockwise or not (seeded)."""
    degrees = {"mild": 10.0, "strong": 20.0}[strength]
    signs = _signs(len(images), 1)
    return _each(
        images,
        lambda im, i: im.rotate(
            signs[i] * degrees, Image.BILINEAR, fillcolor=background(np.asarray(im))
        ),
    )


def _affine(images: np.ndarray, matrix_for: Callable[[int, int, int], tuple]) -> np.ndarray:
    """Each image through PIL's affine map `matrix_for(index, width, height)` (output pixel
    to input pixel), filled with the image's own background."""

    def transform(im: Image.Image, i: int) -> Image.Image:
        fill = background(np.asarray(im))
        matrix = matrix_for(i, im.width, im.height)
        return im.transform(im.size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=fill)

    return _each(images, transform)


def shear(images: np.ndarray, strength: str) -> np.ndarray:
    """Slanted writing: a horizontal shear of 0.15 (mild) or 0.3 (strong), about the centre."""
    shears = _signs(len(images), 2) * {"mild": 0.15, "strong": 0.3}[strength]
    return _affine(images, lambda i, w, h: (1.0, shears[i], -shears[i] * h / 2, 0.0, 1.0, 0.0))


def off_centre(images: np.ndarray, strength: str) -> np.ndarray:
    """Moved by 10 % (mild) or 20 % (strong) of the side, in a seeded direction."""
    fraction = {"mild": 0.10, "strong": 0.20}[strength]
    angles = np.random.default_rng(3).uniform(0, 2 * np.pi, size=len(images))

    def matrix(i: int, width: int, height: int) -> tuple:
        dx, dy = fraction * width * np.cos(angles[i]), fraction * height * np.sin(angles[i])
        return (1.0, 0.0, -dx, 0.0, 1.0, -dy)

    return _affine(images, matrix)


def rescaled(images: np.ndarray, strength: str) -> np.ndarray:
    """A smaller digit in the same frame: 75 % (mild) or 50 % (strong) of its size, centred."""
    inverse = 1.0 / {"mild": 0.75, "strong": 0.5}[strength]

    def matrix(_: int, width: int, height: int) -> tuple:
        cx, cy = width / 2, height / 2
        return (inverse, 0.0, cx - inverse * cx, 0.0, inverse, cy - inverse * cy)

    return _affine(images, matrix)


def noise(images: np.ndarray, strength: str) -> np.ndarray:
    """Sensor noise: Gaussian, standard deviation 10 (mild) or 25 (strong) grey levels."""
    sigma = {"mild": 10.0, "strong": 25.0}[strength]
    rng = np.random.default_rng(4)
    noisy = images.astype(np.float32) + rng.normal(0.0, sigma, size=images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(images: np.ndarray, strength: str) -> np.ndarray:
    """JPEG artefacts: saved at quality 30 (mild) or 10 (strong) and decoded again."""
    quality = {"mild": 30, "strong": 10}[strength]

    def transform(im: Image.Image, _: int) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("L")

    return _each(images, transform)


def uneven_background(images: np.ndarray, strength: str) -> np.ndarray:
    """Uneven lighting: a diagonal gradient of 40 (mild) or 100 (strong) grey levels added
    towards the paper's side, so the ink stays the ink."""
    amplitude = {"mild": 40.0, "strong": 100.0}[strength]
    height, width = images.shape[1:]
    ramp = (np.add.outer(np.arange(height), np.arange(width)) / (height + width - 2))[None]
    dark_ink = np.array([ink_is_dark(image) for image in images])[:, None, None]
    shifted = np.where(dark_ink, images - amplitude * ramp, images + amplitude * ramp)
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def inverted(images: np.ndarray, strength: str) -> np.ndarray:
    """The other polarity (one setting: both strengths are the same image)."""
    return (255 - images).astype(np.uint8)


SHIFTS: dict[str, Shift] = {
    "low_resolution": low_resolution,
    "blur": blur,
    "thick_strokes": thick_strokes,
    "thin_strokes": thin_strokes,
    "rotation": rotation,
    "shear": shear,
    "off_centre": off_centre,
    "rescaled": rescaled,
    "noise": noise,
    "jpeg": jpeg,
    "uneven_background": uneven_background,
    "inverted": inverted,
}
