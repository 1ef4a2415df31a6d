"""The server under test: started here as a subprocess on loopback, or one already running."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.config import HEALTH_SERVICE
from common.cli import UserError

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_serving(target: str, timeout_s: float = 2.0) -> bool:
    """Whether the gRPC health service at `target` says the classifier is SERVING."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == SERVING


def require_serving(target: str) -> None:
    """Check a server we did not start; a user error if it does not answer SERVING."""
    if not is_serving(target, timeout_s=5.0):
        raise UserError(f"no SERVING digits server reachable at {target}")


def last_line(path: Path) -> str:
    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def started_record(log_file: Path) -> dict:
    """The server's JSON "server started" log line (models, versions, provider), if found."""
    for line in Path(log_file).read_text(errors="replace").splitlines():
        if "server started" in line:
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {"line": line.strip()}
    return {}


class ServerProcess:
    """`python -m serving` on 127.0.0.1 for the duration of a `with` block."""

    def __init__(
        self,
        repository: Path,
        batching: bool,
        log_file: Path,
        max_batch_size: int = 64,
        start_timeout_s: float = 180.0,
        extra_args: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_file = Path(log_file)
        self.start_timeout_s = start_timeout_s
        self.command = [
            sys.executable,
            "-m",
            "serving",
            "--model-repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            "0",
            "--max-batch-size",
            str(max_batch_size),
            "--grace-seconds",
            "1",
            "--log-format",
            "json",
            *([] if batching else ["--no-batching"]),
            *extra_args,
        ]
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> "ServerProcess":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        self.wait_until_serving()
        return self

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"server exited at start: {last_line(self.log_file)}")
            if is_serving(self.target, timeout_s=1.0):
                return
            time.sleep(0.2)
        self.stop()
        raise UserError(
            f"server not SERVING after {self.start_timeout_s:.0f} s (log: {self.log_file})"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __exit__(self, *exc_info) -> None:
        self.stop()
