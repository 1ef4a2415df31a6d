"""`python -m serving` and `python -m serving.client` as a user runs them: child processes."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest

from serving.client import DigitClient, classify_request
from tests.serving_support import (
    ROOT,
    ServerProcess,
    ServerThread,
    digit_pixels,
    direct_probabilities,
    encode,
    free_port,
    server_config,
)


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_flags_and_environment_variables():
    server = run("-m", "serving", "--help")
    assert server.returncode == 0
    for text in ("--model-repository", "DIGITS_BATCH_DELAY_US", "--no-batching", "--tls-cert"):
        assert text in server.stdout
    client = run("-m", "serving.client", "--help")
    assert client.returncode == 0 and "--port" in client.stdout


def test_server_modules_do_not_import_tensorflow():
    code = (
        "import sys, serving.__main__, serving.server, serving.client; "
        "assert not {'tensorflow', 'tf_keras', 'keras'} & set(sys.modules)"
    )
    assert run("-c", code).returncode == 0


def test_missing_and_empty_repository_and_bad_flags_are_one_line_errors(tmp_path):
    assert_one_line_error(
        run("-m", "serving", "--model-repository", str(tmp_path / "nowhere")), "not found"
    )
    assert_one_line_error(run("-m", "serving", "--model-repository", str(tmp_path)), "no model")
    assert_one_line_error(run("-m", "serving", "--max-batch-size", "0"), "--max-batch-size")
    env = {"DIGITS_PROVIDER": "tpu", "PATH": "/usr/bin"}
    assert_one_line_error(run("-m", "serving", env=env), "--provider")


def test_port_in_use_is_a_one_line_error(serving_repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "-m",
            "serving",
            "--model-repository",
            str(serving_repository),
            "--port",
            str(port),
            "--metrics-port",
            "0",
        )
    assert_one_line_error(result, str(port), "in use")


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def accepted(text: str) -> float:
    """Images queued or already run (the two client-CLI images included)."""
    ran = metric_value(text, 'digits_batch_size_sum{model="scratch_cnn"}') - 2
    return metric_value(text, "digits_queue_depth") + ran


def test_serving_lifecycle_client_cli_and_graceful_sigterm(serving_repository, tmp_path):
    """Started log line, health, metrics, client CLI, then SIGTERM with 32 requests queued."""
    port, metrics_port = free_port(), free_port()
    env = {"DIGITS_PORT": str(port), "DIGITS_BATCH_DELAY_US": "2000000"}  # batches wait 2 s
    args = (
        "--model-repository",
        str(serving_repository),
        "--metrics-port",
        str(metrics_port),
        "--models",
        "scratch_cnn",
        "--poll-seconds",
        "0",
    )
    with ServerProcess(*args, env=env) as server:
        started = server.started
        assert started["level"] == "info" and started["port"] == port
        assert started["host"] == "127.0.0.1" and started["time"]
        assert started["models"] == ["scratch_cnn"] and started["versions"] == {"scratch_cnn": [1]}
        assert started["provider"] == "CPUExecutionProvider"

        files = [tmp_path / "one.png", tmp_path / "two.jpg", tmp_path / "missing.png"]
        files[0].write_bytes(encode(digit_pixels(0)))
        files[1].write_bytes(encode(digit_pixels(1), "JPEG"))
        cli = run("-m", "serving.client", "--port", str(port), *map(str, files))
        assert cli.returncode == 1  # one file could not be read
        lines = cli.stdout.splitlines()
        assert [line.split("\t")[0] for line in lines] == list(map(str, files[:2]))
        assert all(line.split("\t")[1] in "012" for line in lines)
        assert cli.stderr.strip().startswith(f"{files[2]}\terror:")

        with DigitClient(f"127.0.0.1:{port}") as client:
            assert client.health("digits.v1.DigitClassifier") == "SERVING"
            text = metrics_text(metrics_port)
            assert metric_value(text, 'digits_requests_total{model="scratch_cnn",status="OK"}') == 2
            for name in (
                "digits_request_latency_seconds",
                "digits_batch_size",
                "digits_inference_seconds",
                "digits_queue_depth",
            ):
                assert name in text

            images = [digit_pixels(i) for i in range(32)]
            futures = [
                client.stub.Classify.future(classify_request("scratch_cnn", [image]), timeout=30)
                for image in images
            ]
            limit = time.monotonic() + 20
            while accepted(metrics_text(metrics_port)) < 32:
                assert time.monotonic() < limit, "requests never queued"
                time.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)  # all accepted, most (if not all) queued

            replies = [future.result() for future in futures]
            assert server.process.wait(30) == 0

    got = np.array([list(r.predictions[0].probabilities) for r in replies], np.float32)
    expected = direct_probabilities(serving_repository, "scratch_cnn", np.stack(images))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    messages = server.messages()  # with several workers, theirs come in between
    assert messages[-1] == "server stopped" and "shutting down" in messages
    stopped = json.loads(server.lines[-1])
    assert stopped["requests_unanswered"] == 0 and stopped["requests_answered_ok"] == 2 + 32


def test_sigint_stops_gracefully_and_new_calls_are_refused(serving_repository):
    port = free_port()
    args = (
        "--model-repository",
        str(serving_repository),
        "--port",
        str(port),
        "--metrics-port",
        "0",
        "--log-format",
        "text",
    )
    with ServerProcess(*args) as server:
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(30) == 0
        with DigitClient(f"127.0.0.1:{port}", timeout=5) as client, pytest.raises(grpc.RpcError):
            client.classify("scratch_cnn", [digit_pixels(0)])


def test_connections_are_closed_at_max_age_and_clients_reconnect(serving_repository):
    """A bounded connection age makes long-lived clients reconnect (and so re-resolve pods)."""
    config = server_config(serving_repository, max_connection_age_seconds=0.5, grace_seconds=1)
    states: list[grpc.ChannelConnectivity] = []
    ready = grpc.ChannelConnectivity.READY
    with ServerThread(config) as server, DigitClient(server.target) as client:
        client.classify("scratch_cnn", [digit_pixels(0)])
        client.channel.subscribe(states.append)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(state != ready for state in states):
            time.sleep(0.1)
        reply = client.classify("scratch_cnn", [digit_pixels(1)])
    assert states[0] == ready and any(state != ready for state in states), states
    assert len(reply.predictions) == 1  # the client simply reconnected
