"""Accuracy and calibration on digits from another collection: other writers and scanner.

    python -m benchmarks.other_collection [--model-repository DIR] [--images DIR]

The validation split and benchmarks.robustness's shifts all come from the one MNIST sample
the models learnt from. This benchmark measures them on digits they never saw and no
setting was chosen by: the UCI optical-recognition digits that scikit-learn ships (Alpaydin
and Kaynak, 1998: 43 writers on NIST forms, each digit normalised to a 32x32 bitmap and
counted in 4x4 blocks into 8x8 pixels of 0..16), its 0s, 1s and 2s. Each is made into the
small PNG a client would send and decoded by common.images exactly as the server decodes
it, in two framings: as collected (the digit fills its 8x8 box) and with a margin of
MARGIN_PIXELS on every side (12x12: the digit takes 2/3 of the side, close to MNIST's 20 of
28). Reported per model and framing: accuracy with its 95 % interval, the expected
calibration error and the confusion matrix, beside the model's accuracy on the validation
split. `--images DIR` also writes the PNGs in the Hand_written_digits layout, for
`python -m benchmarks.accuracy --data-dir` (SavedModel, ONNX and a running server).
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import plots
from benchmarks.config import RESULTS_DIR, EvaluatedModels
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from benchmarks.robustness import CALIBRATION_BINS, scores
from benchmarks.runtimes import onnx_predict, resolve_models
from common.cli import UserError, positive_int, run_cli
from common.confusion import confusion_matrix
from common.contract import CLASS_FOLDERS, CLASS_LABELS, DATASET_FOLDER
from common.images import decode_image
from common.intervals import wilson_interval
from common.misread import misread_images, plot_misread
from common.model_runtime import predict_in_batches
from common.ownership import claim_folder
from common.settings import parse_settings, setting, settings_group
from common.validation_split import load_validation_split

COLLECTION = "UCI optical-recognition digits (scikit-learn's load_digits)"
SOURCE_LEVELS = 16  # the collection's pixels count 0..16 ink pixels of a 4x4 block
MARGIN_PIXELS = 2
FRAMINGS = {"as_collected": 0, "with_margin": MARGIN_PIXELS}  # framing: margin in pixels
VALIDATION = "validation"  # the row of the bundled validation split, for comparison
BATCH_SIZE = 64


@dataclass(frozen=True)
class OtherCollectionCommand:
    inputs: EvaluatedModels = settings_group(EvaluatedModels(), prefix="")
    images: Path | None = setting(
        None, "also write the PNGs here, a Hand_written_digits folder per framing", parse=Path
    )
    examples: int = setting(12, "example images per framing in the PNG grid", parse=positive_int)
    output: Path = setting(RESULTS_DIR / "other_collection", "results folder", parse=Path)


def collected_digits() -> tuple[np.ndarray, np.ndarray]:
    """The collection's 0s, 1s and 2s: uint8 [N, 8, 8] (light ink on black), int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "scikit-learn is not installed (it ships the other collection): "
            "pip install -e '.[benchmarks]'"
        ) from None
    digits = load_digits()
    chosen = digits.target < len(CLASS_LABELS)
    pixels = np.rint(digits.images[chosen] * 255 / SOURCE_LEVELS).astype(np.uint8)
    return pixels, digits.target[chosen].astype(np.int64)


def framed(pixels: np.ndarray, margin: int) -> np.ndarray:
    """Each image with `margin` pixels of its background (0) on every side."""
    return np.pad(pixels, ((0, 0), (margin, margin), (margin, margin)))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, "PNG")
    return buffer.getvalue()


def as_served(small_images: np.ndarray) -> np.ndarray:
    """uint8 [N, 100, 100]: each small image sent as a PNG and decoded as the server does."""
    return np.stack([decode_image(png_bytes(image)) for image in small_images])


def write_image_folders(root: Path, framings: dict[str, np.ndarray], labels: np.ndarray) -> None:
    """root/<framing>/Hand_written_digits/<class>_digits/uci_<index>.png, in a folder of ours."""
    claim_folder(root)
    for framing, small_images in framings.items():
        for index, (image, label) in enumerate(zip(small_images, labels, strict=True)):
            folder = root / framing / DATASET_FOLDER / CLASS_FOLDERS[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"uci_{index:04d}.png").write_bytes(png_bytes(image))
    print(f"images: {root}")


