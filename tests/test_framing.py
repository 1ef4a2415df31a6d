"""DigitFraming: any placement and size of a digit reaches the network framed the MNIST way."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from common.contract import IMAGE_SIZE
from training.bundled.materialise import ARCHIVE
from training.framing import FRAMED_SHARE, DigitFraming, ink_geometry
from training.models import PolarityNormalization


@pytest.fixture(scope="module")
def digit_two() -> np.ndarray:
    """A real bundled 2, cropped to its ink: uint8, light ink on black."""
    bundled = np.load(ARCHIVE)
    image = bundled["images"][np.flatnonzero(bundled["labels"] == 2)[0]]
    rows, cols = np.flatnonzero(image.max(axis=1)), np.flatnonzero(image.max(axis=0))
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def placed(glyph: np.ndarray, height: int, top: int, left: int, dark_ink=False) -> np.ndarray:
    """`glyph` resized to `height` px tall (aspect kept) on a 100x100 frame at (top, left)."""
    width = max(1, round(glyph.shape[1] * height / glyph.shape[0]))
    resized = np.asarray(Image.fromarray(glyph).resize((width, height), Image.BILINEAR))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    frame[top : top + height, left : left + width] = resized
    return 255.0 - frame if dark_ink else frame


def framed(*images: np.ndarray) -> np.ndarray:
    batch = np.stack(images)[..., None].astype(np.float32)
    return DigitFraming()(PolarityNormalization()(batch)).numpy()[..., 0]


def ink_box(image: np.ndarray, level: float = 64.0) -> tuple[int, int]:
    rows, cols = (
        np.flatnonzero((image > level).any(axis=1)),
        np.flatnonzero((image > level).any(axis=0)),
    )
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def geometry(image: np.ndarray) -> tuple[float, float, float]:
    """The framing's own measure: the ink box's longer side and the centre of mass."""
    longer, row, col, _ = ink_geometry(image[None].astype(np.float32))
    return float(longer[0]), float(row[0]), float(col[0])


@settings(max_examples=25, deadline=None)
@given(height=st.integers(24, 96), top_share=st.floats(0, 1), left_share=st.floats(0, 1))
def test_any_placement_and_size_is_framed_alike(digit_two, height, top_share, left_share):
    height = min(height, IMAGE_SIZE * digit_two.shape[0] // digit_two.shape[1])  # fits
    width = max(1, round(digit_two.shape[1] * height / digit_two.shape[0]))
    top = round(top_share * (IMAGE_SIZE - height))
    left = round(left_share * (IMAGE_SIZE - width))
    reference, moved = framed(placed(digit_two, 50, 20, 20), placed(digit_two, height, top, left))
    longer, row, col = geometry(moved)
    assert abs(longer - FRAMED_SHARE * IMAGE_SIZE) <= 0.05 * IMAGE_SIZE  # resampling blurs
    np.testing.assert_allclose((row, col), (49.5, 49.5), atol=1.5)
    assert np.abs(np.subtract(ink_box(moved), ink_box(reference))).max() <= 4
    # the same pixels, but for resampling: far closer than the placed images are
    assert np.abs(moved - reference).mean() < 12.0


def test_aspect_ratio_is_kept():
    bar = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    bar[5:35, 60:65] = 255.0  # 30 tall, 5 wide: a 1 in a corner
    height, width = ink_box(framed(bar)[0])
    assert abs(height - FRAMED_SHARE * IMAGE_SIZE) <= 3
    assert abs(width - 5 * height / 30) <= 2


def test_both_polarities_are_framed_alike(digit_two):
    light, dark = framed(placed(digit_two, 40, 50, 5), placed(digit_two, 40, 50, 5, True))
    np.testing.assert_allclose(light, dark, atol=1e-3)


def test_a_speck_of_noise_does_not_move_the_frame(digit_two):
    clean = placed(digit_two, 50, 20, 20)
    specked = clean.copy()
    specked[97:99, 97:99] = 255.0
    assert max(ink_box(specked)) > 75  # a plain bounding box would take it in
    np.testing.assert_allclose(geometry(specked), geometry(clean), rtol=0.05, atol=0.5)
    a, b = framed(clean, specked)
    np.testing.assert_allclose(geometry(b), geometry(a), rtol=0.05, atol=0.5)


def test_an_image_without_ink_passes_unchanged():
    blank = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    np.testing.assert_array_equal(DigitFraming()(blank).numpy(), blank)
