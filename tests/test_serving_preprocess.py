"""Server-side preprocessing: raw tensors and encoded files reach the model as equal pixels."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from common.images import ImageDecodeError, array_to_model_pixels, decode_image, load_image_file
from protos.digits.v1 import digits_pb2
from serving.client import image_message
from serving.errors import ServingError
from serving.preprocess import PixelLimits, cheap_to_decode, image_pixels, preprocess
from tests.serving_support import digit_pixels, encode

LIMIT = 10_000_000


def colour_digit(width: int, height: int) -> np.ndarray:
    gray = np.asarray(Image.fromarray(digit_pixels(7)).resize((width, height)))
    return np.stack([gray, 255 - gray, gray // 3], axis=-1)


@pytest.mark.parametrize("size", [(100, 100), (37, 53), (250, 180)])
def test_raw_rgb_equals_the_same_pixels_encoded_as_png(size):
    rgb = colour_digit(*size)
    from_png = decode_image(encode(rgb))
    assert np.array_equal(array_to_model_pixels(rgb), from_png)
    assert np.array_equal(image_pixels(image_message(rgb), LIMIT), from_png)
    assert np.array_equal(image_pixels(image_message(rgb.astype(np.float32)), LIMIT), from_png)


def test_raw_gray_shapes_and_dtypes_agree_with_the_file_path(tmp_path):
    gray = np.asarray(Image.fromarray(digit_pixels(2)).resize((64, 48)))
    path = tmp_path / "digit.bmp"
    Image.fromarray(gray).save(path)
    expected = load_image_file(path)
    for array in (gray, gray[:, :, None], gray.astype(np.float32), gray.astype(np.float32) + 0.2):
        assert np.array_equal(image_pixels(image_message(array), LIMIT), expected)
    pixels = digit_pixels(4)
    assert np.array_equal(array_to_model_pixels(pixels), pixels)  # 100x100 passes unchanged


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((10, 10), np.int16), "dtype"),
        (np.full((10, 10), np.nan, np.float32), "finite"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((4000, 3000), np.uint8), "exceeds"),
    ],
)
def test_array_problems_are_named(array, problem):
    with pytest.raises(ImageDecodeError, match=problem):
        array_to_model_pixels(array, max_pixels=LIMIT)


def test_preprocess_in_chunks_keeps_order_and_names_the_first_bad_image():
    images = [image_message(encode(digit_pixels(i))) for i in range(7)]

    async def run(batch):
        with ThreadPoolExecutor(3) as executor:
            return await preprocess(batch, PixelLimits(LIMIT, 7 * LIMIT), executor, workers=3)

    pixels = asyncio.run(run(images))
    assert pixels.shape == (7, 100, 100) and pixels.dtype == np.uint8
    for i in range(7):
        assert np.array_equal(pixels[i], digit_pixels(i))

    bad = digits_pb2.Image(encoded=b"broken")
    with pytest.raises(ServingError, match="image 3"):
        asyncio.run(run(images[:3] + [bad] + images[3:5] + [bad]))


def test_only_requests_cheaper_than_a_thread_hand_off_are_decoded_on_the_loop():
    """By the headers: a few raw 100x100 tensors or one small PNG are decoded on the event
    loop; many tensors, several PNGs or one large image go to the decoder threads."""
    raw, png = image_message(digit_pixels(0)), image_message(encode(digit_pixels(0)))
    assert cheap_to_decode([raw] * 8) and cheap_to_decode([png])
    assert not cheap_to_decode([raw] * 100) and not cheap_to_decode([png] * 3)
    large = image_message(encode(np.zeros((400, 400), np.uint8)))
    assert not cheap_to_decode([large])
    assert cheap_to_decode([digits_pb2.Image(encoded=b"not an image")])  # fails fast, inline


@pytest.mark.parametrize("count", [1, 8, 100])
def test_inline_and_threaded_decoding_give_the_same_pixels(count):
    images = [image_message(digit_pixels(i % 10)) for i in range(count)]
    limits = PixelLimits(per_image=10**6, per_request=10**8)

    async def decoded():
        with ThreadPoolExecutor(2) as executor:
            return await preprocess(images, limits, executor, 2)

    expected = np.stack([digit_pixels(i % 10) for i in range(count)])
    np.testing.assert_array_equal(asyncio.run(decoded()), expected)
