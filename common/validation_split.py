"""The validation split that training hands to export and the benchmarks.

`validation_images.npz` in a training output folder holds exactly the pixels the models
were evaluated on: `images` uint8 [N, 100, 100] and `labels` [N].
"""

import zipfile
from pathlib import Path

import numpy as np

from common.cli import UserError

VALIDATION_FILE = "validation_images.npz"


def save_validation_split(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez_compressed(path, images=images, labels=labels)


def load_validation_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,100,100], labels int64 [N]); a UserError names the file and the problem."""
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
        raise UserError(f"{path}: cannot read validation images ({reason})") from error
    if images.ndim != 3 or len(images) != len(labels) or not len(images):
        raise UserError(f"{path}: expected images [N,100,100] and N labels, got {images.shape}")
    return images, labels.astype(np.int64)
