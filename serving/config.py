"""Server configuration: every flag has a DIGITS_* environment twin (the flag wins)."""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError, non_negative_float, non_negative_int, positive_int
from common.contract import DEFAULT_OUTPUT
from common.images import DEFAULT_MAX_PIXELS
from common.repository import REPOSITORY_FOLDER
from common.settings import comma_list, parse_settings, setting
from serving.preprocess import PixelLimits

# Measured on the 2-core CPU of docs/serving.md: waiting only added latency; batches still
# form from the requests that queue while the previous run is busy.
DEFAULT_BATCH_DELAY_US = 0
PROVIDERS = ("auto", "cuda", "cpu")
LOG_FORMATS = ("json", "text")
EVENT_LOOPS = ("uvloop", "asyncio")
ENV_PREFIX = "DIGITS_"


@dataclass(frozen=True)
class ServerConfig:
    """Every setting of `python -m serving`; each has a DIGITS_* environment twin."""

    model_repository: Path = setting(
        Path(DEFAULT_OUTPUT) / REPOSITORY_FOLDER,
        "folder of <model>/<version>/model.onnx",
        parse=Path,
        metavar="DIR",
    )
    host: str = setting("127.0.0.1", "address to bind (0.0.0.0 in containers)", metavar="HOST")
    port: int = setting(8500, "gRPC port (0: any free port)", parse=non_negative_int)
    http_port: int = setting(
        8501,
        "HTTP/REST port: the Open Inference Protocol's REST API and /v1/models/M/classify"
        " (0 disables)",
        parse=non_negative_int,
    )
    metrics_port: int = setting(
        8502, "Prometheus /metrics port (0 disables)", parse=non_negative_int
    )
    models: tuple[str, ...] = setting(
        (), "models to serve (default: every model in the repository)", parse=comma_list
    )
    max_batch_size: int = setting(64, "most images merged into one inference", parse=positive_int)
    batch_delay_us: int = setting(
        DEFAULT_BATCH_DELAY_US,
        "how long a batch waits for more requests, microseconds (0: no wait)",
        parse=non_negative_int,
    )
    batching: bool = setting(True, "dynamic batching; off: every request runs alone")
    queue_capacity: int = setting(
        1024, "images waiting per model version before RESOURCE_EXHAUSTED", parse=positive_int
    )
    workers: int = setting(
        0,
        "serving processes sharing the ports (0: auto, one per core on CPU, one with a GPU)",
        parse=non_negative_int,
    )
    intra_op_threads: int = setting(
        0,
        "ONNX Runtime intra-op threads per process (0: its share of the cores with --workers, "
        "else ONNX Runtime's choice)",
        parse=non_negative_int,
    )
    provider: str = setting(
        "auto",
        "execution provider: auto (CUDA when it really loads, else CPU), cuda or cpu",
        choices=PROVIDERS,
    )
    max_message_bytes: int = setting(
        16 * 1024 * 1024, "largest request or reply message", parse=positive_int
    )
    max_images_per_request: int = setting(256, "most images in one request", parse=positive_int)
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "largest width x height accepted for one image (decompression bombs)",
        parse=positive_int,
    )
    max_request_pixels: int = setting(
        64_000_000,
        "largest width x height of all images of one request together (bounds its decode)",
        parse=positive_int,
    )
    max_inflight_requests: int = setting(
        256, "calls worked on at once; beyond it RESOURCE_EXHAUSTED at once", parse=positive_int
    )
    max_inflight_bytes: int = setting(
        64 * 1024 * 1024,
        "request bytes worked on at once (all calls); beyond it RESOURCE_EXHAUSTED at once",
        parse=positive_int,
    )
    poll_seconds: float = setting(
        5.0, "how often to look for new model versions (0: never)", parse=non_negative_float
    )
    grace_seconds: float = setting(
        10.0,
        "on SIGTERM/SIGINT, how long accepted requests may take to finish",
        parse=non_negative_float,
    )
    keep_versions: int = setting(2, "newest versions of each model kept loaded", parse=positive_int)
    max_connection_age_seconds: float = setting(
        300.0,
        "close client connections after this age so clients re-resolve and reach new pods"
        " (0: never)",
        parse=non_negative_float,
    )
    tls_cert: Path | None = setting(
        None, "TLS certificate chain (with --tls-key; unset: plaintext)", parse=Path, metavar="PEM"
    )
    tls_key: Path | None = setting(
        None, "TLS private key (with --tls-cert)", parse=Path, metavar="PEM"
    )
    tls_client_ca: Path | None = setting(
        None,
        "CA certificates: require and verify client certificates signed by them (mTLS)",
        parse=Path,
        metavar="PEM",
    )
    event_loop: str = setting(
        "uvloop", "event loop of each process: uvloop (faster) or asyncio", choices=EVENT_LOOPS
    )
    log_format: str = setting(
        "json", "log lines on stdout as JSON objects or text", choices=LOG_FORMATS
    )

    @property
    def batch_delay_s(self) -> float:
        return self.batch_delay_us / 1e6

    @property
    def pixel_limits(self) -> PixelLimits:
        return PixelLimits(per_image=self.max_pixels, per_request=self.max_request_pixels)


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """ServerConfig from flags, then DIGITS_* variables, then defaults; UserError if invalid."""
    config = parse_settings(
        ServerConfig(),
        prog="python -m serving",
        description="Serve the digit classifiers of a model repository over gRPC and HTTP "
        "(ONNX Runtime, dynamic batching, health, reflection, Prometheus metrics). "
        "Every option can also be set by its DIGITS_* environment variable; the flag wins.",
        argv=argv,
        env_prefix=ENV_PREFIX,
        environ=os.environ if environ is None else environ,
    )
    validate(config)
    return config


def validate(config: ServerConfig) -> None:
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
