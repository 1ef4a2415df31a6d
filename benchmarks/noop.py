"""A trivial "noop" model, served beside the real ones to measure what client and transport cost.

It honours the contract (image float32 [N,100,100,1] -> probabilities float32 [N,3]) but
does almost no work: the mean of each image times zero, plus 1/3 per class.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.config import NOOP_MODEL
from common.contract import CLASS_LABELS, IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from common.repository import METADATA_FILE, ONNX_FILE, list_models, version_dir

NOOP_OPSET = 17
NOOP_VERSION = 1


def build_noop_onnx() -> onnx.ModelProto:
    """mean(image) * 0 + 1/3, broadcast to [N, 3]: reads every pixel, computes nothing."""
    classes = len(CLASS_LABELS)
    zeros = numpy_helper.from_array(np.zeros((1, classes), np.float32), "zeros")
    uniform = numpy_helper.from_array(np.full((1, classes), 1 / classes, np.float32), "uniform")
    shape = numpy_helper.from_array(np.array([-1, 1], np.int64), "column")
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "column"], ["mean_column"]),
        helper.make_node("Mul", ["mean_column", "zeros"], ["nothing"]),
        helper.make_node("Add", ["nothing", "uniform"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "noop",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [None, IMAGE_SIZE, IMAGE_SIZE, 1]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, classes])],
        initializer=[zeros, uniform, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NOOP_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def noop_metadata(onnx_bytes: bytes) -> dict:
    """metadata.json as common/repository.py lays it out, for a model with no accuracy."""
    return {
        "name": NOOP_MODEL,
        "version": NOOP_VERSION,
        "classes": list(CLASS_LABELS),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 1]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, len(CLASS_LABELS)]},
        "val_accuracy": 0.0,
        "backbone": "none (benchmark no-op: measures client and transport cost)",
        "opset": NOOP_OPSET,
        "library_versions": {"onnx": onnx.__version__},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {ONNX_FILE: hashlib.sha256(onnx_bytes).hexdigest()},
        "equality_check": {"skipped": "no Keras model behind the no-op"},
    }


def write_noop_version(repository: Path) -> Path:
    """Publish the no-op as <repository>/noop/1/ (model.onnx + metadata.json)."""
    onnx_bytes = build_noop_onnx().SerializeToString()
    target = version_dir(repository, NOOP_MODEL, NOOP_VERSION)
    target.mkdir(parents=True, exist_ok=True)
    (target / ONNX_FILE).write_bytes(onnx_bytes)
    (target / METADATA_FILE).write_text(json.dumps(noop_metadata(onnx_bytes), indent=2))
    return target


def repository_with_noop(source: Path, models: list[str], destination: Path) -> Path:
    """A repository holding the chosen models (linked, not copied) plus the no-op."""
    destination.mkdir(parents=True, exist_ok=True)
    for model in models:
        if model in list_models(source):
            (destination / model).symlink_to(
                Path(source, model).resolve(), target_is_directory=True
            )
    write_noop_version(destination)
    return destination
