"""What ONNX Runtime's graph optimisations give on this machine, measured at export time."""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from export.runtime import OPTIMIZATION_LEVELS, make_session, session_predictor


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def latencies_ms(session, images: np.ndarray, batch_sizes, repeats: int) -> dict[str, float]:
    """Median wall time of one run per batch size, after one warm-up run."""
    predict = session_predictor(session)
    result = {}
    for batch_size in batch_sizes:
        batch = np.resize(images, (batch_size, *images.shape[1:]))
        predict(batch)
        runs = [_timed(lambda b=batch: predict(b)) for _ in range(repeats)]
        result[f"batch_{batch_size}_ms"] = round(statistics.median(runs) * 1000, 3)
    return result


def _measure(model: Path, providers, level: str, images, batch_sizes, repeats, saved=None):
    session = None

    def load():
        nonlocal session
        session = make_session(model, providers, level, optimized_path=saved)

    figures = {"session_load_ms": round(_timed(load) * 1000, 1)}
    return figures | latencies_ms(session, images, batch_sizes, repeats)


def measure_optimizations(
    model: Path, providers: list[str], images: np.ndarray, batch_sizes, repeats: int
) -> dict:
    """Load time and latency at each optimisation level, and of a graph saved pre-optimised.

    The pre-optimised graph is written by ONNX Runtime at level "all" and reloaded with
    optimisations disabled; it is only valid on hardware like this machine's.
    """
    levels = {
        level: _measure(model, providers, level, images, batch_sizes, repeats)
        for level in OPTIMIZATION_LEVELS
    }
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "model.optimized.onnx"
        make_session(model, providers, "all", optimized_path=optimized)
        levels["saved_optimized_graph"] = _measure(
            optimized, providers, "disabled", images, batch_sizes, repeats
        )
    return {"provider": providers[0], "repeats": repeats, "levels": levels}


def save_optimized_graph(model: Path, providers: list[str], destination: Path) -> None:
    """Let ONNX Runtime write its fully optimised graph (hardware-specific) to `destination`."""
    make_session(model, providers, "all", optimized_path=destination)
