"""Hostile and odd requests get a clean status, bounded work, and leave the server serving
(issue 11, items 7-12)."""

import asyncio
import io
import logging
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

from common.images import decode_image
from serving.client import DigitClient, classify_request, image_message
from serving.errors import ServingError
from serving.logs import TextFormatter, shown
from serving.metrics import QuietHandler
from serving.preprocess import PixelLimits, preprocess
from tests.serving_support import ServerThread, digit_pixels, encode, free_port, server_config

BIG_SIDE = 3000  # 9 M pixels: under the per-image limit, tens of ms to decode


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return encode(np.zeros((BIG_SIDE, BIG_SIDE), np.uint8))


class CountedImages(list):
    """The request's images, counting how many the decoder took."""

    def __init__(self, images):
        super().__init__(images)
        self.taken = 0
        self._lock = threading.Lock()

    def __getitem__(self, index):
        with self._lock:
            self.taken += 1
        return super().__getitem__(index)


def decode_until_gone(images, *, deadline_s=None, cancel_after_s=None):
    """preprocess() with a deadline or a cancellation; the executor is drained afterwards."""

    async def run():
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        with ThreadPoolExecutor(2) as executor:
            work = asyncio.ensure_future(
                preprocess(images, PixelLimits(10**8, 10**10), executor, 2, deadline)
            )
            if cancel_after_s is not None:
                loop.call_later(cancel_after_s, work.cancel)
            try:
                return await work
            finally:
                await asyncio.to_thread(executor.shutdown, True)  # until every thread is idle

    return asyncio.run(run())


def test_decoding_stops_at_the_callers_deadline(big_png):
    images = CountedImages([image_message(big_png)] * 48)
    with pytest.raises(ServingError) as failure:
        decode_until_gone(images, deadline_s=0.2)
    assert failure.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert images.taken < 24, f"decoded {images.taken} of 48 images for a caller who was gone"


def test_decoding_stops_when_the_caller_cancels(big_png):
    images = CountedImages([image_message(big_png)] * 48)
    with pytest.raises(asyncio.CancelledError):
        decode_until_gone(images, cancel_after_s=0.2)
    assert images.taken < 24


@pytest.fixture
def server(serving_repository):
    config = server_config(
        serving_repository,
        max_message_bytes=16 * 1024 * 1024,
        max_inflight_bytes=16 * 1024 * 1024,
        max_request_pixels=20_000_000,
    )
    with ServerThread(config) as running:
        yield running


def call_status(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def test_decode_cost_of_a_whole_request_is_bounded_before_decoding(server, big_png):
    with DigitClient(server.target) as client:
        request = classify_request("scratch_cnn", [big_png] * 3)  # 27 M pixels in all
        code, details = call_status(client.stub.Classify, request, timeout=10)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "per request" in details and "20000000" in details
        assert client.classify("scratch_cnn", [digit_pixels(0)]).version == 1


def test_a_good_request_is_not_stuck_behind_decoding_for_callers_who_left(server, big_png):
    with DigitClient(server.target) as client:
        flood = classify_request("scratch_cnn", [big_png] * 2)
        futures = [client.stub.Classify.future(flood, timeout=0.05) for _ in range(8)]
        codes = {call_status(future.result)[0] for future in futures}
        assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}
        assert client.health() == "SERVING"
        assert len(client.classify("scratch_cnn", [digit_pixels(2)]).predictions) == 1


def test_requests_beyond_the_inflight_byte_bound_are_refused_at_once(serving_repository):
    raw = np.zeros((700, 700), np.float32)  # about 1.96 MB per request
    config = server_config(
        serving_repository, max_inflight_bytes=4 * 1024 * 1024, batch_delay_us=300_000
    )
    with ServerThread(config) as server, DigitClient(server.target) as client:
        request = classify_request("scratch_cnn", [raw])
        futures = [client.stub.Classify.future(request, timeout=20) for _ in range(8)]
        outcomes = [call_status(future.result) for future in futures]
        codes = [code for code, _ in outcomes]
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes
        assert codes.count(grpc.StatusCode.OK) <= 2  # two fit in 4 MiB, the third does not
        busy = next(details for code, details in outcomes if code != grpc.StatusCode.OK)
        assert "request bytes in progress" in busy
        assert client.classify("scratch_cnn", [digit_pixels(1)]).version == 1


