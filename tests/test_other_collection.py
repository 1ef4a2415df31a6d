"""The other collection (scikit-learn's UCI digits): the right digits, sent as the PNGs a
client would send, and a run of the benchmark on a real tiny repository that agrees with
benchmarks.accuracy reading the written image files."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from benchmarks import accuracy, other_collection
from benchmarks.datasets import load_folder
from common.cli import UserError
from common.validation_split import save_validation_split


@pytest.fixture(scope="module")
def collected() -> tuple[np.ndarray, np.ndarray]:
    return other_collection.collected_digits()


def test_the_collection_is_the_0s_1s_and_2s_of_scikit_learns_digits(collected):
    pixels, labels = collected
    source = load_digits()
    chosen = source.target <= 2
    assert pixels.shape == (chosen.sum(), 8, 8) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == np.bincount(source.target[chosen]).tolist()
    assert np.array_equal(labels, source.target[chosen])
    # 0..16 ink counts become 0..255, light ink on black like the bundled digits
    assert np.array_equal(pixels, np.rint(source.images[chosen] * 255 / 16).astype(np.uint8))
    assert pixels.max() == 255 and np.median(pixels[:, :, 0]) == 0


def test_the_margin_frames_each_digit_in_its_background(collected):
    pixels, _ = collected
    margin = other_collection.MARGIN_PIXELS
    framed = other_collection.framed(pixels[:5], margin)
    assert framed.shape == (5, 8 + 2 * margin, 8 + 2 * margin)
    assert np.array_equal(framed[:, margin:-margin, margin:-margin], pixels[:5])
    assert framed[:, :margin].max() == 0 and framed[:, :, -margin:].max() == 0


def test_the_written_folders_hold_exactly_the_images_that_are_scored(collected, tmp_path):
    pixels, labels = collected
    chosen = np.concatenate([np.flatnonzero(labels == d)[:3] for d in range(3)])
    framings = {"as_collected": pixels[chosen]}
    root = tmp_path / "uci"
    other_collection.write_image_folders(root, framings, labels[chosen])
    written = load_folder(root / "as_collected")
    assert np.array_equal(written.labels, labels[chosen])
    assert np.array_equal(written.pixels, other_collection.as_served(pixels[chosen]))
    assert written.pixels.shape == (9, 100, 100)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not created by digit-serving"):
        other_collection.write_image_folders(foreign, framings, labels[chosen])
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]


def test_benchmark_run_matches_the_accuracy_benchmark_on_the_written_files(
    serving_repository, collected, tmp_path
):
    pixels, labels = collected
    validation = tmp_path / "validation.npz"
    save_validation_split(validation, other_collection.as_served(pixels[:30]), labels[:30])
    output, images = tmp_path / "results", tmp_path / "images"
    args = ["--model-repository", serving_repository, "--validation-file", validation,
            "--output", output, "--images", images, "--examples", "3"]  # fmt: skip
    assert other_collection.main([str(arg) for arg in args]) == 0
    results = json.loads((output / "other_collection.json").read_text())
    rows = {(row["model"], row["images"]): row for row in results["rows"]}
    models = {model for model, _ in rows}
    assert set(rows) == {(m, s) for m in models for s in (*other_collection.FRAMINGS, "validation")}
    for row in rows.values():
        confusion = np.array(row["confusion"])
        assert confusion.sum() == row["count"] and np.trace(confusion) == row["correct"]
        assert len(row["misread"]) == row["count"] - row["correct"]
        assert row["interval"][0] <= row["accuracy"] <= row["interval"][1]
    assert results["count"] == len(labels) and rows[(min(models), "with_margin")]["count"] == 537
    for name in (
        "other_collection.md",
        "other_collection.png",
        "other_collection_examples.png",
        *results["misread_figures"],
    ):
        assert (output / name).stat().st_size > 0
    assert len(results["misread_figures"]) == 2 * len(models)
    # the same files through benchmarks.accuracy's own reading and scoring
    checked = tmp_path / "accuracy"
    args = ["--model-repository", serving_repository, "--validation-file", validation,
            "--data-dir", images / "with_margin", "--output", checked,
            "--no-savedmodel"]  # fmt: skip
    assert accuracy.main([str(arg) for arg in args]) == 0
    evaluations = json.loads((checked / "accuracy.json").read_text())["evaluations"]
    for model in models:
        (measured,) = [e["accuracy"] for e in evaluations
                       if (e["model"], e["dataset"], e["polarity"], e["format"])
                       == (model, "Hand_written_digits", "normal", "onnx")]  # fmt: skip
        assert measured == pytest.approx(rows[(model, "with_margin")]["accuracy"])
