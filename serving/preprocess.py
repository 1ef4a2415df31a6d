"""Request images to model pixels (uint8 [k, 100, 100]) via common.images, off the event loop."""

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from common.contract import IMAGE_SIZE
from common.images import ImageDecodeError, array_to_model_pixels, decode_image
from protos.digits.v1 import digits_pb2
from serving import errors

RawTensor = digits_pb2.RawTensor
RAW_DTYPES = {RawTensor.UINT8: np.dtype(np.uint8), RawTensor.FLOAT32: np.dtype("<f4")}


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


def fill_pixels(
    images: Sequence[digits_pb2.Image], start: int, out: np.ndarray, max_pixels: int
) -> None:
    """Preprocess images[start:start + len(out)] into out; errors name the image index."""
    for offset in range(len(out)):
        index = start + offset
        try:
            out[offset] = image_pixels(images[index], max_pixels)
        except ImageDecodeError as error:
            raise errors.invalid_argument(f"image {index}: {error}") from None


async def preprocess(
    images: Sequence[digits_pb2.Image], max_pixels: int, executor: Executor, workers: int
) -> np.ndarray:
    """All images of a request, split into at most `workers` chunks decoded in parallel."""
    pixels = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    bounds = np.linspace(0, len(images), min(workers, len(images)) + 1).astype(int)
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(
        *(
            loop.run_in_executor(executor, fill_pixels, images, a, pixels[a:b], max_pixels)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ),
        return_exceptions=True,
    )
    for result in results:  # chunks are in index order: the first error has the lowest index
        if isinstance(result, BaseException):
            raise result
    return pixels