def test_calls_beyond_the_concurrency_bound_are_refused_at_once(serving_repository):
    config = server_config(serving_repository, max_inflight_requests=2, batch_delay_us=300_000)
    with ServerThread(config) as server, DigitClient(server.target) as client:
        request = classify_request("scratch_cnn", [digit_pixels(0)])
        futures = [client.stub.Classify.future(request, timeout=20) for _ in range(8)]
        codes = [call_status(future.result)[0] for future in futures]
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert client.classify("scratch_cnn", [digit_pixels(1)]).version == 1


def sixteen_bit_png(pixels: np.ndarray) -> bytes:
    image = Image.fromarray(pixels.astype(np.uint16) * 257)  # the same digit at 16 bits
    assert image.mode == "I;16"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_16_bit_png_gives_the_8_bit_answer(server):
    pixels = digit_pixels(5)
    assert np.array_equal(decode_image(sixteen_bit_png(pixels)), decode_image(encode(pixels)))
    with DigitClient(server.target) as client:
        reply = client.classify("scratch_cnn", [encode(pixels), sixteen_bit_png(pixels)])
        eight, sixteen = reply.predictions
        assert list(eight.probabilities) == list(sixteen.probabilities)


def test_a_huge_model_name_is_not_found_and_never_echoed_whole(server, caplog):
    name = "m" * (15 * 1024 * 1024) + "\n"
    caplog.set_level(logging.INFO, logger="serving")
    with DigitClient(server.target, max_message_bytes=32 * 1024 * 1024) as client:
        request = classify_request(name, [encode(digit_pixels(0))])
        code, details = call_status(client.stub.Classify, request, timeout=30)
    assert code == grpc.StatusCode.NOT_FOUND
    assert len(details) < 300 and "characters" in details
    logged = [record for record in caplog.records if record.getMessage() == "request failed"]
    assert logged and all(len(str(record.__dict__)) < 2000 for record in logged)


def test_text_logs_cannot_be_forged_with_newlines():
    record = logging.makeLogRecord(
        {"msg": "request failed", "levelname": "INFO", "model": "x\nINFO forged line"}
    )
    line = TextFormatter().format(record)
    assert "\n" not in line and "x\\nINFO forged line" in line
    assert shown("a\r\n\x1b[31m" + "b" * 100, limit=8) == "a\\r\\n\\x1b[31m... (108 characters)"


@pytest.mark.parametrize(
    "method",
    ["Classify", "GetModelMetadata", "ListModels"],
)
def test_malformed_protobuf_is_invalid_argument(server, method):
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(f"/digits.v1.DigitClassifier/{method}")  # raw bytes
        code, details = call_status(call, b"\xff\xff\xff\xff", timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in details


def test_malformed_protobuf_in_a_stream_is_invalid_argument(server):
    """Twenty times: the refusal once raced the good request's reply being sent (gRPC then
    refused the abort and the caller waited out its deadline: 1 call in 60)."""
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream("/digits.v1.DigitClassifier/ClassifyStream")
        good = classify_request("scratch_cnn", [encode(digit_pixels(0))]).SerializeToString()
        for _ in range(20):
            replies = call(iter([good, b"\x0a\xff"]), timeout=10)
            with pytest.raises(grpc.RpcError) as failure:
                list(replies)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)


def other_format(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit_pixels(3)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["EPS", "GIF", "TIFF", "WEBP"])
def test_only_the_documented_formats_are_decoded(server, fmt):
    data = EPS if fmt == "EPS" else other_format(fmt)
    with DigitClient(server.target) as client:
        request = classify_request("scratch_cnn", [encode(digit_pixels(0)), data])
        code, details = call_status(client.stub.Classify, request, timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("image 1:") and "PNG, JPEG, BMP" in details


def test_metrics_drop_idle_connections_and_report_process_figures(serving_repository, monkeypatch):
    monkeypatch.setattr(QuietHandler, "timeout", 0.5)
    config = server_config(serving_repository, metrics_port=free_port())
    with ServerThread(config) as server:
        port = server.server.metrics_port
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        try:
            time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            for connection in idle:  # closed by the server after its timeout: end of stream
                assert connection.recv(1) == b""
        finally:
            for connection in idle:
                connection.close()
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert "digits_model_versions_refused_total" in text or "digits_model_versions" in text
