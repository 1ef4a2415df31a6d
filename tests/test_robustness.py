"""The robustness suite: shifts that do what they say, a calibration error that can be
checked by hand, and a run of the benchmark on a real tiny repository."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import robustness
from benchmarks.shifts import ONE_SETTING, SHIFTS, STRENGTHS
from common.images import to_model_pixels
from common.validation_split import save_validation_split
from training.bundled.materialise import load_bundled

# The same digit must come out the same in either polarity (up to rounding) under these.
POLARITY_FREE = ("low_resolution", "blur", "thick_strokes", "thin_strokes", "rotation", "shear",
                 "off_centre", "rescaled", "uneven_background")  # fmt: skip


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_bundled((0, 1, 2))
    chosen = np.concatenate([np.flatnonzero(labels == d)[:4] for d in range(3)])
    pixels = [to_model_pixels(Image.fromarray(images[i], "L")) for i in chosen]
    return np.stack(pixels), labels[chosen]


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shift_keeps_shape_is_seeded_and_grows_with_strength(digits, name):
    images, _ = digits
    changes = []
    for strength in STRENGTHS[:1] if name in ONE_SETTING else STRENGTHS:
        shifted = SHIFTS[name](images, strength)
        assert shifted.shape == images.shape and shifted.dtype == np.uint8
        np.testing.assert_array_equal(shifted, SHIFTS[name](images, strength))
        changes.append(float(np.abs(shifted.astype(int) - images).mean()))
    assert changes[0] > 0.5, f"{name} mild hardly changes the images"
    assert changes == sorted(changes), f"{name}: strong changes less than mild {changes}"


@pytest.mark.parametrize("name", POLARITY_FREE)
def test_geometry_and_strokes_treat_both_polarities_alike(digits, name):
    images, _ = digits
    for strength in STRENGTHS:
        direct = SHIFTS[name](images, strength).astype(int)
        via_inverse = 255 - SHIFTS[name](255 - images, strength).astype(int)
        assert np.abs(direct - via_inverse).max() <= 2, name  # PIL rounds in 8 bits


def test_thick_and_thin_strokes_change_the_ink_area(digits):
    images, _ = digits
    ink = lambda batch: (batch > 127).mean()  # noqa: E731  (light ink on dark, the bundled digits)
    assert ink(SHIFTS["thick_strokes"](images, "mild")) > ink(images)
    assert ink(SHIFTS["thin_strokes"](images, "mild")) < ink(images)


def test_expected_calibration_error_by_hand():
    labels = np.array([0, 0, 1, 1])
    sure_and_right = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert robustness.expected_calibration_error(sure_and_right, labels) == 0.0
    # all at confidence 0.9, half of them right: |0.5 - 0.9| = 0.4
    half = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    assert robustness.expected_calibration_error(half, labels) == pytest.approx(0.4)


def test_benchmark_run_reports_every_model_and_shift(serving_repository, digits, tmp_path):
    images, labels = digits
    validation = tmp_path / "validation.npz"
    save_validation_split(validation, images, labels)
    output = tmp_path / "robustness"
    args = ["--model-repository", serving_repository, "--validation-file", validation,
            "--output", output, "--examples", "3"]  # fmt: skip
    code = robustness.main([str(arg) for arg in args])
    assert code == 0
    results = json.loads((output / "robustness.json").read_text())
    models = {row["model"] for row in results["rows"]}
    settings_per_model = 1 + sum(1 if n in ONE_SETTING else 2 for n in SHIFTS)
    assert len(results["rows"]) == len(models) * settings_per_model
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 for row in results["rows"])
    verdicts = {(v["model"], v["target"]) for v in results["targets"]}
    compared = {"vgg16_finetuned", "scratch_cnn"} <= models  # benchmarks/targets' as_robust_as
    assert len(verdicts) == 3 * len(models) + compared
    assert set(results["suite"]) == models
    for name in ("robustness.md", "robustness.png", "robustness_examples.png"):
        assert (output / name).stat().st_size > 0


def test_temperature_scaling_fits_an_overconfident_model():
    """Right 3 times in 4 at confidence 0.99: the fitted temperature softens (T > 1) and
    lowers the calibration error; at T = 1 nothing changes."""
    labels = np.zeros(400, dtype=int)
    probabilities = np.tile([0.99, 0.01], (400, 1))
    probabilities[::4] = [0.01, 0.99]  # a quarter wrong, just as sure
    assert np.allclose(robustness.temperature_scaled(probabilities, 1.0), probabilities)
    temperature = robustness.fitted_temperature(probabilities, labels)
    scaled = robustness.temperature_scaled(probabilities, temperature)
    assert temperature > 1.5
    ece = robustness.expected_calibration_error
    assert ece(scaled, labels) < ece(probabilities, labels) / 2


def test_a_model_is_as_robust_as_its_reference_when_its_mean_over_the_shifts_is_no_lower():
    """The clean row does not count; the cells above and below are named; a comparison
    whose reference did not run is left out."""

    def rows(model: str, clean: float, shifted: list[float]) -> list[dict]:
        cells = [("clean", "none", clean)]
        cells += [(f"s{i}", "mild", acc) for i, acc in enumerate(shifted)]
        return [{"model": model, "shift": shift, "strength": strength, "accuracy": acc}
                for shift, strength, acc in cells]  # fmt: skip

    spec = {"minimum_accuracy": {}, "polarity_gap": 0.005, "as_robust_as": {"big": "small"}}
    small = rows("small", 1.0, [0.99, 0.98, 0.97])
    worse_on_average = rows("big", 0.0, [1.0, 0.96, 0.96])  # clean far worse: not counted
    [verdict] = robustness.judge(small + worse_on_average, spec)
    assert verdict["model"] == "big" and not verdict["met"]
    assert verdict["value"] == pytest.approx(0.9733, abs=1e-4)
    assert verdict["at"] == "3 cells: above in 1, below in 2"
    [verdict] = robustness.judge(small + rows("big", 0.0, [0.97, 0.98, 0.99]), spec)
    assert verdict["met"] and verdict["at"] == "3 cells: above in 1, below in 1"
    assert robustness.judge(worse_on_average, spec) == []
    summary = robustness.suite_summary(small)["small"]
    assert summary["cells"] == 3 and summary["mean_drop"] == pytest.approx(0.02)
