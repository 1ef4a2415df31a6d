"""Running a published model, the one way serving, export and benchmarks all use.

- ONNX Runtime: a `ProviderChoice` decides once whether CUDA can be used here by loading a
  real session on it (never by asking TensorFlow or nvidia-smi), logs that decision, and
  creates every session with an explicit provider list; `session_options` holds the
  thread and optimisation settings.
- The SavedModel: its serving signature as a numpy -> numpy function.
- Pixels to the model's input, and prediction in batches.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.cli import UserError
from common.contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger("digits.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
SAVED_MODEL_SIGNATURE = "serving_default"
# ORT's default logger would print a red error for every provider that fails to load;
# the decision is logged here instead and ORT kept to errors only.
ORT_LOG_ERRORS = 3
ORT_LOG_FATAL = 4
OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

Predict = Callable[[np.ndarray], np.ndarray]


def session_options(
    intra_op_threads: int | None = None,
    spinning: bool | None = None,
    level: str = "all",
    optimized_path: Path | None = None,
    spin_between_runs: bool = True,
) -> ort.SessionOptions:
    """ONNX Runtime's defaults, except what is given: intra-op threads (0: ORT's choice),
    spin-waiting of idle threads (and whether they go on spinning once a run has returned),
    the optimisation level, where to save the optimised graph."""
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[level]
    options.log_severity_level = ORT_LOG_ERRORS
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    if not spin_between_runs:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def server_session_options(intra_op_threads: int) -> ort.SessionOptions:
    """One run at a time per session, all its threads inside it. Its threads spin between the
    operators of a run (woken from sleep for each operator instead, scratch_cnn's single
    image took 0.54 ms between requests against 0.33) and stop when the run returns: threads
    spinning between runs would take the cores that decode images and run gRPC meanwhile."""
    return session_options(intra_op_threads, spinning=True, spin_between_runs=False)


def cuda_provider() -> tuple[str, dict]:
    # HEURISTIC: no exhaustive cuDNN search for every new batch size.
    return (CUDA, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"})


class ProviderChoice:
    """`auto`, `cuda` or `cpu`, decided once, on the first session: CUDA (never TensorRT)
    only if that session really runs on it; `cuda` that cannot be had is a UserError."""

    def __init__(self, preference: str):
        self.preference = preference
        self.provider: str | None = CPU if preference == "cpu" else None
        ort.set_default_logger_severity(ORT_LOG_ERRORS)

    def providers(self) -> list:
        return [cuda_provider(), CPU] if self.provider == CUDA else [CPU]

    def create_session(
        self, model: Path | bytes, options: ort.SessionOptions | None = None
    ) -> ort.InferenceSession:
        """A session for an ONNX file or serialised model, on the chosen provider."""
        source = model if isinstance(model, bytes) else str(model)
        options = options or session_options()
        if self.provider is None:
            return self._probe(source, options)
        return ort.InferenceSession(source, options, providers=self.providers())

    def _probe(self, source: str | bytes, options: ort.SessionOptions) -> ort.InferenceSession:
        reason = "CUDAExecutionProvider is not in this onnxruntime build"
        if CUDA in ort.get_available_providers():
            ort.set_default_logger_severity(ORT_LOG_FATAL)  # a failed CUDA load is expected
            try:
                session = ort.InferenceSession(source, options, providers=[cuda_provider(), CPU])
            finally:
                ort.set_default_logger_severity(ORT_LOG_ERRORS)
            if session.get_providers()[0] == CUDA:
                self._decided(CUDA, "")
                return session
            reason = "CUDA libraries or GPU not available"
        if self.preference == "cuda":
            raise UserError(f"--provider cuda: {reason}")
        self._decided(CPU, reason)
        return ort.InferenceSession(source, options, providers=[CPU])

    def _decided(self, provider: str, reason: str) -> None:
        self.provider = provider
        because = f" ({reason})" if reason else ""
        extra = {"provider": provider} | ({"reason": reason} if reason else {})
        log.info(f"execution provider {provider}{because}", extra=extra)


def session_predict(session: ort.InferenceSession) -> Predict:
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def savedmodel_predict(folder: Path) -> Predict:
    """The SavedModel's serving signature as a numpy -> numpy function."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures[SAVED_MODEL_SIGNATURE]
    return lambda images: signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()


def as_model_input(pixels: np.ndarray) -> np.ndarray:
    """Pixels [N, H, W] or [N, H, W, 1], any number type, as the contract's contiguous
    float32 [N, H, W, 1] (raw 0..255 values)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., np.newaxis]
    return np.ascontiguousarray(pixels)


def predict_in_batches(predict: Predict, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """float32 [N, classes] for `pixels`, run in consecutive batches (the last may be smaller)."""
    batches = [
        predict(as_model_input(pixels[start : start + batch_size]))
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(batches).astype(np.float32)
