"""The images a model misreads: named by index (and file), shown with what it read."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.contract import CLASS_LABELS  # noqa: E402


def misread_images(probabilities: np.ndarray, labels: np.ndarray, files: tuple = ()) -> list:
    """Per misread image: its index, its file when known, the true and the predicted class
    and the predicted class's probability."""
    predicted = probabilities.argmax(axis=1)
    return [
        {
            "index": int(index),
            "file": str(files[index]) if files else None,
            "label": CLASS_LABELS[labels[index]],
            "predicted": CLASS_LABELS[predicted[index]],
            "probability": round(float(probabilities[index, predicted[index]]), 4),
        }
        for index in np.flatnonzero(predicted != labels)
    ]


def plot_misread(images: np.ndarray, misread: list[dict], title: str, path: Path) -> None:
    """The first 24 misread images, each captioned true -> predicted (p); a figure that
    says none were when none were."""
    shown = misread[:24]
    columns = max(1, min(len(shown), 8))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(max(4.0, 1.6 * columns), 1.9 * rows + 0.4), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "none misread", ha="center", va="center")
    for axis, entry in zip(axes.flat, shown, strict=False):
        axis.imshow(images[entry["index"]], cmap="gray", vmin=0, vmax=255)
        caption = f"#{entry['index']}: {entry['label']} -> {entry['predicted']}"
        axis.set_title(f"{caption}\n(p {entry['probability']:.2f})", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