def scored_row(model: str, images: str, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predicted = probabilities.argmax(axis=1)
    correct = int((predicted == labels).sum())
    low, high = wilson_interval(correct, len(labels))
    return {
        "model": model,
        "images": images,
        "count": int(len(labels)),
        "correct": correct,
        **scores(probabilities, labels),
        "interval": [low, high],
        "confusion": confusion_matrix(labels, predicted, len(CLASS_LABELS)).tolist(),
        "misread": misread_images(probabilities, labels),
    }


def evaluate(models: dict[str, Path], sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> list:
    """A row per model and image set ({name: (uint8 [N, 100, 100], labels)})."""
    rows = []
    for model, folder in models.items():
        predict, provider = onnx_predict(folder)
        print(f"{model}: ONNX Runtime on {provider}")
        for name, (images, labels) in sets.items():
            probabilities = predict_in_batches(predict, images, BATCH_SIZE)
            rows.append(scored_row(model, name, probabilities, labels) | {"provider": provider})
    return rows


def misread_figures(rows: list[dict], sets: dict, output: Path) -> list[str]:
    """A PNG per model and framing of the other collection: its misread digits as sent."""
    names = []
    for row in rows:
        if row["images"] in FRAMINGS:
            name = f"misread_{row['model']}_{row['images']}.png"
            title = f"{row['model']}, {row['images']}: {row['count'] - row['correct']} misread"
            plot_misread(sets[row["images"]][0], row["misread"], title, output / name)
            names.append(name)
    return names


def markdown(results: dict) -> str:
    machine = results["machine"]
    counts = results["per_class"]
    lines = [
        "# Another collection: other writers, another scanner",
        "",
        f"{results['count']} digits ({', '.join(f'{n} {c}s' for c, n in counts.items())}) "
        f"from the {COLLECTION}: 43 writers on NIST forms, normalised to 32x32 and counted into "
        "8x8 pixels of 0..16; never trained or tuned on. Each sent as a PNG (8x8 as collected, "
        f"12x12 with a margin of {MARGIN_PIXELS} pixels) and decoded as the server decodes it, "
        f"through each model's ONNX graph on {machine['cpu_model']} "
        f"({machine['usable_cores']} cores). Interval: 95 % Wilson score. ECE: expected "
        f"calibration error, {CALIBRATION_BINS} bins.",
        "",
    ]
    lines += table(
        ["model", "images", "accuracy", "95 % interval", "errors", "ECE", "mean confidence",
         "confusion (rows true 0/1/2)"],
        [[r["model"], r["images"], f"{100 * r['accuracy']:.2f} %",
          f"{100 * r['interval'][0]:.2f}-{100 * r['interval'][1]:.2f} %",
          f"{r['count'] - r['correct']} of {r['count']}", f"{r['ece']:.3f}",
          f"{r['mean_confidence']:.3f}", str(r["confusion"])] for r in results["rows"]],
    )  # fmt: skip
    lines += [
        "",
        f"![accuracy]({results['figure']})",
        "",
        f"![examples]({results['examples_figure']})",
        "",
        "Misread (the first 24):",
        "",
    ]
    lines += [f"![{name}]({name})" for name in results["misread_figures"]] + [""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    command = parse_settings(
        OtherCollectionCommand(),
        "python -m benchmarks.other_collection",
        __doc__.split("\n")[0],
        argv,
    )
    models = resolve_models(command.inputs.model_repository, list(command.inputs.models))
    small_images, labels = collected_digits()
    framings = {name: framed(small_images, margin) for name, margin in FRAMINGS.items()}
    output = claim_folder(command.output)
    if command.images is not None:
        write_image_folders(command.images, framings, labels)
    sets = {name: (as_served(images), labels) for name, images in framings.items()}
    if command.inputs.validation_file.exists():
        sets[VALIDATION] = load_validation_split(command.inputs.validation_file)
    rows = evaluate(models, sets)
    per_class = np.bincount(labels, minlength=len(CLASS_LABELS))
    results = {"machine": machine_info(), "collection": COLLECTION, "count": int(len(labels)),
               "per_class": dict(zip(CLASS_LABELS, per_class.tolist(), strict=True)),
               "framings": FRAMINGS, "rows": rows}  # fmt: skip
    results["figure"] = plots.accuracy_intervals(rows, output / "other_collection.png").name
    examples = {(name, f"{images.shape[1]}x{images.shape[2]}"): sets[name][0]
                for name, images in framings.items()}  # fmt: skip
    path = output / "other_collection_examples.png"
    results["examples_figure"] = plots.shift_examples(examples, command.examples, path).name
    results["misread_figures"] = misread_figures(rows, sets, output)
    write_results(results, markdown(results), output, "other_collection")
    return 0


if __name__ == "__main__":
    run_cli(main)
