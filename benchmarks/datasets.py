"""The images accuracy is measured on: training's validation split, or any labelled folder."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.contract import DATASET_FOLDER
from common.validation_split import load_validation_split
from training.data import list_class_files, load_class


@dataclass(frozen=True)
class Dataset:
    """uint8 pixels [N, 100, 100], int64 labels [N], and the files (empty for the npz split)."""

    name: str
    source: str
    pixels: np.ndarray
    labels: np.ndarray
    files: tuple[Path, ...] = field(default=())


def load_validation(path: Path) -> Dataset:
    """artifacts/validation_images.npz: exactly the pixels training evaluated on."""
    pixels, labels = load_validation_split(path)
    return Dataset("validation", str(path), pixels, labels)


def load_folder(data_dir: Path, skip_bad_files: bool = False) -> Dataset:
    """A folder in the Hand_written_digits layout (or one holding it), decoded through
    common.images exactly as training decoded its files."""
    data_dir = Path(data_dir)
    if (data_dir / DATASET_FOLDER).is_dir():
        data_dir = data_dir / DATASET_FOLDER
    pixels, labels, files = [], [], []
    for index, class_files in enumerate(list_class_files(data_dir)):
        images, kept = load_class(class_files, skip_bad_files)
        pixels.append(images)
        labels.append(np.full(len(images), index, np.int64))
        files += kept
    return Dataset(
        data_dir.name, str(data_dir), np.concatenate(pixels), np.concatenate(labels), tuple(files)
    )
