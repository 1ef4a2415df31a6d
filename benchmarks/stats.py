"""Latency summaries: percentiles in milliseconds, never NaN (None when there is no sample)."""

import numpy as np

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}


def latency_summary(seconds: list[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/max/mean of latencies given in seconds, reported in ms."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {name: None for name in (*PERCENTILES, "max", "mean")}
    summary = {name: float(np.percentile(values, q)) for name, q in PERCENTILES.items()}
    summary["max"] = float(values.max())
    summary["mean"] = float(values.mean())
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)
