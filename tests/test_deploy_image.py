"""The server image's exact command, run outside a container.

No Docker engine runs here, so this test does what the container would do: it reads the
ENTRYPOINT/CMD, ENV, HEALTHCHECK and STOPSIGNAL of the Dockerfile's CPU server stage, runs
that command with that environment (only the address, the ports and the model repository
changed: 127.0.0.1, free ports, a tiny repository published by export), and proves the
server starts, passes the image's own health check, answers Classify, exposes its metrics
and stops cleanly on the image's stop signal.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from common.contract import CLASS_LABELS, IMAGE_SIZE
from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from tests.deploy_support import SERVER_DOCKERFILE, parse_dockerfile, substitute

MODEL = "tiny_cnn"
IMAGE_VENV_BIN = "/opt/venv/bin"  # where the image's `python` lives (Dockerfile: PATH)
START_SECONDS = 60


def tiny_model():
    """A contract-shaped Keras model small enough to export in seconds."""
    import tf_keras as keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 5, strides=5, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASS_LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A model repository with one published version of MODEL, written by export."""
    from export.config import ExportOptions
    from export.publish import publish_model

    repository = tmp_path_factory.mktemp("deploy") / "model_repository"
    rng = np.random.default_rng(0)
    validation = rng.integers(0, 256, (8, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    options = ExportOptions(
        providers="cpu",
        fp16=False,
        batch_one_images=2,
        full_batch_images=8,
        speed_batch_sizes=(1,),
        speed_repeats=1,
    )
    metadata = {"val_accuracy": 0.5, "backbone": None}
    publish_model(tiny_model(), MODEL, repository, validation, metadata, options=options)
    return repository


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def container_environment(image_env: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """The image's ENV on top of this machine's, `python` resolving to this venv's.

    Only PATH is translated: the image's venv folder becomes this interpreter's folder. Any
    DIGITS_* variable of the calling shell is dropped, so only the image's settings count.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    env = dict(base)
    for key, value in image_env.items():
        if key == "PATH":
            value = value.replace(IMAGE_VENV_BIN, str(Path(sys.executable).parent))
        env[key] = substitute(value, base)
    return env | overrides


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def health_check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=30)


def wait_until_healthy(
    server: subprocess.Popen, command: list[str], env: dict[str, str], log: Path
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}: {log.read_text()}")
        if health_check(command, env).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"the image's health check did not pass within {START_SECONDS} s")


def log_lines(output: str) -> list[dict]:
    """The JSON log lines of the server's output (other lines, if any, are skipped)."""
    lines = []
    for line in output.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [line for line in lines if isinstance(line, dict)]


def test_image_command_starts_passes_health_check_and_classifies(repository, tmp_path):
    dockerfile = parse_dockerfile(SERVER_DOCKERFILE)
    image = dockerfile.image_config("server", {"FLAVOR": "cpu"})
    stop_signal = next(
        args for key, args in dockerfile.stage("server").instructions if key == "STOPSIGNAL"
    )
    port, metrics_port = free_port(), free_port()
    env = container_environment(
        image.env,
        {
            "DIGITS_HOST": "127.0.0.1",
            "DIGITS_PORT": str(port),
            "DIGITS_METRICS_PORT": str(metrics_port),
            "DIGITS_MODEL_REPOSITORY": str(repository),
        },
    )
    assert image.env["DIGITS_HOST"] == "0.0.0.0" and env["DIGITS_LOG_FORMAT"] == "json"

    # Before the server runs, the image's health check fails (exit 1, one line).
    refused = health_check(image.healthcheck, env)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1

    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            image.command, env=env, cwd="/", stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_until_healthy(server, image.healthcheck, env, log)

        rng = np.random.default_rng(1)
        images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(3)]
        request = digits_pb2.ClassifyRequest(
            model=MODEL, images=[digits_pb2.Image(encoded=png(p)) for p in images]
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = digits_pb2_grpc.DigitClassifierStub(channel).Classify(request, timeout=30)
        assert reply.model == MODEL and reply.version == 1
        assert len(reply.predictions) == len(images)
        for prediction in reply.predictions:
            probabilities = np.array(prediction.probabilities)
            assert probabilities.shape == (len(CLASS_LABELS),)
            assert abs(probabilities.sum() - 1) < 1e-4
            assert prediction.class_index == probabilities.argmax()
            assert prediction.label == CLASS_LABELS[prediction.class_index]

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert f'model="{MODEL}"' in response.read().decode()
    finally:
        server.send_signal(getattr(signal, stop_signal))
        try:
            server.wait(timeout=float(env["DIGITS_GRACE_SECONDS"]) + 30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    output = log.read_text()
    assert server.returncode == 0, output
    started = [line for line in log_lines(output) if line.get("message") == "server started"]
    assert len(started) == 1, output
    assert started[0]["host"] == "127.0.0.1" and started[0]["port"] == port
    assert MODEL in started[0]["models"]
