"""Calls a running server with tritonclient (gRPC or HTTP), the real client library (run
by tests/test_inference_protocol.py in .venv-clients: tritonclient needs protobuf < 7).

    python tests/tritonclient_calls.py grpc|http TARGET INPUTS.npz OUTPUT_FOLDER

INPUTS.npz holds `pixels` uint8 [N, 100, 100] and `png_0` .. `png_{N-1}` (encoded files as
uint8 arrays). Writes answers.npz (every output as numpy) and answers.json (metadata,
config, readiness, statistics, and each error's status and message).
"""

import json
import queue
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc
import tritonclient.http
from tritonclient.utils import InferenceServerException

MODEL = "scratch_cnn"


def infer(client, name: str, array: np.ndarray, datatype: str, outputs=None, **binary):
    tensor = protocol(client).InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, **binary)
    return client.infer(MODEL, [tensor], outputs=outputs, request_id="req-7")


def protocol(client):
    """The tritonclient module of this client: tritonclient.grpc or tritonclient.http."""
    grpc_types = (tritonclient.grpc.InferenceServerClient, tritonclient.grpc.InferResult)
    return tritonclient.grpc if isinstance(client, grpc_types) else tritonclient.http


def as_json(client, method: str, *args):
    """A call's answer as JSON: tritonclient.grpc converts on request, .http always does."""
    grpc = protocol(client) is tritonclient.grpc
    return getattr(client, method)(*args, **({"as_json": True} if grpc else {}))


def error_of(call) -> dict:
    try:
        call()
    except InferenceServerException as error:
        return {"status": error.status(), "message": error.message()}
    return {"status": "OK", "message": ""}


def streamed(client, batches: list[np.ndarray]) -> list:
    """ModelStreamInfer: one request per batch, answers (or errors) in order."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index, batch in enumerate(batches):
        tensor = tritonclient.grpc.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        client.async_stream_infer(MODEL, [tensor], request_id=f"s{index}")
    got = [answers.get(timeout=30) for _ in batches]
    client.stop_stream()
    return got


def main(kind: str, target: str, inputs: Path, output: Path) -> None:
    data = np.load(inputs)
    pixels = data["pixels"]
    pngs = np.array([data[f"png_{i}"].tobytes() for i in range(len(pixels))], dtype=np.object_)
    fp32 = pixels[..., None].astype(np.float32)
    module = tritonclient.grpc if kind == "grpc" else tritonclient.http
    client = module.InferenceServerClient(url=target)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL),
        "unknown_model_ready": client.is_model_ready("no_such_model"),
        "server_metadata": as_json(client, "get_server_metadata"),
        "model_metadata": as_json(client, "get_model_metadata", MODEL),
        "model_config": as_json(client, "get_model_config", MODEL),
    }
    answers = {}
    result = infer(client, "image", fp32, "FP32")
    answers["fp32"] = result.as_numpy("probabilities")
    report["fp32_response"] = as_json(result, "get_response")
    answers["uint8"] = infer(client, "image", pixels[..., None], "UINT8").as_numpy("probabilities")
    answers["bytes"] = infer(client, "image_bytes", pngs, "BYTES").as_numpy("probabilities")
    top2 = [module.InferRequestedOutput("probabilities", class_count=2)]
    classes = infer(client, "image", fp32, "FP32", outputs=top2).as_numpy("probabilities")
    report["classification"] = [[item.decode() for item in row] for row in classes]
    if kind == "grpc":
        stream = streamed(client, [fp32[:2], fp32[2:3], fp32[:1, :50]])  # the last one is bad
        answers["stream_0"] = stream[0][0].as_numpy("probabilities")
        answers["stream_1"] = stream[1][0].as_numpy("probabilities")
        report["stream_error"] = str(stream[2][1])
    else:  # JSON both ways, no binary extension
        json_out = [module.InferRequestedOutput("probabilities", binary_data=False)]
        answers["json"] = infer(
            client, "image", fp32, "FP32", outputs=json_out, binary_data=False
        ).as_numpy("probabilities")
    report["errors"] = {
        "unknown model": error_of(lambda: client.infer("no_such_model", [])),
        "wrong shape": error_of(lambda: infer(client, "image", fp32[:, :50], "FP32")),
        "wrong datatype": error_of(lambda: infer(client, "image", fp32.astype(np.float64), "FP64")),
        "bad image bytes": error_of(
            lambda: infer(client, "image_bytes", np.array([b"not a png"], np.object_), "BYTES")
        ),
        "unknown output": error_of(
            lambda: infer(client, "image", fp32, "FP32", [module.InferRequestedOutput("x")])
        ),
    }
    report["statistics"] = as_json(client, "get_inference_statistics", MODEL)
    output.mkdir(parents=True, exist_ok=True)
    np.savez(output / "answers.npz", **answers)
    (output / "answers.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
