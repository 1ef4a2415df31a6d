"""Publish Keras models as new, proven-equal versions of the model repository.

A version is assembled in a temporary folder inside the model's folder (its name is not
all digits, so servers ignore it) and renamed to the next free integer only once every
file is written and every check has passed: a failure never leaves a partial version.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tf_keras as keras

from common.contract import IMAGE_SIZE
from common.model_runtime import (
    ProviderChoice,
    as_model_input,
    savedmodel_predict,
    session_predict,
)
from common.repository import METADATA_FILE, ONNX_FILE, TRITON_CONFIG_FILE, latest_version
from export.audit import audit_graphs
from export.config import FP16_ONNX_FILE, ONNX_OPSET, TEMP_PREFIX, ExportOptions
from export.equality import Backends, keras_predictor, prove_equal
from export.errors import ExportError
from export.fp16 import compare_fp16, convert_to_fp16
from export.metadata import contract_metadata, file_hashes
from export.onnx_convert import check_onnx_contract, convert_saved_model, save_onnx
from export.savedmodel import ServingModule, save_saved_model
from export.speed import measure_optimizations, save_optimized_graph
from export.trained import check_model_contract, load_trained_models
from export.triton import GENERATED_HEADER, triton_config

log = logging.getLogger(__name__)

OPTIMIZED_ONNX_FILE = "model.optimized.onnx"
OPTIMIZE_AT_LOAD = (
    "model.onnx only; servers optimise it at load with graph_optimization_level=ORT_ENABLE_ALL "
    "(ONNX Runtime's default): a saved optimised graph loads barely faster and is tied to "
    "the CPU it was written on"
)


def check_validation_images(images: np.ndarray) -> np.ndarray:
    images = as_model_input(images)
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or not len(images):
        raise ExportError(
            f"validation images must be [N,{IMAGE_SIZE},{IMAGE_SIZE}], got {images.shape}"
        )
    return images


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_triton_config(model_dir: Path, name: str) -> None:
    """config.pbtxt, unless one that export did not write is there (it is kept as it is)."""
    path = model_dir / TRITON_CONFIG_FILE
    if path.exists() and not path.read_text(errors="replace").startswith(GENERATED_HEADER):
        log.warning("keeping %s: not written by digit-serving, so never replaced", path)
        return
    write_atomically(path, triton_config(name))


def build_version(
    model: keras.Model,
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    options: ExportOptions,
) -> dict:
    """Write SavedModel, ONNX (and variants) into `folder`, check them; return the figures."""
    module = ServingModule(model)
    save_saved_model(module, folder)
    onnx_model = convert_saved_model(folder, model.name)
    check_onnx_contract(onnx_model)
    save_onnx(onnx_model, folder / ONNX_FILE)
    ops = audit_graphs(folder, onnx_model)

    choice = ProviderChoice(options.providers)
    session = choice.create_session(folder / ONNX_FILE)
    provider = session.get_providers()[0]
    backends = Backends(
        keras=keras_predictor(model),
        saved_model=savedmodel_predict(folder),
        onnx=session_predict(session),
        onnx_provider=provider,
    )
    equality, onnx_probabilities = prove_equal(backends, images, options)
    figures = {"opset": ONNX_OPSET, "equality_check": equality, "op_types": ops}
    if labels is not None:
        figures["onnx_val_accuracy"] = float(np.mean(onnx_probabilities.argmax(1) == labels))

    figures["onnxruntime_optimization"] = measure_optimizations(
        folder / ONNX_FILE, choice, images, options.speed_batch_sizes, options.speed_repeats
    )
    figures["onnxruntime_optimization"]["kept"] = (
        OPTIMIZED_ONNX_FILE if options.keep_optimized_graph else OPTIMIZE_AT_LOAD
    )
    if options.keep_optimized_graph:
        save_optimized_graph(folder / ONNX_FILE, choice, folder / OPTIMIZED_ONNX_FILE)
    if options.fp16:
        fp16_model = convert_to_fp16(onnx_model)
        save_onnx(fp16_model, folder / FP16_ONNX_FILE)
        figures["variants"] = {
            FP16_ONNX_FILE: {
                "precision": "float16 weights and activations, float32 input/output",
                "intended_for": "GPU serving (CUDAExecutionProvider); not the default",
                "default": False,
                **compare_fp16(onnx_probabilities, fp16_model, choice, images, labels, options),
            }
        }
    return figures


def rename_to_next_version(temporary: Path, metadata: dict) -> Path:
    """Rename the finished folder to the next free version, never replacing an existing one."""
    model_dir = temporary.parent
    version = (latest_version(model_dir) or 0) + 1
    while True:
        metadata["version"] = version
        (temporary / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        destination = model_dir / str(version)
        try:
            os.rename(temporary, destination)  # fails if the destination exists (non-empty)
            return destination
        except OSError:
            if not destination.exists():
                raise
            version += 1


def publish_model(
    model: keras.Model,
    name: str,
    repository: Path,
    validation_images: np.ndarray,
    metadata: dict,
    *,
    validation_labels: np.ndarray | None = None,
    options: ExportOptions | None = None,
) -> Path:
    """Export, check and publish `model` as the next version of `name`; return its folder.

    `metadata` carries at least val_accuracy and backbone; it is merged into metadata.json.
    """
    options = options or ExportOptions()
    check_model_contract(model, name)
    log.info("exporting %s to %s", name, repository)
    images = check_validation_images(validation_images)
    model_dir = Path(repository) / name
    created_model_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=model_dir))
    temporary.chmod(0o755)  # mkdtemp makes it private; servers may run as another user
    try:
        figures = build_version(model, temporary, images, validation_labels, options)
        full_metadata = contract_metadata(name, version=0) | dict(metadata) | figures
        full_metadata["files"] = file_hashes(temporary)
        write_triton_config(model_dir, name)
        published = rename_to_next_version(temporary, full_metadata)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if created_model_dir and not any(model_dir.iterdir()):
            model_dir.rmdir()
        raise
    log.info("published %s", published)
    return published


def export_trained_models(
    output_dir: Path, models: list[str] | None = None, options: ExportOptions | None = None
) -> dict[str, Path]:
    """Publish the trained models in output_dir/keras (all, or those named) as new versions."""
    trained = load_trained_models(Path(output_dir), models)
    return {
        name: publish_model(
            entry.model,
            name,
            trained.repository,
            trained.images,
            entry.metadata,
            validation_labels=trained.labels,
            options=options,
        )
        for name, entry in trained.models.items()
    }
