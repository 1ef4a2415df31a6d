"""Export of a tiny model of each architecture: layout, formats, dynamic batch, metadata."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from common.model_runtime import SAVED_MODEL_SIGNATURE
from common.repository import list_versions, read_metadata, sha256_file
from export.audit import audit_graphs, forbidden_tf_ops, saved_model_op_types
from export.config import CPU_TOLERANCE, ExportOptions
from export.publish import publish_model
from export.summary import summarize
from training.models import build_scratch_cnn, build_vgg16_backbone, build_vgg16_finetuned

OPTIONS = ExportOptions(
    batch_one_images=3, full_batch_images=16, speed_batch_sizes=(1, 4), speed_repeats=1
)
VGG_OPTIONS = ExportOptions(
    batch_one_images=2, full_batch_images=8, speed_batch_sizes=(1,), speed_repeats=1, fp16=False
)


def digit_like_images(count: int, seed: int = 0) -> np.ndarray:
    """uint8 [count,100,100]: a bright stroke on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (count, 100, 100), dtype=np.uint8)
    for image in images:
        row, col = rng.integers(20, 60, 2)
        image[row : row + 30, col : col + 8] = rng.integers(180, 256)
    return images


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export") / "model_repository"


@pytest.fixture(scope="module")
def scratch_version(repository) -> Path:
    images = digit_like_images(24)
    labels = np.arange(24) % 3
    metadata = {"val_accuracy": 0.91, "backbone": None}
    return publish_model(
        build_scratch_cnn(),
        "scratch_cnn",
        repository,
        images,
        metadata,
        validation_labels=labels,
        options=OPTIONS,
    )


@pytest.fixture(scope="module")
def vgg_version(repository) -> Path:
    model = build_vgg16_finetuned(build_vgg16_backbone(100, weights=None))
    metadata = {"val_accuracy": 0.95, "backbone": "none (untrained test model)"}
    return publish_model(
        model,
        "vgg16_finetuned",
        repository,
        digit_like_images(8, seed=1),
        metadata,
        options=VGG_OPTIONS,
    )


@pytest.fixture(params=["scratch_version", "vgg_version"])
def version(request) -> Path:
    return request.getfixturevalue(request.param)


def test_version_folder_holds_savedmodel_onnx_and_metadata(version):
    assert version.name == "1"
    assert {"saved_model.pb", "variables", "model.onnx", "metadata.json"} <= {
        path.name for path in version.iterdir()
    }
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".tmp-")]
    assert (version.parent / "config.pbtxt").is_file()


