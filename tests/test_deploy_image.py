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
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from common.contract import CLASS_LABELS, IMAGE_SIZE
from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from serving.client import DigitClient
from tests.deploy_support import (
    SERVER_DOCKERFILE,
    TRAINING_DOCKERFILE,
    ImageConfig,
    parse_dockerfile,
    substitute,
)
from tests.serving_support import free_port

MODEL = "tiny_cnn"
IMAGE_VENV_BIN = "/opt/venv/bin"  # where the image's `python` lives (Dockerfile: PATH)
START_SECONDS = 60
CALLS = 20


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


def log_lines(output: str) -> list[dict]:
    """The JSON log lines of the server's output (other lines, if any, are skipped)."""
    lines = []
    for line in output.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [line for line in lines if isinstance(line, dict)]


@dataclass
class RunningImage:
    """The image's command running as a local process."""

    image: ImageConfig
    env: dict[str, str]
    stop_signal: str
    log: Path
    process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.env["DIGITS_PORT"])

    @property
    def metrics_port(self) -> int:
        return int(self.env["DIGITS_METRICS_PORT"])

    def start(self) -> None:
        with self.log.open("w") as log_file:
            self.process = subprocess.Popen(
                self.image.command, env=self.env, cwd="/", stdout=log_file, stderr=subprocess.STDOUT
            )

    def wait_until_healthy(self) -> None:
        """Run the image's HEALTHCHECK command until it passes, as Docker would."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}: {self.output()}")
            if health_check(self.image.healthcheck, self.env).returncode == 0:
                return
            time.sleep(0.5)
        pytest.fail(f"the image's health check did not pass within {START_SECONDS} s")

    def stop(self) -> int:
        """Send the image's STOPSIGNAL and wait out the drain; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(getattr(signal, self.stop_signal))
        try:
            return self.process.wait(timeout=float(self.env["DIGITS_GRACE_SECONDS"]) + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> str:
        return self.log.read_text()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return response.read().decode()

    def requests_answered(self) -> float:
        families = text_string_to_metric_families(self.metrics())
        return sum(
            sample.value
            for family in families
            if family.name == "digits_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("model") == MODEL
        )


@contextmanager
def image_running(repository: Path, log: Path) -> Iterator[RunningImage]:
    """The CPU server image's command with its own ENV; only address, ports, repository differ."""
    dockerfile = parse_dockerfile(SERVER_DOCKERFILE)
    image = dockerfile.image_config("server", {"FLAVOR": "cpu"})
    (stop_signal,) = dockerfile.stage("server").all("STOPSIGNAL")
    overrides = {
        "DIGITS_HOST": "127.0.0.1",
        "DIGITS_PORT": str(free_port()),
        "DIGITS_HTTP_PORT": str(free_port()),
        "DIGITS_METRICS_PORT": str(free_port()),
        "DIGITS_MODEL_REPOSITORY": str(repository),
    }
    running = RunningImage(image, container_environment(image.env, overrides), stop_signal, log)
    running.start()
    try:
        running.wait_until_healthy()
        yield running
    finally:
        running.stop()


def classify_request(count: int) -> digits_pb2.ClassifyRequest:
    rng = np.random.default_rng(count)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(count)]
    return digits_pb2.ClassifyRequest(
        model=MODEL, images=[digits_pb2.Image(encoded=png(p)) for p in images]
    )


def test_image_command_starts_passes_health_check_and_classifies(repository, tmp_path):
    image = parse_dockerfile(SERVER_DOCKERFILE).image_config("server", {"FLAVOR": "cpu"})
    assert image.env["DIGITS_HOST"] == "0.0.0.0" and image.env["DIGITS_LOG_FORMAT"] == "json"
    with image_running(repository, tmp_path / "server.log") as server:
        # The image's health check fails, with one line, where nothing listens.
        elsewhere = server.env | {"DIGITS_PORT": str(free_port())}
        refused = health_check(server.image.healthcheck, elsewhere)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1

        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = digits_pb2_grpc.DigitClassifierStub(channel).Classify(
                classify_request(3), timeout=30
            )
        assert reply.model == MODEL and reply.version == 1
        assert len(reply.predictions) == 3
        for prediction in reply.predictions:
            probabilities = np.array(prediction.probabilities)
            assert probabilities.shape == (len(CLASS_LABELS),)
            assert abs(probabilities.sum() - 1) < 1e-4
            assert prediction.class_index == probabilities.argmax()
            assert prediction.label == CLASS_LABELS[prediction.class_index]
        assert server.requests_answered() == 1
        assert server.stop() == 0

    output = server.output()
    started = [line for line in log_lines(output) if line.get("message") == "server started"]
    assert len(started) == 1, output
    assert started[0]["host"] == "127.0.0.1" and started[0]["port"] == server.port
    assert MODEL in started[0]["models"]
    assert any(line.get("message") == "server stopped" for line in log_lines(output)), output


def test_round_robin_over_replicas_spreads_calls_pick_first_does_not(repository, tmp_path):
    """What the headless Service gives clients: every replica's address (docs/deployment.md).

    A channel with the round_robin policy over those addresses sends calls to every replica;
    gRPC's default (pick_first) sends every call down one connection to one replica.
    """
    with (
        image_running(repository, tmp_path / "a.log") as first,
        image_running(repository, tmp_path / "b.log") as second,
    ):
        target = f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"
        request = classify_request(1)
        with grpc.insecure_channel(target) as channel:  # pick_first
            stub = digits_pb2_grpc.DigitClassifierStub(channel)
            for _ in range(CALLS):
                stub.Classify(request, timeout=30)
        before = [first.requests_answered(), second.requests_answered()]
        assert sorted(before) == [0, CALLS]

        # The project's own client uses round_robin: calls reach both replicas (the second
        # may connect a moment later).
        with DigitClient(target) as client:
            for _ in range(10):
                for _ in range(CALLS):
                    client.classify(MODEL, [np.zeros((100, 100), np.uint8)])
                after = [first.requests_answered(), second.requests_answered()]
                if all(a > b for a, b in zip(after, before, strict=True)):
                    break
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_training_image_command_answers_help():
    """The training image's entrypoint is a real command (training itself is not run here)."""
    image = parse_dockerfile(TRAINING_DOCKERFILE).image_config("training", {})
    env = container_environment(image.env, {})
    result = subprocess.run(
        [*image.command, "--help"], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--data-dir" in result.stdout and "--output" in result.stdout
