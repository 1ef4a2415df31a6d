"""Images the latency benchmark sends: real validation digits when there are some."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import CLASS_LABELS
from common.images import to_model_pixels
from serving.client import classify_request

BUNDLED_DIGITS = Path(__file__).resolve().parents[1] / "training/bundled/mnist_digits.npz"


def load_sample_pixels(validation_file: Path, count: int = 64) -> tuple[np.ndarray, str]:
    """(uint8 [count, 100, 100], where they came from). Pixel content does not change timing
    much, but PNG size does, so real digits are preferred over noise."""
    if Path(validation_file).exists():
        with np.load(validation_file) as data:
            images = data["images"]
        source = str(validation_file)
    else:
        with np.load(BUNDLED_DIGITS) as data:
            keep = np.isin(data["labels"], [int(label) for label in CLASS_LABELS])
            small = data["images"][keep][:count]
        images = np.stack([to_model_pixels(Image.fromarray(image)) for image in small])
        source = "bundled MNIST digits 0-2, resized to 100x100"
    repeats = -(-count // len(images))
    return np.ascontiguousarray(np.tile(images, (repeats, 1, 1))[:count]), source


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def serialized_requests(
    model: str, pixels: np.ndarray, images_per_request: int, count: int, payload: str
) -> list[bytes]:
    """`count` distinct ClassifyRequests, serialised once so the client does not pay for it.
    Images go as PNG bytes ("png") or raw uint8 arrays ("raw"), as serving.client sends them."""
    images = [png_bytes(image) if payload == "png" else image for image in pixels]
    requests = []
    for index in range(count):
        chosen = [
            images[(index * images_per_request + k) % len(images)]
            for k in range(images_per_request)
        ]
        requests.append(classify_request(model, chosen).SerializeToString())
    return requests
