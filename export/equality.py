"""Proof of equality: Keras, the reloaded SavedModel and ONNX Runtime agree before publishing."""

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from common.model_runtime import CUDA, Predict, predict_in_batches
from export.config import CPU_TOLERANCE, GPU_TOLERANCE, ExportOptions
from export.errors import EqualityError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backends:
    keras: Predict
    saved_model: Predict
    onnx: Predict
    onnx_provider: str


def keras_predictor(model: keras.Model) -> Predict:
    return lambda images: model(images, training=False).numpy()


def check_plan(count: int, options: ExportOptions) -> list[tuple[int, int]]:
    """(batch size, number of images) pairs: 1 on the first few, the odd size on all, one full."""
    full = min(count, options.full_batch_images)
    return [
        (1, min(count, options.batch_one_images)),
        (options.odd_batch_size, count),
        (full, full),
    ]


def tolerance_for(onnx_provider: str) -> float:
    on_gpu = onnx_provider == CUDA or bool(tf.config.list_physical_devices("GPU"))
    return GPU_TOLERANCE if on_gpu else CPU_TOLERANCE


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    return {
        "max_abs_diff": float(np.max(np.abs(reference - other))),
        "class_mismatches": int(np.sum(reference.argmax(1) != other.argmax(1))),
    }


def prove_equal(
    backends: Backends, images: np.ndarray, options: ExportOptions
) -> tuple[dict, np.ndarray]:
    """Compare both formats with Keras; raise EqualityError, or return the figures.

    Also returns ONNX Runtime's probabilities for every image (from the odd batch size).
    """
    tolerance = tolerance_for(backends.onnx_provider)
    checks, onnx_outputs = [], []
    for batch_size, count in check_plan(len(images), options):
        subset = images[:count]
        reference = predict_in_batches(backends.keras, subset, batch_size)
        check = {"batch_size": batch_size, "images": count}
        for name in ("saved_model", "onnx"):
            other = predict_in_batches(getattr(backends, name), subset, batch_size)
            check[name] = compare(reference, other)
        checks.append(check)
        onnx_outputs.append(other)
    report = {
        "tolerance": tolerance,
        "onnx_provider": backends.onnx_provider,
        "images": len(images),
        "checks": checks,
        "max_abs_diff": {
            name: max(check[name]["max_abs_diff"] for check in checks)
            for name in ("saved_model", "onnx")
        },
        "class_mismatches": {
            name: sum(check[name]["class_mismatches"] for check in checks)
            for name in ("saved_model", "onnx")
        },
    }
    failures = [
        f"{name}: max |diff| {report['max_abs_diff'][name]:.3g} (tolerance {tolerance:g}), "
        f"{report['class_mismatches'][name]} class mismatches"
        for name in ("saved_model", "onnx")
        if not report["max_abs_diff"][name] <= tolerance or report["class_mismatches"][name]
    ]
    if failures:
        raise EqualityError("equality check failed vs Keras: " + "; ".join(failures))
    log.info("equality proven on %d images: %s", len(images), report["max_abs_diff"])
    return report, onnx_outputs[1]
