"""The Open Inference Protocol over gRPC and HTTP, driven by the real tritonclient library
(and curl for the one call for people).

tritonclient runs in its own environment (.venv-clients, `make clients`: it needs
protobuf < 7) through tests/tritonclient_calls.py; its answers must equal digits.v1's for
the same images, bit for bit.
"""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc
from serving.client import DigitClient
from tests.serving_support import (
    ServerThread,
    digit_pixels,
    encode,
    free_port,
    run_in_clients_env,
    server_config,
)

IMAGES = 4


@pytest.fixture(scope="module")
def server(serving_repository):
    config = server_config(serving_repository, http_port=free_port())
    with ServerThread(config) as running:
        yield running


def http_url(server) -> str:
    return f"127.0.0.1:{server.server.http_port}"


@pytest.fixture(scope="module", params=["grpc", "http"])
def tritonclient_run(request, server, tmp_path_factory) -> tuple[dict, dict]:
    """Every call of tests/tritonclient_calls.py against the server, with tritonclient.grpc
    on the gRPC port or tritonclient.http on the HTTP port: (report, answers)."""
    kind = request.param
    target = server.target if kind == "grpc" else http_url(server)
    folder = tmp_path_factory.mktemp(f"tritonclient-{kind}")
    pixels = np.stack([digit_pixels(i) for i in range(IMAGES)])
    pngs = {f"png_{i}": np.frombuffer(encode(p), np.uint8) for i, p in enumerate(pixels)}
    np.savez(folder / "inputs.npz", pixels=pixels, **pngs)
    arguments = [kind, target, folder / "inputs.npz", folder / "out"]
    result = run_in_clients_env("tritonclient_calls.py", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((folder / "out" / "answers.json").read_text())
    report["kind"] = kind
    with np.load(folder / "out" / "answers.npz", allow_pickle=False) as answers:
        return report, dict(answers)


def digits_answers(server, images) -> np.ndarray:
    with DigitClient(server.target) as client:
        reply = client.classify("scratch_cnn", list(images))
    return np.array([list(p.probabilities) for p in reply.predictions], np.float32)


def test_health_and_metadata_through_tritonclient(tritonclient_run):
    report, _ = tritonclient_run
    assert report["live"] and report["ready"] and report["model_ready"]
    assert not report["unknown_model_ready"]
    assert {"classification", "model_configuration", "statistics"} <= set(
        report["server_metadata"]["extensions"]
    )
    metadata = report["model_metadata"]
    assert metadata["name"] == "scratch_cnn" and metadata["versions"] == ["1"]
    (image,) = metadata["inputs"]  # image_bytes is accepted but not listed (perf_analyzer)
    assert image["name"] == "image" and image["datatype"] == "FP32"
    assert [int(size) for size in image["shape"]] == [-1, 100, 100, 1]
    config = report["model_config"].get("config", report["model_config"])  # gRPC wraps it
    assert config["max_batch_size"] == 64 and "dynamic_batching" in config
    assert config["input"][0]["dims"] == ["100", "100", "1"]
    assert config["output"][0] == {"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["3"]}


def test_answers_equal_digits_v1_bit_for_bit(server, tritonclient_run):
    _, answers = tritonclient_run
    pixels = [digit_pixels(i) for i in range(IMAGES)]
    raw = digits_answers(server, pixels)
    encoded = digits_answers(server, [encode(p) for p in pixels])
    assert answers["fp32"].dtype == np.float32 and answers["fp32"].shape == (IMAGES, 3)
    np.testing.assert_array_equal(answers["fp32"], raw)
    np.testing.assert_array_equal(answers["uint8"], raw)
    np.testing.assert_array_equal(answers["bytes"], encoded)
    if "json" in answers:  # HTTP without the binary extension
        np.testing.assert_array_equal(answers["json"], raw)
    else:  # gRPC's stream
        np.testing.assert_array_equal(answers["stream_0"], raw[:2])
        np.testing.assert_array_equal(answers["stream_1"], raw[2:3])


def test_classification_extension(server, tritonclient_run):
    report, answers = tritonclient_run
    for row, probabilities in zip(report["classification"], answers["fp32"], strict=True):
        assert len(row) == 2
        score, index, label = row[0].split(":")
        assert int(index) == probabilities.argmax() and label == str(index)
        assert float(score) == pytest.approx(probabilities.max(), abs=1e-6)
    assert report["fp32_response"]["id"] == "req-7"


STATUS = {  # how each protocol's tritonclient reports the status
    "grpc": {"not found": "StatusCode.NOT_FOUND", "invalid": "StatusCode.INVALID_ARGUMENT"},
    "http": {"not found": "404", "invalid": "400"},
}


def test_every_error_has_its_status_and_names_the_problem(tritonclient_run):
    report, _ = tritonclient_run
    errors, status = report["errors"], STATUS[report["kind"]]
    assert str(errors["unknown model"]["status"]) == status["not found"], errors
    for kind in ("wrong shape", "wrong datatype", "bad image bytes", "unknown output"):
        assert str(errors[kind]["status"]) == status["invalid"], errors[kind]
    assert "[N, 100, 100, 1]" in errors["wrong shape"]["message"]
    assert errors["bad image bytes"]["message"].startswith("image 0:")
    assert "unknown output 'x'" in errors["unknown output"]["message"]
    if report["kind"] == "grpc":
        assert "[N, 100, 100, 1]" in report["stream_error"]  # told in the stream, which went on


def test_statistics_count_what_was_served(tritonclient_run):
    report, _ = tritonclient_run
    stats = {s["name"]: s for s in report["statistics"]["model_stats"]}["scratch_cnn"]
    inference = stats["inference_stats"]
    assert int(inference["success"]["count"]) >= 6 and int(inference["fail"]["count"]) >= 1
    assert int(stats["inference_count"]) >= 4 * IMAGES + 3  # 4 calls of N + a stream, or 5 calls
    assert int(inference["compute_infer"]["ns"]) > 0 and int(inference["queue"]["count"]) > 0
    assert stats["batch_stats"] and int(stats["execution_count"]) >= 1


def test_typed_contents_as_the_kserve_sdk_sends_them(server):
    """Typed `contents` (no raw_input_contents), with the generated stubs of our own proto."""
    pixels = np.stack([digit_pixels(i) for i in range(2)])
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image", datatype="FP32", shape=[2, 100, 100, 1]
    )
    tensor.contents.fp32_contents.extend(pixels.astype(np.float32).ravel().tolist())
    request = pb.ModelInferRequest(model_name="scratch_cnn", model_version="1", inputs=[tensor])
    with grpc.insecure_channel(server.target) as channel:
        reply = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=10
        )
    got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(2, 3)
    np.testing.assert_array_equal(got, digits_answers(server, list(pixels)))
    assert reply.model_version == "1"


