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
PROBE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


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
    """One loaded version: its session, contract and (checked) metadata."""

    name: str
    version: int
    session: ort.InferenceSession
    input_name: str
    output_name: str
    labels: tuple[str, ...]
    metadata: dict
    metadata_json: str
    provider: str
    val_accuracy: float = 0.0
    backbone: str = ""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 100, 100, 1] pixels -> float32 [N, classes] probabilities."""
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def read_version_metadata(folder: Path) -> tuple[dict, str]:
    """The version's metadata.json, parsed (a JSON object) and verbatim."""
    path = folder / METADATA_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing (every version carries its metadata)")
    try:
        text = path.read_text()
        metadata = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: unreadable ({error})") from error
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{path}: not a JSON object")
    return metadata, text


def check_file_hashes(folder: Path, metadata: dict) -> None:
    """Every file metadata.json lists is there with its sha256 (and model.onnx is listed)."""
    files = metadata.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(ONNX_FILE), str):
        raise ModelLoadError(f"{folder / METADATA_FILE}: no sha256 of {ONNX_FILE} under files")
    for relative, expected in files.items():
        path = folder / str(relative)
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ModelLoadError(f"{folder / METADATA_FILE}: file {relative!r} is outside")
        if not path.is_file():
            raise ModelLoadError(f"{path}: listed in {METADATA_FILE} but missing")
        if sha256_file(path) != expected:
            raise ModelLoadError(f"{path}: sha256 differs from {METADATA_FILE}")


def metadata_labels(folder: Path, metadata: dict) -> tuple[str, ...]:
    classes = metadata.get("classes", list(CLASS_LABELS))
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(label, str) for label in classes)
    ):
        raise ModelLoadError(f"{folder / METADATA_FILE}: classes must be a list of strings")
    return tuple(classes)


def check_contract(session: ort.InferenceSession, labels: tuple[str, ...], folder: Path) -> None:
    """One float32 input [N, 100, 100, 1]; one float32 output [N, len(classes)]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{folder}: the graph has {len(inputs)} inputs and {len(outputs)} outputs, not 1 and 1"
        )
    spec = inputs[0]
    if spec.type != "tensor(float)" or list(spec.shape[1:]) != [IMAGE_SIZE, IMAGE_SIZE, 1]:
        raise ModelLoadError(
            f"{folder}: input {spec.name} is {spec.type} {spec.shape}, "
            f"not float32 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1]"
        )
    out = outputs[0]
    if out.type != "tensor(float)" or len(out.shape) != 2 or out.shape[1] != len(labels):
        raise ModelLoadError(
            f"{folder}: output {out.name} is {out.type} {out.shape}, but {METADATA_FILE} "
            f"lists {len(labels)} classes (float32 [N, {len(labels)}] expected)"
        )


def probe(model: ModelVersion, folder: Path) -> None:
    """A real inference on a white and a black image: the answer must be probabilities."""
    batch = np.stack([np.zeros(PROBE_SHAPE, np.float32), np.full(PROBE_SHAPE, 255, np.float32)])
    try:
        probabilities = model.predict(batch)
    except Exception as error:  # ORT raises several kinds for a graph that cannot run
        raise ModelLoadError(f"{folder}: probe inference failed: {error}") from error
    expected = (len(batch), len(model.labels))
    if (
        probabilities.shape != expected
        or not np.isfinite(probabilities).all()
        or (probabilities < 0).any()
        or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise ModelLoadError(
            f"{folder}: probe inference gave {probabilities.dtype} {list(probabilities.shape)} "
            f"that are not probabilities of shape {list(expected)}"
        )


def optional_number(value) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def load_model_version(
    folder: Path, name: str, version: int, choice: ProviderChoice, intra_op_threads: int
) -> ModelVersion:
    """Open and check one version folder completely before it may take traffic: metadata,
    file checksums, input and output contract, and a probe inference; ModelLoadError if not."""
    onnx_path = folder / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelLoadError(f"{folder}: no {ONNX_FILE}")
    metadata, metadata_json = read_version_metadata(folder)
    check_file_hashes(folder, metadata)
    labels = metadata_labels(folder, metadata)
    try:
        session = choice.create_session(onnx_path, session_options(intra_op_threads))
    except UserError:
        raise
    except Exception as error:  # ORT raises several kinds for a bad graph
        raise ModelLoadError(f"{onnx_path}: {error}") from error
    check_contract(session, labels, folder)
    backbone = metadata.get("backbone")
    model = ModelVersion(
        name=name,
        version=version,
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
        labels=labels,
        metadata=metadata,
        metadata_json=metadata_json,
        provider=session.get_providers()[0],
        val_accuracy=optional_number(metadata.get("val_accuracy")),
        backbone=backbone if isinstance(backbone, str) else "",
    )
    probe(model, folder)  # also the first run, which allocates
    return model
