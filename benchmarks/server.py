"""The server under test: started here as a subprocess on loopback, or one already running."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from common.cli import UserError
from common.cpu import tree_cpu_seconds
from serving.healthcheck import SERVICE_NAME, health_status

ROOT = Path(__file__).resolve().parents[1]


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


def parsed_line(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {"text": line.strip()}


class ServerProcess:
    """`python -m serving ARGS` (or another `module`'s command line) as a child process for
    the duration of a `with` block (tests and benchmarks): ready once it logs "server
    started"; every output line is kept in `lines` (and written to `log_file`, if given); on
    exit SIGTERM, then a kill after 30 s."""

    def __init__(
        self,
        *args: str,
        log_file: Path | None = None,
        env: dict | None = None,
        cwd: Path | None = None,  # None: this checkout; else another one's `python -m serving`
        start_timeout_s: float = 180.0,
        module: str = "serving",
    ):
        self.command = [sys.executable, "-m", module, *args]
        # No HTTP port unless asked for (a --http-port flag wins over the variable).
        self.env = {"DIGITS_HTTP_PORT": "0", **os.environ, **(env or {})}
        self.log_file, self.cwd, self.start_timeout_s = log_file, cwd, start_timeout_s
        self.lines: list[str] = []
        self.started: dict | None = None
        self.process: subprocess.Popen | None = None
        self._ready = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.started['port']}"

    def probe(self) -> "ServerProbe":
        port = (self.started or {}).get("metrics_port")
        return ServerProbe(self.pid, f"http://127.0.0.1:{port}/metrics" if port else None)

    def messages(self) -> list[str]:
        return [parsed_line(line).get("message", "") for line in self.lines]

    def _read(self) -> None:
        log = open(self.log_file, "w") if self.log_file else None  # noqa: SIM115
        try:
            for line in self.process.stdout:
                self.lines.append(line)
                if log:
                    log.write(line)
                    log.flush()
                if "server started" in line and self.started is None:
                    self.started = parsed_line(line)
                    self._ready.set()
        finally:
            self._ready.set()  # exited
            if log:
                log.close()

    def __enter__(self) -> "ServerProcess":
        if self.log_file:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd or ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(self.start_timeout_s) or self.started is None:
            self.stop()
            last = self.lines[-1].strip()[-300:] if self.lines else "(no output)"
            raise UserError(f"server did not start: {last}")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def benchmark_server(
    repository: Path,
    batching: bool,
    log_file: Path,
    *extra_args: str,
    max_batch_size: int = 64,
    cwd: Path | None = None,
    start_timeout_s: float = 180.0,
) -> ServerProcess:
    """The server a benchmark drives: loopback, any free port, JSON logs, metrics on."""
    return ServerProcess(
        "--model-repository", str(repository), "--host", "127.0.0.1", "--port", "0",
        "--metrics-port", str(free_port()), "--max-batch-size", str(max_batch_size),
        "--grace-seconds", "1", "--log-format", "json",
        *([] if batching else ["--no-batching"]), *extra_args,
        log_file=log_file, cwd=cwd, start_timeout_s=start_timeout_s,
    )  # fmt: skip


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
    """CPU seconds of another process and its worker processes (None where unavailable)."""
    return None if pid is None else tree_cpu_seconds(pid)


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
