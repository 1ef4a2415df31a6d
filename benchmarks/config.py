"""Every default of the benchmarks, in one place."""

from dataclasses import dataclass, replace
from pathlib import Path

from common.cli import non_negative_float, positive_float, positive_int
from common.contract import DEFAULT_OUTPUT
from common.repository import REPOSITORY_FOLDER
from common.settings import comma_list, positive_ints, setting
from common.validation_split import VALIDATION_FILE

DEFAULT_REPOSITORY = Path(DEFAULT_OUTPUT) / REPOSITORY_FOLDER
DEFAULT_VALIDATION_FILE = Path(DEFAULT_OUTPUT) / VALIDATION_FILE
RESULTS_DIR = Path("benchmarks/results")
LATENCY_TARGETS = Path(__file__).resolve().parent / "targets" / "latency.json"
# The real client libraries' environment (`make clients`: tritonclient needs protobuf < 7).
CLIENTS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-clients" / "bin" / "python"
NOOP_MODEL = "noop"
CLASSIFY_METHOD = "/digits.v1.DigitClassifier/Classify"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LatencyConfig:
    """What `python -m benchmarks.latency` measures, and for how long."""

    concurrencies: tuple[int, ...] = setting(
        (1, 4, 16, 64), "concurrency levels", parse=positive_ints, flag="--concurrency"
    )
    images_per_request: tuple[int, ...] = setting((1, 8), "images per request", parse=positive_ints)
    batch_sizes: tuple[int, ...] = setting(
        (1, 2, 4, 8, 16, 32, 64), "reference batch sizes", parse=positive_ints
    )
    warmup_s: float = setting(
        1.0, "seconds of warm-up per cell", parse=non_negative_float, flag="--warmup"
    )
    duration_s: float = setting(
        5.0, "measured seconds per cell", parse=positive_float, flag="--duration"
    )
    reference_seconds: float = setting(
        1.0, "seconds per reference batch size, per format", parse=positive_float
    )
    reference_min_runs: int = 3
    paired_reference_s: float = 1.0  # raw ORT at the cell's batch size, just before each cell
    max_expected_latency_s: float = 10.0  # cells expected to be slower than this are skipped
    request_timeout_s: float = 60.0
    server_start_timeout_s: float = 180.0
    max_batch_size: int = setting(64, "the started servers' --max-batch-size", parse=positive_int)
    payload: str = setting("png", "what requests carry: encoded PNG or raw uint8 pixels",
                           choices=("png", "raw"))  # fmt: skip
    distinct_requests: int = 8  # the load generator cycles through this many prepared requests


QUICK = dict(
    concurrencies=(1, 16),
    warmup_s=0.3,
    duration_s=1.5,
    reference_seconds=0.3,
    paired_reference_s=0.3,
    max_expected_latency_s=3.0,
)


def quick(config: LatencyConfig) -> LatencyConfig:
    """The `--quick` variant: fewer, shorter cells (a smoke run, not figures to quote)."""
    return replace(config, **QUICK)


@dataclass(frozen=True)
class EvaluatedModels:
    """Which published models a benchmark measures, and on which images."""

    model_repository: Path = setting(DEFAULT_REPOSITORY, "model repository", parse=Path)
    models: tuple[str, ...] = setting(
        (), "models (unset: every model in the repository)", parse=comma_list
    )
    validation_file: Path = setting(
        DEFAULT_VALIDATION_FILE, "training's validation split", parse=Path
    )
