"""ONNX Runtime sessions: the provider really in use, thread settings, one loaded version."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.cli import UserError
from common.contract import CLASS_LABELS, IMAGE_SIZE
from common.repository import METADATA_FILE, ONNX_FILE, sha256_file

log = logging.getLogger("serving.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ORT's default logger would print a red error for every provider that fails to load;
# the server logs its own choice instead and keeps ORT to errors only.
ORT_LOG_ERRORS = 3
ORT_LOG_FATAL = 4


class ModelLoadError(Exception):
    """A version folder that cannot be served (the message says why)."""


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """One run at a time per session, all cores inside it, no busy-waiting between runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads would take the cores that decode images and run gRPC meanwhile.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = ORT_LOG_ERRORS
    return options


def cuda_provider() -> tuple[str, dict]:
    # HEURISTIC: no exhaustive cuDNN search for every new batch size.
    return (CUDA, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"})


class ProviderChoice:
    """Decides once, on the first model loaded, whether CUDA really works here."""

    def __init__(self, preference: str):
        self.preference = preference
        self.provider: str | None = CPU if preference == "cpu" else None
        ort.set_default_logger_severity(ORT_LOG_ERRORS)

    def providers(self) -> list:
        return [cuda_provider(), CPU] if self.provider == CUDA else [CPU]

    def create_session(self, onnx_path: Path, options: ort.SessionOptions):
        if self.provider is None:
            return self._probe(onnx_path, options)
        return ort.InferenceSession(str(onnx_path), options, providers=self.providers())

    def _probe(self, onnx_path: Path, options: ort.SessionOptions):
        """Try CUDA (never TensorRT) and keep it only if the session really runs on it."""
        reason = "CUDAExecutionProvider is not in this onnxruntime build"
        if CUDA in ort.get_available_providers():
            ort.set_default_logger_severity(ORT_LOG_FATAL)  # a failed CUDA load is expected
            try:
                session = ort.InferenceSession(
                    str(onnx_path), options, providers=[cuda_provider(), CPU]
                )
            finally:
                ort.set_default_logger_severity(ORT_LOG_ERRORS)
            if session.get_providers()[0] == CUDA:
                self.provider = CUDA
                log.info("execution provider", extra={"provider": CUDA})
                return session
            reason = "CUDA libraries or GPU not available"
        if self.preference == "cuda":
            raise UserError(f"--provider cuda: {reason}")
        self.provider = CPU
        log.info("execution provider", extra={"provider": CPU, "reason": reason})
        return ort.InferenceSession(str(onnx_path), options, providers=[CPU])


@dataclass
class ModelVersion:
    """One loaded version: its session, contract and metadata."""

    name: str
    version: int
    session: ort.InferenceSession
    input_name: str
    output_name: str
    labels: tuple[str, ...]
    metadata: dict
    metadata_json: str
    provider: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 100, 100, 1] pixels -> float32 [N, classes] probabilities."""
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def read_version_metadata(folder: Path) -> tuple[dict, str]:
    """The version's metadata.json (parsed and verbatim); {} when the file is missing."""
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}, ""
    text = path.read_text()
    try:
        return json.loads(text), text
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path}: {error}") from error


def check_input_contract(session: ort.InferenceSession, folder: Path) -> None:
    spec = session.get_inputs()[0]
    if spec.type != "tensor(float)" or list(spec.shape[1:]) != [IMAGE_SIZE, IMAGE_SIZE, 1]:
        raise ModelLoadError(
            f"{folder}: input {spec.name} is {spec.type} {spec.shape}, "
            f"not float32 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1]"
        )


def load_model_version(
    folder: Path, name: str, version: int, choice: ProviderChoice, intra_op_threads: int
) -> ModelVersion:
    """Open model.onnx of one version folder, check it against its metadata and warm it up."""
    onnx_path = folder / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelLoadError(f"{folder}: no {ONNX_FILE}")
    metadata, metadata_json = read_version_metadata(folder)
    expected = metadata.get("files", {}).get(ONNX_FILE)
    if expected and sha256_file(onnx_path) != expected:
        raise ModelLoadError(f"{onnx_path}: sha256 differs from {METADATA_FILE}")
    try:
        session = choice.create_session(onnx_path, session_options(intra_op_threads))
    except UserError:
        raise
    except Exception as error:  # ORT raises several kinds for a bad graph
        raise ModelLoadError(f"{onnx_path}: {error}") from error
    check_input_contract(session, folder)
    model = ModelVersion(
        name=name,
        version=version,
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
        labels=tuple(metadata.get("classes") or CLASS_LABELS),
        metadata=metadata,
        metadata_json=metadata_json,
        provider=session.get_providers()[0],
    )
    model.predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))  # first run allocates
    return model
