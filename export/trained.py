"""What a training run left in its output folder, read and checked before anything is written."""

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import training.models  # noqa: F401  (registers PolarityNormalization for load_model)
from common.contract import INPUT_SHAPE, OUTPUT_SHAPE
from common.repository import REPOSITORY_FOLDER
from common.validation_split import VALIDATION_FILE, load_validation_split
from export.errors import ContractError, ExportError

KERAS_FOLDER = "keras"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    model: keras.Model
    metadata: dict  # val_accuracy, backbone... from metrics.json


@dataclass(frozen=True)
class TrainedModels:
    repository: Path
    images: np.ndarray
    labels: np.ndarray
    models: dict[str, TrainedModel]


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def find_keras_files(output_dir: Path, names: list[str] | None) -> dict[str, Path]:
    folder = output_dir / KERAS_FOLDER
    found = {path.stem: path for path in sorted(folder.glob("*.keras"))}
    if not found:
        raise ExportError(f"{folder}: no trained model (*.keras) found")
    missing = [name for name in names or [] if name not in found]
    if missing:
        raise ExportError(f"{folder}: no trained model named {', '.join(missing)}")
    return {name: found[name] for name in names} if names else found


def load_keras_model(path: Path) -> keras.Model:
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path}: not a Keras model file (corrupt or truncated)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # any failure to deserialise is the file's fault
        raise ExportError(f"{path}: cannot load Keras model ({_first_line(error)})") from error


def load_metrics(path: Path, names: list[str]) -> dict[str, dict]:
    try:
        metrics = json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path}: cannot read metrics ({_first_line(error)})") from error
    missing = [name for name in names if name not in metrics]
    if missing:
        raise ExportError(f"{path}: no metrics for {', '.join(missing)}")
    return {name: dict(metrics[name]) for name in names}


def check_writable(repository: Path) -> None:
    """Create the repository folder and prove a file can be written in it."""
    try:
        repository.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=repository):
            pass
    except OSError as error:
        raise ExportError(f"{repository}: not writable ({error.strerror or error})") from error
    if not os.access(repository, os.W_OK):
        raise ExportError(f"{repository}: not writable")


def check_model_contract(model: keras.Model, name: str) -> None:
    """One float32 input [N,100,100,1] and one output [N,3], as the contract says."""
    inputs, outputs = model.inputs or [], model.outputs or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ContractError(f"{name}: expected one input and one output")
    shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    dtype = tf.as_dtype(inputs[0].dtype).name
    if shape_in != INPUT_SHAPE or dtype != "float32":
        raise ContractError(
            f"{name}: input is {dtype} {list(shape_in)}, "
            f"the contract needs float32 {list(INPUT_SHAPE)}"
        )
    if shape_out != OUTPUT_SHAPE:
        raise ContractError(
            f"{name}: output is {list(shape_out)}, the contract needs {list(OUTPUT_SHAPE)}"
        )


def load_trained_models(output_dir: Path, names: list[str] | None = None) -> TrainedModels:
    """Everything export needs from a training run's folder; every problem is one ExportError."""
    if not output_dir.is_dir():
        raise ExportError(f"{output_dir}: no such folder")
    files = find_keras_files(output_dir, names)
    metrics = load_metrics(output_dir / METRICS_FILE, list(files))
    images, labels = load_validation_split(output_dir / VALIDATION_FILE)
    models = {
        name: TrainedModel(path, load_keras_model(path), metrics[name])
        for name, path in files.items()
    }
    for entry in models.values():
        check_model_contract(entry.model, str(entry.path))
    repository = output_dir / REPOSITORY_FOLDER
    check_writable(repository)  # last: a bad input above leaves nothing behind
    return TrainedModels(repository, images, labels, models)
