"""One loaded model version, checked completely before it takes traffic (sessions, provider
choice and thread settings come from common.model_runtime)."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.cli import UserError
from common.contract import CLASS_LABELS, IMAGE_SIZE
from common.model_runtime import ProviderChoice, server_session_options
from common.repository import METADATA_FILE, ONNX_FILE, sha256_file

PROBE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


class ModelLoadError(Exception):
    """A version folder that cannot be served (the message says why)."""


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
    image_seconds: float = float("inf")  # one single-image run, measured at load

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
        session = choice.create_session(onnx_path, server_session_options(intra_op_threads))
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
    model.image_seconds = single_image_seconds(model)
    return model


def single_image_seconds(model: "ModelVersion", runs: int = 10) -> float:
    """The fastest of `runs` single-image runs: what the model itself costs, which the
    batcher weighs against the event loop's time (not the load of the moment: every worker
    loads its models at the same time)."""
    image = np.zeros((1, *PROBE_SHAPE), np.float32)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict(image)
        times.append(time.perf_counter() - start)
    return min(times)
