"""Request images to model pixels (uint8 [k, 100, 100]) via common.images, off the event loop."""

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from common.contract import IMAGE_SIZE
from common.images import (
    ImageDecodeError,
    array_to_model_pixels,
    decode_image,
    encoded_pixel_count,
)
from protos.digits.v1 import digits_pb2
from serving import errors

RawTensor = digits_pb2.RawTensor
# A request whose images decode in less than this is decoded on the event loop, cheaper than
# handing it to a thread and back. Decoding costs, measured per pixel (docs/serving.md): a
# 100x100 raw tensor 4 us, the same as PNG 90 us.
INLINE_DECODE_BUDGET_US = 250
DECODE_US_PER_PIXEL = {"raw": 4 / 10_000, "encoded": 90 / 10_000}
NEVER_STOPPED = threading.Event()  # for work that is never stopped half-way
RAW_DTYPES = {RawTensor.UINT8: np.dtype(np.uint8), RawTensor.FLOAT32: np.dtype("<f4")}


@dataclass(frozen=True)
class PixelLimits:
    per_image: int  # width x height of one image (decompression bombs)
    per_request: int  # all images of one request together (the decode cost of a call)


def raw_tensor_array(raw: digits_pb2.RawTensor, max_pixels: int) -> np.ndarray:
    """A view of the raw bytes as [height, width, channels], after checking the sizes."""
    dtype = RAW_DTYPES.get(raw.dtype)
    if dtype is None:
        name = (
            RawTensor.DType.Name(raw.dtype) if raw.dtype in RawTensor.DType.values() else raw.dtype
        )
        raise ImageDecodeError(f"unsupported dtype {name} (UINT8 or FLOAT32)")
    channels = raw.channels or 1
    if channels not in (1, 3):
        raise ImageDecodeError(f"unsupported channel count {channels} (1 or 3)")
    if raw.height == 0 or raw.width == 0:
        raise ImageDecodeError(f"empty raw tensor ({raw.width}x{raw.height})")
    if raw.height * raw.width > max_pixels:
        raise ImageDecodeError(f"{raw.width}x{raw.height} pixels exceeds the limit of {max_pixels}")
    expected = raw.height * raw.width * channels * dtype.itemsize
    if len(raw.data) != expected:
        raise ImageDecodeError(
            f"raw data has {len(raw.data)} bytes but {raw.height}x{raw.width}x{channels} "
            f"{RawTensor.DType.Name(raw.dtype)} needs {expected}"
        )
    return np.frombuffer(raw.data, dtype).reshape(raw.height, raw.width, channels)


def image_pixels(image: digits_pb2.Image, max_pixels: int) -> np.ndarray:
    """One request image to uint8 [100, 100]; raises ImageDecodeError."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return decode_image(image.encoded, max_pixels)
    if source == "raw":
        return array_to_model_pixels(raw_tensor_array(image.raw, max_pixels), max_pixels)
    raise ImageDecodeError("empty image (neither encoded nor raw is set)")


def pixel_count(image: digits_pb2.Image) -> int:
    """Width x height of one request image, from its header or raw sizes, before decoding."""
    if image.WhichOneof("source") == "encoded":
        return encoded_pixel_count(image.encoded)
    return image.raw.height * image.raw.width


def cheap_to_decode(images: Sequence[digits_pb2.Image]) -> bool:
    """Whether all images of a request decode within INLINE_DECODE_BUDGET_US (by their
    headers; the scan stops as soon as the budget is spent, so it is cheap itself)."""
    budget = INLINE_DECODE_BUDGET_US
    for image in images:
        source = image.WhichOneof("source") or "raw"
        budget -= pixel_count(image) * DECODE_US_PER_PIXEL[source]
        if budget < 0:
            return False
    return True


def check_request_pixels(images: Sequence[digits_pb2.Image], max_request_pixels: int) -> None:
    """The decode cost of a whole request is bounded before any image is decoded."""
    total = 0
    for index, image in enumerate(images):
        total += pixel_count(image)
        if total > max_request_pixels:
            raise errors.invalid_argument(
                f"images 0..{index} hold {total} pixels, over the limit of {max_request_pixels} "
                "per request (send fewer or smaller images)"
            )


def fill_pixels(
    images: Sequence[digits_pb2.Image],
    start: int,
    out: np.ndarray,
    max_pixels: int,
    stop: threading.Event,
) -> None:
    """Preprocess images[start:start + len(out)] into out; errors name the image index.

    `stop` is set once the caller is gone (cancelled, deadline passed): no further image of
    the request is decoded."""
    for offset in range(len(out)):
        if stop.is_set():
            return
        index = start + offset
        try:
            out[offset] = image_pixels(images[index], max_pixels)
        except ImageDecodeError as error:
            raise errors.invalid_argument(f"image {index}: {error}") from None


async def preprocess(
    images: Sequence[digits_pb2.Image],
    limits: PixelLimits,
    executor: Executor,
    workers: int,
    deadline: float | None = None,
) -> np.ndarray:
    """All images of a request, split into at most `workers` chunks decoded in parallel; a
    request that is cheap to decode is decoded on the event loop (cheaper than the hand-off).

    Work stops when the caller is gone: on cancellation, and at its deadline."""
    if cheap_to_decode(images):
        pixels = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        fill_pixels(images, 0, pixels, limits.per_image, NEVER_STOPPED)
        return pixels
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    if len(images) > 1:  # one image is bounded by max_pixels already
        await loop.run_in_executor(executor, check_request_pixels, images, limits.per_request)
    pixels = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    bounds = np.linspace(0, len(images), min(workers, len(images)) + 1).astype(int)
    chunks = [
        loop.run_in_executor(executor, fill_pixels, images, a, pixels[a:b], limits.per_image, stop)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    timeout = None if deadline is None else max(0.0, deadline - loop.time())
    try:
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*chunks, return_exceptions=True)
    except TimeoutError:
        raise errors.deadline_exceeded("deadline passed while decoding the images") from None
    finally:
        stop.set()  # also on cancellation: the chunks still running stop at their next image
    for result in results:  # chunks are in index order: the first error has the lowest index
        if isinstance(result, BaseException):
            raise result
    return pixels
