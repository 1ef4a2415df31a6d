"""What ONNX Runtime's graph optimisations give on this machine, measured at export time.

All variants are loaded first and then timed in interleaved rounds (one run of each per
round), so background load on a shared machine hits every variant alike.
"""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.model_runtime import (
    OPTIMIZATION_LEVELS,
    ProviderChoice,
    session_options,
    session_predict,
)

SAVED_GRAPH = "saved_optimized_graph"


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def latencies_ms(
    sessions: dict[str, ort.InferenceSession],
    images: np.ndarray,
    batch_sizes,
    repeats: int,
    budget_seconds: float = 20.0,
) -> dict[str, dict[str, float]]:
    """Median wall time of one run, per session and batch size, after one warm-up run.

    Stops early (after at least 3 rounds) once a batch size has used `budget_seconds`.
    """
    result: dict[str, dict[str, float]] = {name: {} for name in sessions}
    predictors = {name: session_predict(session) for name, session in sessions.items()}
    for batch_size in batch_sizes:
        batch = np.resize(images, (batch_size, *images.shape[1:]))
        runs: dict[str, list[float]] = {name: [] for name in sessions}
        for predict in predictors.values():
            predict(batch)
        started = time.perf_counter()
        for round_number in range(repeats):
            if round_number >= 3 and time.perf_counter() - started > budget_seconds:
                break
            for name, predict in predictors.items():
                runs[name].append(_timed(lambda p=predict, b=batch: p(b)))
        for name, times in runs.items():
            result[name][f"batch_{batch_size}_ms"] = round(statistics.median(times) * 1000, 3)
    return result


def measure_optimizations(
    model: Path, choice: ProviderChoice, images: np.ndarray, batch_sizes, repeats: int
) -> dict:
    """Load time and latency at each optimisation level, and of a graph saved pre-optimised.

    The pre-optimised graph is written by ONNX Runtime at level "all" and reloaded with
    optimisations disabled; it is only valid on hardware like this machine's.
    """
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "model.optimized.onnx"
        save_optimized_graph(model, choice, optimized)
        variants = {level: (model, level) for level in OPTIMIZATION_LEVELS}
        variants[SAVED_GRAPH] = (optimized, "disabled")
        sessions, load_ms = {}, {}
        for name, (path, level) in variants.items():
            start = time.perf_counter()
            sessions[name] = choice.create_session(path, session_options(level=level))
            load_ms[name] = round((time.perf_counter() - start) * 1000, 1)
        timings = latencies_ms(sessions, images, batch_sizes, repeats)
    levels = {name: {"session_load_ms": load_ms[name], **timings[name]} for name in variants}
    provider = next(iter(sessions.values())).get_providers()[0]
    return {"provider": provider, "max_rounds": repeats, "levels": levels}


def save_optimized_graph(model: Path, choice: ProviderChoice, destination: Path) -> None:
    """Let ONNX Runtime write its fully optimised graph (hardware-specific) to `destination`."""
    choice.create_session(model, session_options(optimized_path=destination))
