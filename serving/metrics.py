"""Prometheus metrics of one server, in its own registry (several servers fit one process)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def observe_request(self, model: str, status: str, seconds: float) -> None:
        self.requests.labels(model, status).inc()
        self.latency.labels(model, status).observe(seconds)

    def serve(self, host: str, port: int):
        """Expose /metrics over HTTP; returns the HTTP server (shutdown() stops it)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
