"""In-process references: the model run directly, without server or network, per batch size.

Raw ONNX Runtime is the ceiling a server can approach; the TF SavedModel is the format
TF Serving would run. Both see the same pixels as the server (float32 0..255).
"""

import time
from collections.abc import Callable

import numpy as np

from benchmarks.stats import latency_summary
from common.model_runtime import Predict, as_model_input


def time_batch(
    predict: Predict,
    batch: np.ndarray,
    seconds: float,
    min_runs: int,
    warmup_runs: int = 2,
    pause_s: float = 0.0,
) -> dict:
    """Run one batch repeatedly for about `seconds` (at least min_runs times) after a warm-up,
    back to back, or each run `pause_s` after the last (untimed) as a lone caller's comes:
    after its round trip, with the runtime's threads asleep and its caches cold."""
    for _ in range(warmup_runs):
        predict(batch)
    latencies: list[float] = []
    cpu_start = time.process_time()
    deadline = time.perf_counter() + seconds
    while len(latencies) < min_runs or time.perf_counter() < deadline:
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        predict(batch)
        latencies.append(time.perf_counter() - start)
    cpu_seconds = time.process_time() - cpu_start
    summary = latency_summary(latencies)
    return {
        "batch_size": len(batch),
        "runs": len(latencies),
        "median_ms": summary["p50"],
        "p99_ms": summary["p99"],
        "mean_ms": summary["mean"],
        "images_per_s": len(batch) * len(latencies) / sum(latencies),
        "cpu_ms_per_image": 1000 * cpu_seconds / (len(batch) * len(latencies)),
    }


def sweep(
    predict: Predict,
    pixels: np.ndarray,
    batch_sizes: tuple[int, ...],
    seconds: float,
    min_runs: int,
    on_batch: Callable[[int], None] = lambda size: None,
) -> list[dict]:
    """time_batch at every batch size, on the first `size` sample images."""
    rows = []
    for size in batch_sizes:
        batch = as_model_input(np.resize(pixels, (size, *pixels.shape[1:])))
        rows.append(time_batch(predict, batch, seconds, min_runs))
        on_batch(size)
    return rows


def row_at(rows: list[dict], batch_size: int) -> dict | None:
    """The measured row with the largest batch size not above `batch_size`."""
    fitting = [row for row in rows if row["batch_size"] <= batch_size]
    return max(fitting, key=lambda row: row["batch_size"]) if fitting else None


def ceiling(rows: list[dict]) -> dict | None:
    """The row with the most images per second: the best the runtime does on this machine."""
    return max(rows, key=lambda row: row["images_per_s"]) if rows else None


def best_per_batch(variants: dict[str, list[dict]]) -> list[dict]:
    """Per batch size, the faster of several configurations' rows (tagged with its name)."""
    best: dict[int, dict] = {}
    for name, rows in variants.items():
        for row in rows:
            size = row["batch_size"]
            if size not in best or row["images_per_s"] > best[size]["images_per_s"]:
                best[size] = {**row, "variant": name}
    return [best[size] for size in sorted(best)]