def test_a_long_request_id_is_refused_not_echoed(server):
    request = pb.ModelInferRequest(model_name="scratch_cnn", id="x" * 10_000)
    with grpc.insecure_channel(server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.ModelInfer(request, timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "id has 10000 characters (at most 256)"


def test_version_strings_are_checked(server):
    request = pb.ModelInferRequest(model_name="scratch_cnn", model_version="one")
    with grpc.insecure_channel(server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.ModelInfer(request, timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an integer" in failure.value.details()


def test_the_protocol_is_in_reflection(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "inference.GRPCInferenceService" in services


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is the client here")
def test_curl_one_call_for_people_and_the_rest_paths(server, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(encode(digit_pixels(3)))
    base = f"http://{http_url(server)}"
    result = curl("--data-binary", f"@{image}", f"{base}/v1/models/scratch_cnn/classify")
    answer = json.loads(result.stdout)
    expected = digits_answers(server, [encode(digit_pixels(3))])[0]
    assert answer["class_index"] == int(expected.argmax()) and answer["version"] == 1
    assert answer["probabilities"] == dict(zip("012", expected.tolist(), strict=True))
    assert json.loads(curl(f"{base}/v2/health/ready").stdout) == {"ready": True}
    assert json.loads(curl(f"{base}/v2").stdout)["name"] == "digit-serving"
    status_only = ("--write-out", "%{http_code}", "--output", "/dev/null")
    missing = curl(*status_only, "--data-binary", f"@{image}", f"{base}/v1/models/nope/classify")
    assert missing.stdout == "404"
    bad = curl("--data-binary", "{not json", f"{base}/v2/models/scratch_cnn/infer")
    assert "malformed inference request" in json.loads(bad.stdout)["error"]
    stats = json.loads(curl(f"{base}/v2/models/scratch_cnn/versions/1/stats").stdout)
    assert stats["model_stats"][0]["version"] == "1"


def http_status(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text.startswith(b"{") else {}


def test_http_limits_body_size_and_admission(serving_repository):
    """413 beyond --max-message-bytes; 429 when the bytes in progress are full."""
    config = server_config(
        serving_repository,
        http_port=free_port(),
        max_message_bytes=1024 * 1024,
        max_inflight_bytes=1024 * 1024,
        batch_delay_us=300_000,
    )
    with ServerThread(config) as running:
        base = f"http://{http_url(running)}/v1/models/scratch_cnn/classify"
        status, _ = http_status(base, b"\0" * (2 * 1024 * 1024))
        assert status == 413
        png = encode(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8))
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda _: http_status(base, png * 6), range(8)))
        statuses = {status for status, _ in outcomes}
        assert 429 in statuses, outcomes
        busy = next(answer for status, answer in outcomes if status == 429)
        assert "request bytes in progress" in busy["error"]


def test_http_requests_in_flight_are_answered_through_the_drain(serving_repository):
    """Stopping (what SIGTERM does) while HTTP calls wait in a batch: every one answers 200."""
    config = server_config(serving_repository, http_port=free_port(), batch_delay_us=500_000)
    running = ServerThread(config).__enter__()
    base = f"http://{http_url(running)}/v1/models/scratch_cnn/classify"
    pool = ThreadPoolExecutor(4)
    try:
        calls = [pool.submit(http_status, base, encode(digit_pixels(i))) for i in range(4)]
        limit = time.monotonic() + 10
        while running.server.admission.in_progress < 4:
            assert time.monotonic() < limit, "the calls never arrived"
            time.sleep(0.01)
    finally:
        running.__exit__(None, None, None)  # drains, then stops
    outcomes = [call.result(timeout=30) for call in calls]
    pool.shutdown()
    assert [status for status, _ in outcomes] == [200] * 4
    assert running.server.admission.admitted == 4 and running.server.admission.in_progress == 0


def test_the_kserve_sdks_rest_client_gets_the_digits_v1_answers(server, tmp_path):
    pixels = np.stack([digit_pixels(i) for i in range(3)])
    np.savez(tmp_path / "inputs.npz", pixels=pixels)
    arguments = [f"http://{http_url(server)}", tmp_path / "inputs.npz", tmp_path / "answers.npy"]
    result = run_in_clients_env("kserve_client_calls.py", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = np.load(tmp_path / "answers.npy")
    np.testing.assert_array_equal(answers, digits_answers(server, list(pixels)))
