"""Load one published model version as an ONNX Runtime session or a TF SavedModel."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.cli import UserError
from common.contract import INPUT_NAME, OUTPUT_NAME
from common.repository import ONNX_FILE, latest_version, list_models, version_dir

Predict = Callable[[np.ndarray], np.ndarray]
# Raw ONNX Runtime is timed twice: with its own defaults (busy-waiting threads) and with the
# server's session options (no spinning); the better of the two at each batch is the ceiling.
DEFAULTS, SERVER_OPTIONS = "defaults", "server_options"
ORT_VARIANTS = (DEFAULTS, SERVER_OPTIONS)


def resolve_models(repository: Path, requested: list[str] | None) -> dict[str, Path]:
    """{model: newest version folder} for the requested models (default: all in the repository)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise UserError(f"model repository not found: {repository} (train and export first)")
    available = list_models(repository)
    names = requested or available
    missing = [name for name in names if name not in available]
    if missing:
        raise UserError(f"model(s) {', '.join(missing)} not in {repository} (has: {available})")
    if not names:
        raise UserError(f"no published model in {repository}")
    return {
        name: version_dir(repository, name, latest_version(repository / name)) for name in names
    }


def onnx_providers(provider: str = "auto") -> list[str]:
    """ONNX Runtime providers in preference order: CUDA only where a GPU really answers."""
    import onnxruntime as ort

    from benchmarks.machine import gpus

    cuda_usable = "CUDAExecutionProvider" in ort.get_available_providers() and bool(gpus())
    if provider == "cuda" or (provider == "auto" and cuda_usable):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(variant: str):
    """ONNX Runtime's own defaults, or exactly the options the server uses."""
    import onnxruntime as ort

    if variant == SERVER_OPTIONS:
        from serving.runtime import session_options as server_session_options

        return server_session_options(0)
    return ort.SessionOptions()


def onnx_session(version_path: Path, provider: str = "auto", variant: str = DEFAULTS):
    import onnxruntime as ort

    return ort.InferenceSession(
        str(Path(version_path) / ONNX_FILE),
        sess_options=session_options(variant),
        providers=onnx_providers(provider),
    )


def onnx_predict(
    version_path: Path, provider: str = "auto", variant: str = DEFAULTS
) -> tuple[Predict, str]:
    """(predict function, the provider that runs it) for a version's model.onnx."""
    session = onnx_session(version_path, provider, variant)

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

    return predict, session.get_providers()[0]


def savedmodel_predict(version_path: Path) -> Predict:
    """The SavedModel's serving_default signature as a numpy -> numpy function."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_path)).signatures["serving_default"]

    def predict(images: np.ndarray) -> np.ndarray:
        return signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()

    return predict


def as_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] pixels to the contract's float32 [N, H, W, 1] (raw 0..255 values)."""
    return np.ascontiguousarray(pixels[..., np.newaxis], dtype=np.float32)


def predict_in_batches(predict: Predict, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities [N, classes] for uint8 pixels [N, H, W], run in fixed-size chunks."""
    chunks = [
        predict(as_model_input(pixels[start : start + batch_size]))
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(chunks, axis=0)
