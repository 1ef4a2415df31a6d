"""Evaluation on the validation split and the report: JSON, curves, confusion, markdown."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from common.confusion import confusion_matrix  # noqa: E402
from common.contract import CLASS_LABELS, IMAGE_SIZE  # noqa: E402
from common.images import invert_polarity  # noqa: E402
from common.intervals import wilson_interval  # noqa: E402
from common.misread import misread_images  # noqa: E402
from training.pipeline import EVAL_BATCH_SIZE, evaluation_dataset  # noqa: E402

METRICS_KEYS = ("val_accuracy", "val_count", "epochs_run", "train_seconds", "backbone")


def predict_probabilities(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Class probabilities [N, classes] for uint8 [N, 100, 100] images (predict: always
    training=False; under a multi-worker strategy, split between the workers and gathered
    in order)."""
    batches = evaluation_dataset(images, labels, EVAL_BATCH_SIZE)  # labels unused by predict
    return model.predict(batches, verbose=0)


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, files: tuple = ()) -> dict:
    """Accuracy, confusion matrix, the misread images (index into the split, file when
    known, true and predicted class, the predicted class's probability), and accuracy on
    the same images with inverted polarity."""
    probabilities = predict_probabilities(model, images, labels)
    predicted = probabilities.argmax(axis=1)
    inverted = predict_probabilities(model, invert_polarity(images), labels).argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, len(CLASS_LABELS))
    misread = misread_images(probabilities, labels, files)
    return {
        "val_accuracy": float(np.mean(predicted == labels)),
        "val_count": int(len(labels)),
        "inverted_val_accuracy": float(np.mean(inverted == labels)),
        "confusion": confusion.tolist(),
        "misread": misread,
    }


def plot_curves(history: list[dict], title: str, path: Path) -> None:
    """Loss and accuracy per epoch, training vs validation, phases separated."""
    epochs = np.arange(1, len(history) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.plot(epochs, [row[metric] for row in history], "o-", label=f"train {metric}")
        axis.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", label=f"val {metric}")
        for index in range(1, len(history)):
            if history[index]["phase"] != history[index - 1]["phase"]:
                axis.axvline(index + 0.5, color="gray", linestyle="--", linewidth=1)
                axis.text(index + 0.6, axis.get_ylim()[1], history[index]["phase"], va="top")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(confusion: list[list[int]], title: str, path: Path) -> None:
    matrix = np.asarray(confusion)
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=color)
    ticks = range(len(CLASS_LABELS))
    axis.set_xticks(ticks, CLASS_LABELS)
    axis.set_yticks(ticks, CLASS_LABELS)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _interval(entry: dict) -> str:
    low, high = wilson_interval(entry["val_count"] - entry["val_errors"], entry["val_count"])
    return f"{100 * low:.2f}-{100 * high:.2f} %"


def comparison_table(summary: dict[str, dict]) -> str:
    """Side-by-side markdown table of every model in the summary."""
    lines = [
        "| model | backbone | val accuracy | 95 % interval | val images | inverted polarity "
        "| epochs run | train time (s) | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in summary.items():
        lines.append(
            f"| {name} | {entry['backbone'] or '-'} | {_percent(entry['val_accuracy'])} "
            f"| {_interval(entry)} | {entry['val_count']} "
            f"| {_percent(entry['inverted_val_accuracy'])} "
            f"| {entry['epochs_run']} | {entry['train_seconds']:.0f} | {entry['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def _misread_lines(misread: list[dict], shown: int = 12) -> list[str]:
    """One line per misread validation image (the first `shown`), named by index and file."""
    lines = []
    for entry in misread[:shown]:
        where = f" {Path(*Path(entry['file']).parts[-2:])}" if entry["file"] else ""
        lines.append(
            f"  - #{entry['index']}{where}: a {entry['label']} read as {entry['predicted']} "
            f"(probability {entry['probability']:.2f})"
        )
    if len(misread) > shown:
        lines.append(f"  - and {len(misread) - shown} more (summary.json)")
    return ["- misread validation images:", *lines] if lines else []


def _model_section(name: str, entry: dict) -> str:
    lines = [
        f"## {name}",
        "",
        f"- validation accuracy: {_percent(entry['val_accuracy'])} on {entry['val_count']} "
        f"held-out images ({entry['val_errors']} wrong; 95 % interval {_interval(entry)})",
        f"- same images with inverted polarity: {_percent(entry['inverted_val_accuracy'])}",
        *_misread_lines(entry.get("misread", [])),  # absent from reports before 2026-12-07
        f"- epochs run: {entry['epochs_run']}; training time: {entry['train_seconds']:.0f} s",
        f"- backbone: {entry['backbone'] or 'none (trained from scratch)'}",
        f"- parameters: {entry['parameters']:,} ({entry['trainable_parameters']:,} trainable "
        "at the end)",
    ]
    for phase in entry["phases"]:
        lines.append(
            f"- {phase['name']}: {phase['epochs_run']} epoch(s), {phase['seconds']:.0f} s, "
            f"validation accuracy after it {_percent(phase['val_accuracy'])}"
            + (f", trained in {phase['precision']}" if "precision" in phase else "")
        )
        if "feature_seconds" in phase:
            lines.append(
                "- frozen blocks 1-4 features (images, augmented and scanned copies), "
                f"computed once: {phase['feature_seconds']:.0f} s"
            )
    pretraining = entry.get("pretraining")
    if pretraining:
        lines.append(
            f"- fallback backbone pretraining (VGG16 from random init on bundled digits 3-9, "
            f"{pretraining['train_count']} images, stages px x epochs {pretraining['stages']}): "
            f"{_percent(pretraining['held_out_accuracy'])} on {pretraining['held_out_count']} "
            f"held-out digits at {pretraining['held_out_size']} px "
            f"({_percent(pretraining['held_out_accuracy_full_size'])} at {IMAGE_SIZE} px), "
            f"{pretraining['seconds']:.0f} s in "
            f"{pretraining.get('settings', {}).get('precision', 'float32')} "
            "(built once, then cached)"
        )
    figures = f"![curves]({name}_curves.png) ![confusion]({name}_confusion.png)"
    if entry.get("misread"):
        figures += f" ![misread]({name}_misread.png)"
    lines += ["", figures, ""]
    return "\n".join(lines)


def write_report(output_dir: Path, summary: dict[str, dict], settings: dict) -> str:
    """report.md, comparison.md and summary.json under DIR/report; returns the table."""
    report_dir = Path(output_dir) / "report"
    table = comparison_table(summary)
    (report_dir / "comparison.md").write_text("# Models side by side\n\n" + table)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    settings_lines = [f"- {key}: `{value}`" for key, value in settings.items()]
    body = [
        "# Training report",
        "",
        "Validation: the held-out 20 % split (stratified per class, seeded); it also drives",
        "early stopping and the learning-rate schedule. The 95 % interval is Wilson's score",
        "interval for that many images: two accuracies inside each other's interval are not",
        "told apart by this split.",
        "",
        table,
        *(_model_section(name, entry) for name, entry in summary.items()),
        "## Settings of the last run",
        "",
        *settings_lines,
        "",
    ]
    (report_dir / "report.md").write_text("\n".join(body))
    return table


def metrics_from_summary(summary: dict[str, dict]) -> dict:
    """metrics.json exactly as the contract fixes it."""
    return {
        "models": {
            name: {key: entry[key] for key in METRICS_KEYS} for name, entry in summary.items()
        }
    }
