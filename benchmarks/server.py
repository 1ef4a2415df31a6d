"""The server under test: started here as a subprocess on loopback, or one already running."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from common.cli import UserError
from serving.healthcheck import SERVICE_NAME, health_status


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_serving(target: str, timeout_s: float = 2.0) -> bool:
    """Whether the gRPC health service at `target` says the classifier is SERVING."""
    with grpc.insecure_channel(target) as channel:
        return health_status(channel, SERVICE_NAME, timeout_s) == "SERVING"


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
        cwd: Path | None = None,
    ):
        self.cwd = cwd  # None: this checkout; else another one's `python -m serving`
        self.port = free_port()
        self.metrics_port = free_port()
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
            str(self.metrics_port),
            "--http-port",
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

    def probe(self) -> "ServerProbe":
        return ServerProbe(self.pid, f"http://127.0.0.1:{self.metrics_port}/metrics")

    def __enter__(self) -> "ServerProcess":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
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


# Histograms of the server's /metrics read per cell (sum and count deltas, per model).
BATCH_SIZE_METRIC = "digits_batch_size"
INFERENCE_METRIC = "digits_inference_seconds"


class ServerProbe:
    """Snapshots of a server we started: its CPU time and its batching histograms."""

    def __init__(self, pid: int | None = None, metrics_url: str | None = None):
        self.pid = pid
        self.metrics_url = metrics_url

    def snapshot(self) -> dict:
        return {"cpu_s": process_cpu_seconds(self.pid), "metrics": self.histograms()}

    def histograms(self) -> dict[tuple[str, str, str], float]:
        """{(metric, model, "sum" | "count"): value} for the batching histograms."""
        if self.metrics_url is None:
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return {}
        values = {}
        for family in text_string_to_metric_families(text):
            if family.name not in (BATCH_SIZE_METRIC, INFERENCE_METRIC):
                continue
            for sample in family.samples:
                kind = sample.name.removeprefix(family.name + "_")
                if kind in ("sum", "count"):
                    values[(family.name, sample.labels.get("model", ""), kind)] = sample.value
        return values


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of another process, from /proc (None where unavailable)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_deltas(model: str, start: dict, end: dict, seconds: float) -> dict:
    """What the server did during a window: CPU, ONNX Runtime runs, mean batch, busy share."""
    cpu = None if None in (start["cpu_s"], end["cpu_s"]) else end["cpu_s"] - start["cpu_s"]

    def delta(metric: str, kind: str) -> float | None:
        key = (metric, model, kind)
        if key not in end["metrics"]:
            return None
        return end["metrics"][key] - start["metrics"].get(key, 0.0)

    runs, images = delta(BATCH_SIZE_METRIC, "count"), delta(BATCH_SIZE_METRIC, "sum")
    busy = delta(INFERENCE_METRIC, "sum")
    return {
        "server_cpu_s": cpu,
        "server_inference_runs": runs,
        "server_mean_batch_size": images / runs if runs else None,
        "server_inference_busy_share": None if busy is None else busy / seconds,
    }
