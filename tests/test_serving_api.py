"""The Classify service end to end: a real server on 127.0.0.1, real ONNX Runtime sessions."""

import asyncio
import functools
import shutil
import subprocess

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from common.images import load_image_file
from protos.digits.v1 import digits_pb2
from serving.batcher import INLINE_INFERENCE_S, RUN_ALONE_S
from serving.client import AsyncDigitClient, DigitClient, classify_request
from serving.service import DigitClassifierService
from tests.serving_support import (
    ServerThread,
    digit_pixels,
    direct_probabilities,
    encode,
    server_config,
)

ATOL = 1e-5  # batched and single-image runs of one ONNX graph agree to float rounding


@pytest.fixture(scope="module")
def server(serving_repository):
    config = server_config(serving_repository, batch_delay_us=2000)
    with ServerThread(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with DigitClient(server.target) as digit_client:
        yield digit_client


def probabilities(reply: digits_pb2.ClassifyResponse) -> np.ndarray:
    return np.array([list(p.probabilities) for p in reply.predictions], np.float32)


def test_image_file_answer_equals_the_model_on_the_training_tensor(
    client, serving_repository, tmp_path
):
    """A colour JPEG of odd size: server answer == ORT on load_image_file's pixels."""
    path = tmp_path / "digit.jpg"
    gray = digit_pixels(3)
    colour = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    Image.fromarray(colour).resize((137, 91)).save(path, quality=90)

    reply = client.classify("scratch_cnn", [path.read_bytes()])

    expected = direct_probabilities(serving_repository, "scratch_cnn", load_image_file(path))
    np.testing.assert_allclose(probabilities(reply), expected, atol=ATOL)
    best = reply.predictions[0]
    assert best.class_index == int(expected.argmax())
    assert best.label == str(best.class_index)
    assert best.probability == pytest.approx(float(expected.max()), abs=ATOL)
    assert (reply.model, reply.version) == ("scratch_cnn", 1)


def test_raw_tensors_uint8_float32_and_rgb_match_encoded(client, serving_repository):
    pixels = digit_pixels(5)
    rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    small = np.asarray(Image.fromarray(pixels).resize((28, 40)))
    reply = client.classify(
        "scratch_cnn",
        [encode(pixels), pixels, pixels.astype(np.float32), rgb, small, encode(small)],
    )
    got = probabilities(reply)
    expected = direct_probabilities(serving_repository, "scratch_cnn", pixels)
    np.testing.assert_allclose(got[:4], np.repeat(expected, 4, axis=0), atol=ATOL)
    np.testing.assert_allclose(got[4], got[5], atol=ATOL)  # raw and PNG of one small image


def test_many_concurrent_callers_each_get_their_own_answer(client, serving_repository, server):
    """64 concurrent calls of distinct images, over two models, batched: no answer mixed up."""
    images = [digit_pixels(i) for i in range(64)]
    models = ["scratch_cnn" if i % 2 else "second_cnn" for i in range(64)]
    batches_before = batch_count(server)
    futures = [
        client.stub.Classify.future(classify_request(model, [encode(image)]), timeout=60)
        for model, image in zip(models, images, strict=True)
    ]
    replies = [future.result() for future in futures]

    for name in ("scratch_cnn", "second_cnn"):
        chosen = [i for i, model in enumerate(models) if model == name]
        expected = direct_probabilities(
            serving_repository, name, np.stack([images[i] for i in chosen])
        )
        got = np.concatenate([probabilities(replies[i]) for i in chosen])
        assert all(replies[i].model == name for i in chosen)
        np.testing.assert_allclose(got, expected, atol=ATOL)
    assert batch_count(server) - batches_before < 64  # some calls really shared a batch


def test_concurrent_single_images_share_batches_without_a_delay(serving_repository):
    """With --batch-delay-us 0 and a model cheap enough to run on the event loop, concurrent
    single-image calls (each admitted, as gRPC starts its handler) still share batches: a
    handler that ran its request itself when it was its process's only admitted one (C=32
    looks so, as the loop runs one handler after another) left every batch at one image
    (docs/serving.md, Dynamic batching)."""
    config = server_config(serving_repository, batch_delay_us=0)
    requests = [classify_request("scratch_cnn", [digit_pixels(i)]) for i in range(32)]

    async def classify_concurrently(service: DigitClassifierService) -> list:
        calls = [
            service.measured(
                r.model, r.ByteSize(), functools.partial(service.classify, r, None), None
            )
            for r in requests
        ]
        return await asyncio.gather(*calls)

    with ServerThread(config) as running:
        model = running.server.registry.get("scratch_cnn").model
        # slower than the queue trip, cheap enough for the loop (as on a fast CPU)
        model.image_seconds = (RUN_ALONE_S + INLINE_INFERENCE_S) / 2
        replies = running.call(classify_concurrently(running.server.service))
        assert [len(reply.predictions) for reply in replies] == [1] * 32
        assert batch_count(running) < 32


def batch_count(server: ServerThread) -> float:
    return sum(
        server.server.metrics.registry.get_sample_value("digits_batch_size_count", {"model": name})
        or 0
        for name in ("scratch_cnn", "second_cnn")
    )


def test_one_request_with_many_images_is_answered_in_order(client, serving_repository):
    images = [digit_pixels(i) for i in range(40)]
    reply = client.classify("second_cnn", [encode(image) for image in images])
    expected = direct_probabilities(serving_repository, "second_cnn", np.stack(images))
    np.testing.assert_allclose(probabilities(reply), expected, atol=ATOL)


def test_classify_stream_answers_in_order_and_reports_errors_inline(client, serving_repository):
    images = [digit_pixels(i) for i in range(10)]
    requests = [
        classify_request("scratch_cnn", [encode(image)], request_id=f"r{i}")
        for i, image in enumerate(images)
    ]
    requests.insert(4, classify_request("scratch_cnn", [b"not an image"], request_id="bad"))

    replies = list(client.classify_stream(requests))

    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    assert replies[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "image 0" in replies[4].error.message
    good = [r for r in replies if r.request_id != "bad"]
    expected = direct_probabilities(serving_repository, "scratch_cnn", np.stack(images))
    np.testing.assert_allclose(
        np.concatenate([probabilities(r) for r in good]), expected, atol=ATOL
    )


def test_list_models_and_metadata(client):
    models = {m.name: m for m in client.list_models()}
    assert set(models) == {"scratch_cnn", "second_cnn"}
    meta = client.get_model_metadata("scratch_cnn")
    assert meta.version == 1 and list(meta.versions) == [1]
    assert list(meta.labels) == ["0", "1", "2"]
    assert meta.input.name == "image" and list(meta.input.shape) == [-1, 100, 100, 1]
    assert meta.output.name == "probabilities" and list(meta.output.shape) == [-1, 3]
    assert meta.val_accuracy == pytest.approx(0.5)
    assert meta.execution_provider == "CPUExecutionProvider"
    assert '"name": "scratch_cnn"' in meta.metadata_json


def test_health_and_reflection(client, server):
    assert client.health("") == "SERVING"
    assert client.health("digits.v1.DigitClassifier") == "SERVING"
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {service.name for service in reply.list_services_response.service}
    assert {"digits.v1.DigitClassifier", "grpc.health.v1.Health"} <= names


def test_metrics_count_requests_batches_and_latency(client, server):
    registry = server.server.metrics.registry

    def sample(name, **labels):
        return registry.get_sample_value(name, labels) or 0.0

    ok_before = sample("digits_requests_total", model="scratch_cnn", status="OK")
    images_before = sample("digits_batch_size_sum", model="scratch_cnn")
    client.classify("scratch_cnn", [digit_pixels(1), digit_pixels(2)])
    assert sample("digits_requests_total", model="scratch_cnn", status="OK") == ok_before + 1
    assert sample("digits_batch_size_sum", model="scratch_cnn") == images_before + 2
    assert sample("digits_request_latency_seconds_count", model="scratch_cnn", status="OK") >= 1
    assert sample("digits_inference_seconds_count", model="scratch_cnn") >= 1
    assert sample("digits_queue_depth", model="scratch_cnn") == 0
    assert sample("digits_model_version", model="scratch_cnn") == 1


def test_async_client(server, serving_repository):
    images = [digit_pixels(i) for i in range(8)]

    async def run():
        async with AsyncDigitClient(server.target) as client:
            replies = await asyncio.gather(
                *(client.classify("scratch_cnn", [encode(image)]) for image in images)
            )
            models = await client.list_models()
        return replies, models

    replies, models = asyncio.run(run())
    expected = direct_probabilities(serving_repository, "scratch_cnn", np.stack(images))
    np.testing.assert_allclose(
        np.concatenate([probabilities(r) for r in replies]), expected, atol=ATOL
    )
    assert len(models) == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls_serves_trusted_clients_only(serving_repository, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = server_config(serving_repository, tls_cert=cert, tls_key=key)
    with ServerThread(config) as server:
        with DigitClient(server.target, root_certificates=cert.read_bytes()) as client:
            assert len(client.classify("scratch_cnn", [digit_pixels(0)]).predictions) == 1
        with DigitClient(server.target, timeout=5) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.list_models()
