"""What export refuses to publish: random ops, unequal graphs, bad inputs (through the CLI)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tensorflow as tf
import tf_keras as keras

import export.publish
from common.repository import list_versions, read_metadata
from export.audit import forbidden_onnx_ops, forbidden_tf_ops, saved_model_op_types
from export.config import QUICK_OPTIONS
from export.errors import EqualityError, ForbiddenOpError
from export.publish import export_trained_models, publish_model, rename_to_next_version
from training.models import build_scratch_cnn, classifier_output, contract_input

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = np.random.default_rng(0).integers(0, 256, (9, 100, 100), dtype=np.uint8)
METADATA = {"val_accuracy": 0.5, "backbone": None}


def tiny_model(*middle: keras.layers.Layer) -> keras.Model:
    """Contract input -> middle layers -> small conv head -> probabilities."""
    inputs = contract_input()
    x = inputs
    for layer in middle:
        x = layer(x)
    x = keras.layers.Conv2D(4, 3, strides=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, classifier_output(x))


class AlwaysNoise(keras.layers.Layer):
    """An augmentation that ignores `training`: what the audit must stop."""

    def call(self, images, training=None):
        return images + tf.random.normal(tf.shape(images), stddev=8.0)


def assert_nothing_published(model_dir: Path) -> None:
    assert not model_dir.exists() or not list(model_dir.iterdir())


def test_audit_catches_augmentation_kept_by_model_export(tmp_path):
    """tf-keras' model.export() keeps RandomRotation active; the audit names its ops."""
    model = tiny_model(keras.layers.RandomRotation(0.1))
    model.export(str(tmp_path / "exported"))
    found = forbidden_tf_ops(saved_model_op_types(tmp_path / "exported"))
    assert "ImageProjectiveTransformV3" in found
    assert any(op.startswith("StatelessRandom") for op in found)


def test_augmentation_layer_is_inert_in_published_graphs(tmp_path):
    """The serving function calls the model with training=False: RandomRotation vanishes."""
    model = tiny_model(keras.layers.RandomRotation(0.1), keras.layers.GaussianNoise(5.0))
    version = publish_model(model, "augmented", tmp_path, IMAGES, METADATA, options=QUICK_OPTIONS)
    op_types = read_metadata(version)["op_types"]
    assert forbidden_tf_ops(op_types["saved_model"]) == []
    assert forbidden_onnx_ops(onnx.load(version / "model.onnx")) == []


def test_publish_refuses_always_active_random_layer(tmp_path):
    with pytest.raises(ForbiddenOpError, match="RandomStandardNormal.*ONNX: RandomNormalLike"):
        publish_model(tiny_model(AlwaysNoise()), "noisy", tmp_path, IMAGES, METADATA)
    assert_nothing_published(tmp_path / "noisy")


def test_onnx_audit_flags_random_ops_and_training_mode_dropout():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    nodes = [
        onnx.helper.make_node("RandomUniformLike", ["x"], ["r"]),
        onnx.helper.make_node("Dropout", ["r", "ratio", "train"], ["y"]),
    ]
    initializers = [
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
        onnx.numpy_helper.from_array(np.array(True), "train"),
    ]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], initializers)
    found = forbidden_onnx_ops(onnx.helper.make_model(graph))
    assert found == ["RandomUniformLike", "Dropout(training_mode)"]


def test_altered_onnx_graph_is_caught_and_nothing_published(tmp_path, monkeypatch):
    """Perturb one weight of the converted graph: the equality check must refuse it."""
    real_convert = export.publish.convert_saved_model

    def convert_and_perturb(folder, name):
        model = real_convert(folder, name)
        weights = max(model.graph.initializer, key=lambda init: init.dims[-1] if init.dims else 0)
        altered = onnx.numpy_helper.to_array(weights) * 1.5 + 0.05
        weights.CopyFrom(onnx.numpy_helper.from_array(altered.astype(np.float32), weights.name))
        return model

    monkeypatch.setattr(export.publish, "convert_saved_model", convert_and_perturb)
    with pytest.raises(EqualityError, match=r"onnx: max \|diff\| [0-9.e-]+ \(tolerance 0.0001\)"):
        publish_model(
            build_scratch_cnn(), "scratch_cnn", tmp_path, IMAGES, METADATA, options=QUICK_OPTIONS
        )
    assert_nothing_published(tmp_path / "scratch_cnn")


