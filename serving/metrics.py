"""Prometheus metrics of one server, in its own registry (several servers fit one process).

/metrics is served by prometheus_client's WSGI app on a threaded server whose connections
time out and whose threads are bounded, so idle or half-open connections cannot pile up.
"""

import socket
import threading
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
)

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


class ServerMetrics:
    def __init__(self) -> None:
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
        )

        self.versions_refused = Counter(
            "digits_model_versions_refused",
            "Model versions that failed their load checks and were not served.",
            ["model"],
            registry=self.registry,
        )

    def observe_request(self, model: str, status: str, seconds: float) -> None:
        self.requests.labels(model, status).inc()
        self.latency.labels(model, status).observe(seconds)

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
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server = make_server(
            host,
            port,
            make_wsgi_app(self.registry),
            server_class=type("MetricsServer", (BoundedMetricsServer,), {"address_family": family}),
            handler_class=QuietHandler,
        )
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server
