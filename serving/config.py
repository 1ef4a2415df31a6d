"""Server configuration: every flag has a DIGITS_* environment twin (the flag wins)."""

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import ArgumentParser, UserError, non_negative_int, positive_int
from common.contract import DEFAULT_OUTPUT
from common.images import DEFAULT_MAX_PIXELS
from common.repository import REPOSITORY_FOLDER
from serving.preprocess import PixelLimits

# Measured on the 2-core CPU of docs/serving.md: waiting only added latency; batches still
# form from the requests that queue while the previous run is busy.
DEFAULT_BATCH_DELAY_US = 0
PROVIDERS = ("auto", "cuda", "cpu")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class ServerConfig:
    model_repository: Path = Path(DEFAULT_OUTPUT) / REPOSITORY_FOLDER
    host: str = "127.0.0.1"
    port: int = 8500
    metrics_port: int = 8502
    http_port: int = 8501
    models: tuple[str, ...] = ()  # empty: every model in the repository
    max_batch_size: int = 64
    batch_delay_us: int = DEFAULT_BATCH_DELAY_US
    batching: bool = True
    queue_capacity: int = 1024
    intra_op_threads: int = 0
    provider: str = "auto"
    max_message_bytes: int = 16 * 1024 * 1024
    max_images_per_request: int = 256
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_request_pixels: int = 64_000_000
    max_inflight_requests: int = 256
    max_inflight_bytes: int = 64 * 1024 * 1024
    poll_seconds: float = 5.0
    grace_seconds: float = 10.0
    keep_versions: int = 2
    max_connection_age_seconds: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    log_format: str = "json"

    @property
    def batch_delay_s(self) -> float:
        return self.batch_delay_us / 1e6

    @property
    def pixel_limits(self) -> PixelLimits:
        return PixelLimits(per_image=self.max_pixels, per_request=self.max_request_pixels)


def seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def model_list(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


# flag, environment variable, type, ServerConfig field, metavar, help
_OPTIONS = (
    (
        "--model-repository",
        "DIGITS_MODEL_REPOSITORY",
        Path,
        "model_repository",
        "DIR",
        "folder of <model>/<version>/model.onnx",
    ),
    ("--host", "DIGITS_HOST", str, "host", "HOST", "address to bind (0.0.0.0 in containers)"),
    ("--port", "DIGITS_PORT", non_negative_int, "port", "PORT", "gRPC port (0: any free port)"),
    (
        "--http-port",
        "DIGITS_HTTP_PORT",
        non_negative_int,
        "http_port",
        "PORT",
        "HTTP/REST port: the Open Inference Protocol's REST API and /v1/models/M/classify"
        " (0 disables)",
    ),
    (
        "--metrics-port",
        "DIGITS_METRICS_PORT",
        non_negative_int,
        "metrics_port",
        "PORT",
        "Prometheus /metrics port (0 disables)",
    ),
    (
        "--models",
        "DIGITS_MODELS",
        model_list,
        "models",
        "A,B",
        "models to serve (default: every model in the repository)",
    ),
    (
        "--max-batch-size",
        "DIGITS_MAX_BATCH_SIZE",
        positive_int,
        "max_batch_size",
        "N",
        "most images merged into one inference",
    ),
    (
        "--batch-delay-us",
        "DIGITS_BATCH_DELAY_US",
        non_negative_int,
        "batch_delay_us",
        "US",
        "how long a batch waits for more requests, microseconds (0: no wait)",
    ),
    (
        "--queue-capacity",
        "DIGITS_QUEUE_CAPACITY",
        positive_int,
        "queue_capacity",
        "N",
        "images waiting per model version before RESOURCE_EXHAUSTED",
    ),
    (
        "--intra-op-threads",
        "DIGITS_INTRA_OP_THREADS",
        non_negative_int,
        "intra_op_threads",
        "N",
        "ONNX Runtime intra-op threads (0: ONNX Runtime's choice)",
    ),
    (
        "--provider",
        "DIGITS_PROVIDER",
        str,
        "provider",
        "{auto,cuda,cpu}",
        "execution provider: auto (CUDA when it really loads, else CPU), cuda or cpu",
    ),
    (
        "--max-message-bytes",
        "DIGITS_MAX_MESSAGE_BYTES",
        positive_int,
        "max_message_bytes",
        "N",
        "largest request or reply message",
    ),
    (
        "--max-images-per-request",
        "DIGITS_MAX_IMAGES_PER_REQUEST",
        positive_int,
        "max_images_per_request",
        "N",
        "most images in one request",
    ),
    (
        "--max-pixels",
        "DIGITS_MAX_PIXELS",
        positive_int,
        "max_pixels",
        "N",
        "largest width x height accepted for one image (decompression bombs)",
    ),
    (
        "--max-request-pixels",
        "DIGITS_MAX_REQUEST_PIXELS",
        positive_int,
        "max_request_pixels",
        "N",
        "largest width x height of all images of one request together (bounds its decode)",
    ),
    (
        "--max-inflight-requests",
        "DIGITS_MAX_INFLIGHT_REQUESTS",
        positive_int,
        "max_inflight_requests",
        "N",
        "calls worked on at once; beyond it RESOURCE_EXHAUSTED at once",
    ),
    (
        "--max-inflight-bytes",
        "DIGITS_MAX_INFLIGHT_BYTES",
        positive_int,
        "max_inflight_bytes",
        "N",
        "request bytes worked on at once (all calls); beyond it RESOURCE_EXHAUSTED at once",
    ),
    (
        "--poll-seconds",
        "DIGITS_POLL_SECONDS",
        seconds,
        "poll_seconds",
        "S",
        "how often to look for new model versions (0: never)",
    ),
    (
        "--grace-seconds",
        "DIGITS_GRACE_SECONDS",
        seconds,
        "grace_seconds",
        "S",
        "on SIGTERM/SIGINT, how long accepted requests may take to finish",
    ),
    (
        "--max-connection-age-seconds",
        "DIGITS_MAX_CONNECTION_AGE_SECONDS",
        seconds,
        "max_connection_age_seconds",
        "S",
        "close client connections after this age so clients re-resolve and reach new pods"
        " (0: never)",
    ),
    (
        "--keep-versions",
        "DIGITS_KEEP_VERSIONS",
        positive_int,
        "keep_versions",
        "N",
        "newest versions of each model kept loaded",
    ),
    (
        "--tls-cert",
        "DIGITS_TLS_CERT",
        Path,
        "tls_cert",
        "PEM",
        "TLS certificate chain (with --tls-key; unset: plaintext)",
    ),
    ("--tls-key", "DIGITS_TLS_KEY", Path, "tls_key", "PEM", "TLS private key (with --tls-cert)"),
    (
        "--tls-client-ca",
        "DIGITS_TLS_CLIENT_CA",
        Path,
        "tls_client_ca",
        "PEM",
        "CA certificates: require and verify client certificates signed by them (mTLS)",
    ),
    (
        "--log-format",
        "DIGITS_LOG_FORMAT",
        str,
        "log_format",
        "{json,text}",
        "log lines on stdout as JSON objects or text",
    ),
)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m serving",
        description="Serve the digit classifiers of a model repository over gRPC "
        "(ONNX Runtime, dynamic batching, health, reflection, Prometheus metrics). "
        "Every option can also be set by its DIGITS_* environment variable; the flag wins.",
    )
    defaults = ServerConfig()
    for flag, env, kind, field, metavar, text in _OPTIONS:
        default = getattr(defaults, field)
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=environ.get(env) or default,
            metavar=metavar,
            help=f"{text} [{env}; default {'unset' if shown in ('', None) else shown}]",
        )
    parser.add_argument(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="run every request alone, without dynamic batching",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None):
    """ServerConfig from flags, then DIGITS_* variables, then defaults; UserError if invalid."""
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    config = ServerConfig(**vars(args))
    validate(config)
    return config


def validate(config: ServerConfig) -> None:
    if config.provider not in PROVIDERS:
        raise UserError(f"--provider must be one of {', '.join(PROVIDERS)}, not {config.provider}")
    if config.log_format not in LOG_FORMATS:
        raise UserError(f"--log-format must be json or text, not {config.log_format}")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together")
    if config.max_inflight_bytes < config.max_message_bytes:
        raise UserError(
            "--max-inflight-bytes must be at least --max-message-bytes (one largest request)"
        )
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise UserError("--tls-client-ca needs --tls-cert and --tls-key (mTLS is over TLS)")
    for path in (config.tls_cert, config.tls_key, config.tls_client_ca):
        if path is not None and not path.is_file():
            raise UserError(f"TLS file not found: {path}")
