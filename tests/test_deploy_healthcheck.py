"""`python -m serving.healthcheck` (the image's HEALTHCHECK) against a real gRPC health service."""

import os
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving.healthcheck import SERVICE_NAME, main
from tests.serving_support import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def health_server():
    """A gRPC server on 127.0.0.1 with only the standard health service: (servicer, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def test_serving_passes_not_serving_fails(health_server, capsys):
    servicer, port = health_server
    servicer.set(SERVICE_NAME, NOT_SERVING)
    assert main(["--port", str(port)]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err

    servicer.set(SERVICE_NAME, SERVING)
    assert main(["--port", str(port)]) == 0
    # The overall service "" is asked separately; an unknown name is NOT_FOUND, not SERVING.
    assert main(["--port", str(port), "--service", ""]) == 0
    assert main(["--port", str(port), "--service", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_port_comes_from_the_servers_environment_variable(health_server, monkeypatch):
    servicer, port = health_server
    servicer.set(SERVICE_NAME, SERVING)
    monkeypatch.setenv("DIGITS_PORT", str(port))
    assert main([]) == 0


def test_nobody_listening_is_one_line_and_exit_1():
    result = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck", "--port", str(free_port()), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "UNAVAILABLE" in result.stderr


def test_missing_tls_certificate_is_a_user_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck", "--tls-cert", str(tmp_path / "none.pem")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: TLS certificate not found")
        and "Traceback" not in result.stderr
    )


def test_bad_port_variable_is_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck"],
        env={**os.environ, "DIGITS_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    # names the variable the bad value came from, and its flag
    assert (
        result.stderr.strip() == "error: DIGITS_PORT='eighty' (--port): invalid int value: 'eighty'"
    )
