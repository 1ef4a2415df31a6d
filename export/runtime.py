"""ONNX Runtime sessions with an explicit providers list, and batched prediction helpers."""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf

from common.contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

Predictor = Callable[[np.ndarray], np.ndarray]


def gpu_visible() -> bool:
    """A CUDA device both TensorFlow and ONNX Runtime could use."""
    return bool(tf.config.list_physical_devices("GPU")) and CUDA in ort.get_available_providers()


def providers_for(choice: str) -> list[str]:
    """auto: CUDA then CPU when a GPU is visible, else CPU only (no failed-CUDA warnings)."""
    if choice == "cpu" or (choice == "auto" and not gpu_visible()):
        return [CPU]
    return [CUDA, CPU]


def make_session(
    model: Path | bytes,
    providers: list[str],
    level: str = "all",
    optimized_path: Path | None = None,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[level]
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def session_predictor(session: ort.InferenceSession) -> Predictor:
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8/float [N,100,100] or [N,100,100,1] pixels to the contract's float32 [N,100,100,1]."""
    images = np.asarray(images, dtype=np.float32)
    return images[..., np.newaxis] if images.ndim == 3 else images


def predict_batched(predict: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Run `predict` over `images` in consecutive batches (the last one may be smaller)."""
    batches = [predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(batches).astype(np.float32)
