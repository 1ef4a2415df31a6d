"""Property-based fuzzing of image decoding and request parsing (issue 11).

Random bytes, truncations and bit flips of real PNG, JPEG and BMP files, headers claiming
extreme sizes, random raw tensors and random bytes on the wire: every case gets a clean
answer (a result, or INVALID_ARGUMENT / NOT_FOUND naming the problem) and the server stays
SERVING. Example counts are bounded so the suite stays fast; the seed is derandomised so a
failure repeats.
"""

import struct
import zlib

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.images import ImageDecodeError, decode_image
from protos.digits.v1 import digits_pb2
from serving.client import DigitClient
from tests.serving_support import ServerThread, digit_pixels, encode, server_config

CLEAN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEEDS = [encode(digit_pixels(i), fmt) for i, fmt in enumerate(("PNG", "JPEG", "BMP"))]


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRC) claiming any size, with a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@st.composite
def damaged_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    kind = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    start = draw(st.integers(0, len(data)))
    return bytes(data[:start]) + draw(st.binary(max_size=256)) + bytes(data[start:])


image_bytes = st.one_of(
    st.binary(max_size=2048),
    damaged_files(),
    st.builds(png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
)


@FUZZ
@given(data=image_bytes)
def test_decode_image_answers_pixels_or_a_decode_error(data):
    try:
        pixels = decode_image(data)
    except ImageDecodeError as error:
        assert str(error)
    else:
        assert pixels.shape == (100, 100) and pixels.dtype == np.uint8


@pytest.fixture(scope="module")
def client(serving_repository):
    with (
        ServerThread(server_config(serving_repository)) as server,
        DigitClient(server.target, timeout=20) as connected,
    ):
        yield connected
        assert connected.health() == "SERVING"  # after every case


def status_of(call, request) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=20)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@FUZZ
@given(files=st.lists(image_bytes, min_size=1, max_size=4))
def test_any_encoded_image_gets_a_clean_status(client, files):
    request = digits_pb2.ClassifyRequest(
        model="scratch_cnn", images=[digits_pb2.Image(encoded=data) for data in files]
    )
    code, details = status_of(client.stub.Classify, request)
    assert code in CLEAN, (code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert details.startswith("image ") or "pixels" in details


raw_tensors = st.builds(
    digits_pb2.RawTensor,
    height=st.integers(0, 2**31),
    width=st.integers(0, 2**31),
    channels=st.integers(0, 8),
    dtype=st.integers(0, 6),
    data=st.binary(max_size=4096),
)


@FUZZ
@given(raw=raw_tensors)
def test_any_raw_tensor_gets_a_clean_status(client, raw):
    request = digits_pb2.ClassifyRequest(model="scratch_cnn", images=[digits_pb2.Image(raw=raw)])
    code, details = status_of(client.stub.Classify, request)
    assert code in CLEAN, (code, details)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=4096), damaged_files()))
def test_any_bytes_on_the_wire_get_a_clean_status(client, payload):
    """What a broken or hostile client sends: not necessarily protobuf at all."""
    call = client.channel.unary_unary("/digits.v1.DigitClassifier/Classify")
    code, details = status_of(call, payload)
    assert code in CLEAN, (code, details)