def test_onnx_passes_full_checker_with_contract_names(version):
    model = onnx.load(version / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (image,), (probabilities,) = model.graph.input, model.graph.output
    assert image.name == "image" and probabilities.name == "probabilities"
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [100, 100, 1]


def test_saved_model_serving_signature(version):
    signature = tf.saved_model.load(str(version)).signatures[SAVED_MODEL_SIGNATURE]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.name == "image" and spec.shape.as_list() == [None, 100, 100, 1]
    assert list(signature.structured_outputs) == ["probabilities"]


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_dynamic_batch_sizes_agree_between_formats(version, batch_size):
    images = digit_like_images(batch_size, seed=batch_size)[..., None].astype(np.float32)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    from_onnx = session.run(["probabilities"], {"image": images})[0]
    signature = tf.saved_model.load(str(version)).signatures[SAVED_MODEL_SIGNATURE]
    from_tf = signature(image=tf.constant(images))["probabilities"].numpy()
    assert from_onnx.shape == from_tf.shape == (batch_size, 3)
    np.testing.assert_allclose(from_onnx.sum(axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(from_onnx - from_tf)) <= CPU_TOLERANCE


def test_metadata_contract_and_sha256(version):
    metadata = read_metadata(version)
    assert metadata["version"] == 1 and metadata["classes"] == ["0", "1", "2"]
    assert metadata["input"] == {"name": "image", "dtype": "float32", "shape": [-1, 100, 100, 1]}
    assert metadata["output"] == {"name": "probabilities", "dtype": "float32", "shape": [-1, 3]}
    assert metadata["opset"] >= 17 and metadata["created_at"]
    assert metadata["library_versions"]["tensorflow"] == tf.__version__
    assert metadata["library_versions"]["onnxruntime"] == ort.__version__
    files = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()}
    assert set(metadata["files"]) == files - {"metadata.json"}
    for name, digest in metadata["files"].items():
        assert sha256_file(version / name) == digest, name


def test_metadata_records_accuracy_backbone_and_equality(scratch_version, vgg_version):
    scratch, vgg = read_metadata(scratch_version), read_metadata(vgg_version)
    assert (scratch["val_accuracy"], scratch["backbone"]) == (0.91, None)
    assert vgg["backbone"].startswith("none")
    for metadata in (scratch, vgg):
        check = metadata["equality_check"]
        assert check["tolerance"] == CPU_TOLERANCE
        assert [c["batch_size"] for c in check["checks"]][:2] == [1, 7]
        assert all(check["max_abs_diff"][fmt] <= CPU_TOLERANCE for fmt in ("saved_model", "onnx"))
        assert check["class_mismatches"] == {"saved_model": 0, "onnx": 0}


def test_no_random_op_in_either_graph(version):
    op_types = audit_graphs(version, onnx.load(version / "model.onnx"))
    assert "Conv2D" in op_types["saved_model"] and "Conv" in op_types["onnx"]
    assert forbidden_tf_ops(saved_model_op_types(version)) == []


def test_triton_config(scratch_version):
    text = (scratch_version.parent / "config.pbtxt").read_text()
    assert 'name: "scratch_cnn"' in text and 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 64" in text and "latest: { num_versions: 1 }" in text
    assert re.search(r'name: "image"\s+data_type: TYPE_FP32\s+dims: \[ 100, 100, 1 \]', text)
    assert re.search(r'name: "probabilities"\s+data_type: TYPE_FP32\s+dims: \[ 3 \]', text)
    assert re.search(r"dynamic_batching \{\s+max_queue_delay_microseconds: \d+", text)


def test_onnxruntime_optimisation_levels_measured(scratch_version):
    measured = read_metadata(scratch_version)["onnxruntime_optimization"]
    assert set(measured["levels"]) == {
        "disabled",
        "basic",
        "extended",
        "all",
        "saved_optimized_graph",
    }
    for figures in measured["levels"].values():
        assert figures["batch_1_ms"] > 0 and figures["batch_4_ms"] > 0


def test_fp16_variant_is_float32_at_the_edges_and_not_default(scratch_version):
    model = onnx.load(scratch_version / "model_fp16.onnx")
    onnx.checker.check_model(model, full_check=True)
    float32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == float32
    assert model.graph.output[0].type.tensor_type.elem_type == float32
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    variant = read_metadata(scratch_version)["variants"]["model_fp16.onnx"]
    assert variant["default"] is False and "GPU" in variant["intended_for"]
    assert variant["class_mismatches_vs_fp32"] == 0 and variant["max_abs_diff_vs_fp32"] < 1e-2
    assert variant["accuracy_change"] == variant["fp16_accuracy"] - variant["fp32_accuracy"]
    assert json.dumps(variant)  # plain JSON values only


def test_summary_tables(repository, scratch_version, vgg_version):
    text = summarize(repository)
    assert "| scratch_cnn | 1 | 0.91 |" in text and "| vgg16_finetuned | 1 | 0.95 |" in text
    assert "| scratch_cnn | 7 | 24 |" in text and "| vgg16_finetuned | all |" in text


def test_second_publish_is_a_new_version(repository, scratch_version):
    before = read_metadata(scratch_version)
    again = publish_model(
        build_scratch_cnn(),
        "scratch_cnn",
        repository,
        digit_like_images(5),
        {"val_accuracy": 0.5, "backbone": None},
        options=ExportOptions(fp16=False, speed_repeats=1),
    )
    assert again.name == "2" and list_versions(repository / "scratch_cnn") == [1, 2]
    assert read_metadata(scratch_version) == before
    for name, digest in before["files"].items():
        assert sha256_file(scratch_version / name) == digest