def test_rename_never_replaces_an_existing_version(tmp_path, monkeypatch):
    """Two exports racing for the same number: the later one takes the next free version."""
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"first")
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    (temporary / "model.onnx").write_bytes(b"second")
    monkeypatch.setattr(export.publish, "latest_version", lambda _: None)  # a stale listing
    published = rename_to_next_version(temporary, {"name": "m"})
    assert published.name == "2" and read_metadata(published)["version"] == 2
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"first"
    assert list_versions(model_dir) == [1, 2] and not temporary.exists()


# --- the command line: python -m export.run ---------------------------------------------


@pytest.fixture(scope="module")
def scratch_keras_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trained") / "scratch_cnn.keras"
    build_scratch_cnn().save(path)
    return path


def training_output(folder: Path, models: dict[str, Path | bytes]) -> Path:
    """A training run's folder: keras/<model>.keras, validation_images.npz, metrics.json."""
    (folder / "keras").mkdir(parents=True)
    for name, source in models.items():
        target = folder / "keras" / f"{name}.keras"
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copy(source, target)
    labels = np.arange(len(IMAGES)) % 3
    np.savez(folder / "validation_images.npz", images=IMAGES, labels=labels)
    metrics = {name: {"val_accuracy": 0.75, "backbone": None} for name in models}
    (folder / "metrics.json").write_text(json.dumps({"models": metrics}))
    return folder


def run_export(output: Path, *args: str, user: int | None = None):
    return subprocess.run(
        [sys.executable, "-m", "export.run", "--output", str(output), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        user=user,
    )


def assert_one_line_error(result, path: Path) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "Traceback" not in result.stderr


def test_cli_missing_folder(tmp_path):
    result = run_export(tmp_path / "nowhere")
    assert_one_line_error(result, tmp_path / "nowhere")


def test_cli_no_trained_model(tmp_path):
    output = training_output(tmp_path / "out", {})
    assert_one_line_error(run_export(output), output / "keras")
    assert not (output / "model_repository").exists()


def not_a_keras_model() -> bytes:
    """A zip archive that is not a Keras model."""
    path = Path(tempfile.mkdtemp()) / "fake.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
    return path.read_bytes()


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, not_a_keras_model()])
def test_cli_corrupt_model_file(tmp_path, content):
    output = training_output(tmp_path / "out", {"scratch_cnn": content})
    assert_one_line_error(run_export(output), output / "keras" / "scratch_cnn.keras")
    assert not (output / "model_repository").exists()


def test_cli_model_input_off_contract(tmp_path):
    inputs = keras.Input((28, 28, 1), name="image")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "small.keras")
    output = training_output(tmp_path / "out", {"scratch_cnn": tmp_path / "small.keras"})
    result = run_export(output)
    assert_one_line_error(result, output / "keras" / "scratch_cnn.keras")
    assert "[None, 28, 28, 1]" in result.stderr
    assert not (output / "model_repository").exists()


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write in: chmod for a user, the immutable attribute for root."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", folder]).returncode:
            pytest.skip("running as root and cannot make a folder immutable here")
    else:
        folder.chmod(0o555)
    yield folder
    if as_root:
        subprocess.run(["chattr", "-i", folder])
    else:
        folder.chmod(0o755)


def test_cli_output_not_writable(tmp_path, scratch_keras_file, read_only_folder):
    output = training_output(tmp_path / "out", {"scratch_cnn": scratch_keras_file})
    (output / "model_repository").symlink_to(read_only_folder)
    result = run_export(output)
    assert_one_line_error(result, output / "model_repository")
    assert "not writable" in result.stderr and not list(read_only_folder.iterdir())


def test_cli_then_api_export_count_versions_up(tmp_path, scratch_keras_file):
    output = training_output(tmp_path / "out", {"scratch_cnn": scratch_keras_file})
    result = run_export(output, "--models", "scratch_cnn", "--no-fp16", "--speed-repeats", "1")
    assert result.returncode == 0, result.stderr
    first = output / "model_repository" / "scratch_cnn" / "1"
    assert f"scratch_cnn: {first}" in result.stdout
    published = export_trained_models(output, options=QUICK_OPTIONS)
    assert published == {"scratch_cnn": first.parent / "2"}
    for version in (first, published["scratch_cnn"]):
        metadata = read_metadata(version)
        assert metadata["val_accuracy"] == 0.75 and 0 <= metadata["onnx_val_accuracy"] <= 1
