"""Prometheus metrics of one server, in its own registry (several servers fit one process).

/metrics is served by prometheus_client's WSGI app on a threaded server whose connections
time out and whose threads are bounded, so idle or half-open connections cannot pile up.
"""

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.cli import UserError
from common.cpu import process_usage

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


METRICS_CONNECTION_TIMEOUT_S = 5.0
METRICS_MAX_CONNECTIONS = 16


class QuietHandler(WSGIRequestHandler):
    timeout = METRICS_CONNECTION_TIMEOUT_S  # a silent or half-open client is dropped

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


class BoundedMetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most METRICS_MAX_CONNECTIONS at once (others are closed)."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(METRICS_MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


@dataclass(frozen=True)
class ModelMetrics:
    batch_size: Histogram
    inference: Histogram
    queue_depth: Gauge


class ServerMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, str], tuple] = {}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process memory, CPU seconds, open files
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "digits_requests",
            "Classify requests answered, by model and gRPC status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digits_request_latency_seconds",
            "Time from receiving a Classify request to its answer.",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "digits_batch_size",
            "Images per ONNX Runtime run.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "digits_queue_depth",
            "Images waiting for a batch.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",  # with --workers: the waiting images of all workers
        )
        self.inference = Histogram(
            "digits_inference_seconds",
            "Duration of one ONNX Runtime run (one batch).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.default_version = Gauge(
            "digits_model_version",
            "The version answering by default, per model.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )

        self.versions_refused = Counter(
            "digits_model_versions_refused",
            "Model versions that failed their load checks and were not served.",
            ["model"],
            registry=self.registry,
        )

    def observe_request(self, model: str, status: str, seconds: float) -> None:
        counter, latency = self._request_children(model, status)
        counter.inc()
        latency.observe(seconds)

    def _request_children(self, model: str, status: str) -> tuple:
        """The labelled children of one (model, status), looked up once: labels() takes a
        lock and builds a tuple on every call, and this runs once per request."""
        key = (model, status)
        if (children := self._children.get(key)) is None:
            children = self._children[key] = (
                self.requests.labels(model, status),
                self.latency.labels(model, status),
            )
        return children

    def for_model(self, model: str) -> "ModelMetrics":
        """The per-batch metrics of one model, labelled once (see _request_children)."""
        return ModelMetrics(
            self.batch_size.labels(model),
            self.inference.labels(model),
            self.queue_depth.labels(model),
        )

    def answered(self, status: str) -> int:
        """Requests answered with `status` since start, all models together."""
        return int(
            sum(
                sample.value
                for family in self.requests.collect()
                for sample in family.samples
                if sample.name.endswith("_total") and sample.labels["status"] == status
            )
        )

    def serve(self, host: str, port: int) -> BoundedMetricsServer:
        """Expose /metrics over HTTP; returns the HTTP server (shutdown() stops it)."""
        return serve_registry(self.registry, host, port)


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> BoundedMetricsServer:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server = make_server(
        host,
        port,
        make_wsgi_app(registry),
        server_class=type("MetricsServer", (BoundedMetricsServer,), {"address_family": family}),
        handler_class=QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class WorkersCollector(Collector):
    """Each worker process's CPU seconds and resident memory, read from /proc."""

    def __init__(self, pids: Callable[[], list[int]]):
        self.pids = pids

    def collect(self):
        cpu = CounterMetricFamily(
            "digits_worker_cpu_seconds", "CPU time of each worker process.", labels=["worker"]
        )
        memory = GaugeMetricFamily(
            "digits_worker_resident_memory_bytes",
            "Resident memory of each worker.",
            labels=["worker"],
        )
        for index, pid in enumerate(self.pids()):
            usage = process_usage(pid)
            if usage is not None:
                cpu.add_metric([str(index)], usage[0])
                memory.add_metric([str(index)], usage[1])
        yield cpu
        yield memory


def serve_multiprocess_metrics(
    folder: Path, host: str, port: int, pids: Callable[[], list[int]]
) -> BoundedMetricsServer:
    """/metrics of all workers together (prometheus_client's multiprocess mode: each worker
    writes its values to files in `folder`), and each worker's CPU and memory."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    registry.register(WorkersCollector(pids))
    try:
        return serve_registry(registry, host, port)
    except OSError as error:
        raise UserError(f"cannot serve metrics on {host}:{port}: {error.strerror}") from None
