"""The Open Inference Protocol over gRPC, driven by the real tritonclient library.

tritonclient runs in its own environment (.venv-clients, `make clients`: it needs
protobuf < 7) through tests/tritonclient_calls.py; its answers must equal digits.v1's for
the same images, bit for bit.
"""

import json
import subprocess

import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc
from serving.client import DigitClient
from tests.serving_support import ROOT, ServerThread, digit_pixels, encode, server_config

CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
IMAGES = 4


@pytest.fixture(scope="module")
def server(serving_repository):
    with ServerThread(server_config(serving_repository)) as running:
        yield running


@pytest.fixture(scope="module")
def tritonclient_run(server, tmp_path_factory) -> tuple[dict, dict]:
    """Every call of tests/tritonclient_calls.py against the server: (report, answers)."""
    if not CLIENTS_PYTHON.is_file():
        pytest.skip("no .venv-clients: run `make clients` (make test does)")
    folder = tmp_path_factory.mktemp("tritonclient")
    pixels = np.stack([digit_pixels(i) for i in range(IMAGES)])
    pngs = {f"png_{i}": np.frombuffer(encode(p), np.uint8) for i, p in enumerate(pixels)}
    np.savez(folder / "inputs.npz", pixels=pixels, **pngs)
    result = subprocess.run(
        [
            str(CLIENTS_PYTHON),
            str(ROOT / "tests" / "tritonclient_calls.py"),
            server.target,
            str(folder / "inputs.npz"),
            str(folder / "out"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((folder / "out" / "answers.json").read_text())
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
    inputs = {tensor["name"]: tensor for tensor in metadata["inputs"]}
    assert inputs["image"]["shape"] == ["-1", "100", "100", "1"]
    assert inputs["image_bytes"]["datatype"] == "BYTES"
    config = report["model_config"]["config"]
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


def test_every_error_has_its_status_and_names_the_problem(tritonclient_run):
    report, _ = tritonclient_run
    errors = report["errors"]
    assert errors["unknown model"]["status"] == "StatusCode.NOT_FOUND"
    for kind in ("wrong shape", "wrong datatype", "bad image bytes", "unknown output"):
        assert errors[kind]["status"] == "StatusCode.INVALID_ARGUMENT", errors[kind]
    assert "[N, 100, 100, 1]" in errors["wrong shape"]["message"]
    assert errors["bad image bytes"]["message"].startswith("image 0:")
    assert "unknown output 'x'" in errors["unknown output"]["message"]
    assert "[N, 100, 100, 1]" in report["stream_error"]  # told in the stream, which went on


def test_statistics_count_what_was_served(tritonclient_run):
    report, _ = tritonclient_run
    stats = {s["name"]: s for s in report["statistics"]["model_stats"]}["scratch_cnn"]
    inference = stats["inference_stats"]
    assert int(inference["success"]["count"]) >= 6 and int(inference["fail"]["count"]) >= 1
    assert int(stats["inference_count"]) == 4 * IMAGES + 3  # four calls of N, a stream of 2 + 1
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
