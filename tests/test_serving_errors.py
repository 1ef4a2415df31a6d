"""Every failure has its gRPC status and message, and the server answers the next call."""

import io
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from protos.digits.v1 import digits_pb2
from serving.client import DigitClient, classify_request
from tests.serving_support import ServerThread, digit_pixels, encode, server_config

MAX_IMAGES = 4
MAX_PIXELS = 500 * 500
RawTensor = digits_pb2.RawTensor


@pytest.fixture(scope="module")
def client(serving_repository):
    config = server_config(
        serving_repository, max_images_per_request=MAX_IMAGES, max_pixels=MAX_PIXELS
    )
    with ServerThread(config) as server, DigitClient(server.target) as digit_client:
        yield digit_client


def raw(data: bytes, height: int, width: int, dtype=RawTensor.UINT8, channels: int = 1):
    tensor = RawTensor(dtype=dtype, height=height, width=width, channels=channels, data=data)
    return digits_pb2.Image(raw=tensor)


def good() -> digits_pb2.Image:
    return digits_pb2.Image(encoded=encode(digit_pixels(0)))


def truncated_png() -> bytes:
    noisy = np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8)
    data = encode(noisy)
    return data[: len(data) // 2]


def blank_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def request(*images: digits_pb2.Image, model: str = "scratch_cnn", version: int = 0):
    return digits_pb2.ClassifyRequest(model=model, version=version, images=list(images))


CASES = {
    "unknown model": (request(good(), model="mnist"), grpc.StatusCode.NOT_FOUND, ["mnist"]),
    "unknown version": (request(good(), version=7), grpc.StatusCode.NOT_FOUND, ["version 7"]),
    "empty image": (
        request(good(), digits_pb2.Image(encoded=b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 1", "empty"],
    ),
    "image with no source": (
        request(digits_pb2.Image()),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "empty"],
    ),
    "undecodable image": (
        request(good(), good(), digits_pb2.Image(encoded=b"GIF? no: just text")),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 2", "not an image"],
    ),
    "truncated image": (
        request(digits_pb2.Image(encoded=truncated_png())),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "truncated"],
    ),
    "raw size mismatch": (
        request(good(), raw(b"\0" * 99, 10, 10)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 1", "99 bytes", "needs 100"],
    ),
    "raw float32 size mismatch": (
        request(raw(b"\0" * 100, 10, 10, RawTensor.FLOAT32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "needs 400"],
    ),
    "unsupported dtype": (
        request(raw(b"\0" * 100, 10, 10, RawTensor.DTYPE_UNSPECIFIED)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "unsupported dtype"],
    ),
    "unsupported channel count": (
        request(raw(b"\0" * 200, 10, 10, channels=2)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "channel"],
    ),
    "too many images": (
        request(*[good()] * (MAX_IMAGES + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["too many images", str(MAX_IMAGES)],
    ),
    "no images": (request(), grpc.StatusCode.INVALID_ARGUMENT, ["no images"]),
    "encoded decompression bomb": (
        request(good(), digits_pb2.Image(encoded=blank_png(600))),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 1", "600x600", "exceeds"],
    ),
    "raw pixel count over the limit": (
        request(raw(b"\0" * 600 * 600, 600, 600)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["image 0", "exceeds"],
    ),
    "message over the maximum size": (
        request(raw(b"\0" * 3 * 1024 * 1024, 1024, 3 * 1024)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        [],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_error_status_and_message_then_the_server_still_serves(client, case):
    bad_request, code, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as failure:
        client.stub.Classify(bad_request, timeout=10)
    assert failure.value.code() == code
    for fragment in fragments:
        assert fragment in failure.value.details()
    assert len(client.classify("scratch_cnn", [digit_pixels(1)]).predictions) == 1


def test_metadata_of_unknown_model_is_not_found(client):
    with pytest.raises(grpc.RpcError) as failure:
        client.get_model_metadata("mnist")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as failure:
        client.get_model_metadata("scratch_cnn", version=9)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.get_model_metadata("scratch_cnn").name == "scratch_cnn"


# ---- queue full and deadlines: a server whose batches wait 1.5 s for company -----------


@pytest.fixture(scope="module")
def slow_server(serving_repository):
    config = server_config(serving_repository, queue_capacity=4, batch_delay_us=1_500_000)
    with ServerThread(config) as server:
        yield server


def sample(server: ServerThread, name: str, **labels) -> float:
    return server.server.metrics.registry.get_sample_value(name, labels) or 0.0


def wait_for_queue_depth(server: ServerThread, depth: int) -> None:
    limit = time.monotonic() + 10
    while sample(server, "digits_queue_depth", model="scratch_cnn") != depth:
        assert time.monotonic() < limit, "queue never reached the expected depth"
        time.sleep(0.01)


def test_queue_full_is_resource_exhausted(slow_server):
    with DigitClient(slow_server.target) as client:
        waiting = client.stub.Classify.future(
            classify_request("scratch_cnn", [digit_pixels(i) for i in range(3)]), timeout=30
        )
        wait_for_queue_depth(slow_server, 3)
        with pytest.raises(grpc.RpcError) as failure:
            client.classify("scratch_cnn", [digit_pixels(3), digit_pixels(4)])
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "full" in failure.value.details()
        assert len(waiting.result().predictions) == 3  # the accepted request is answered
        assert len(client.classify("scratch_cnn", [digit_pixels(5)]).predictions) == 1


def test_expired_deadline_is_not_computed(slow_server):
    with DigitClient(slow_server.target) as client:
        computed = sample(slow_server, "digits_batch_size_sum", model="scratch_cnn")
        with pytest.raises(grpc.RpcError) as failure:
            client.classify("scratch_cnn", [digit_pixels(6)], timeout=0.3)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for_queue_depth(slow_server, 0)  # its batch was formed: and then dropped
        reply = client.classify("scratch_cnn", [digit_pixels(7), digit_pixels(8)])
        assert len(reply.predictions) == 2
        assert sample(slow_server, "digits_batch_size_sum", model="scratch_cnn") == computed + 2
        assert (
            sample(
                slow_server,
                "digits_requests_total",
                model="scratch_cnn",
                status="DEADLINE_EXCEEDED",
            )
            == 1
        )
