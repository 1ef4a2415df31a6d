"""The dataset: list a Hand_written_digits folder, decode every file, split 80/20.

Every file goes through common.images (the server's own decode + resize), so the
models train on exactly the pixels a client's image becomes. The split is stratified
per class and seeded on the sorted file list: the same folder always gives the same
two disjoint subsets.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UserError
from common.contract import CLASS_FOLDERS, IMAGE_SUFFIXES
from common.images import ImageDecodeError, load_image_file


@dataclass(frozen=True)
class Split:
    """uint8 images [N, 100, 100] with int64 labels [N], plus the files they came from."""

    images: np.ndarray
    labels: np.ndarray
    files: tuple[Path, ...]


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def list_class_files(data_dir: Path) -> list[list[Path]]:
    """Image files per class folder, sorted; raise UserError on a malformed layout."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise UserError(f"{data_dir}: data folder not found")
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: not a folder")
    folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not _is_hidden(p))
    extra = [name for name in folders if name not in CLASS_FOLDERS]
    if extra:
        raise UserError(
            f"{data_dir / extra[0]}: unexpected class folder (expected only "
            f"{', '.join(CLASS_FOLDERS)})"
        )
    per_class = []
    for folder in CLASS_FOLDERS:
        path = data_dir / folder
        if not path.is_dir():
            raise UserError(f"{path}: class folder missing")
        files = sorted(p for p in path.iterdir() if not _is_hidden(p))
        if not files:
            raise UserError(f"{path}: class folder is empty")
        per_class.append(files)
    return per_class


def _read(path: Path) -> np.ndarray:
    """Decode one file to uint8 [100, 100]; raise ImageDecodeError naming the file."""
    if path.is_dir():
        raise ImageDecodeError(f"{path}: a folder inside a class folder (expected image files)")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageDecodeError(f"{path}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
    try:
        return load_image_file(path)
    except OSError as error:
        raise ImageDecodeError(f"{path}: cannot read file: {error.strerror or error}") from error


def load_class(files: list[Path], skip_bad_files: bool) -> tuple[np.ndarray, list[Path]]:
    """Decode one class's files; a bad file is fatal unless skip_bad_files (then a warning)."""
    images, kept, bad = [], [], []
    for path in files:
        try:
            images.append(_read(path))
            kept.append(path)
        except ImageDecodeError as error:
            if not skip_bad_files:
                raise UserError(f"{error} (use --skip-bad-files to skip such files)") from None
            bad.append(str(error))
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable file(s): " + "; ".join(bad), stacklevel=2)
    if not images:
        raise UserError(f"{files[0].parent}: no readable image in this class folder")
    return np.stack(images), kept


def stratified_split(
    per_class: list[list[Path]], fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Seeded per-class shuffle of the sorted file lists: (train, validation) file/label pairs."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label, files in enumerate(per_class):
        if len(files) < 2:
            raise UserError(f"{files[0].parent}: needs at least 2 images to split 80/20")
        order = rng.permutation(len(files))
        n_val = min(len(files) - 1, max(1, round(len(files) * fraction)))
        validation += [(files[i], label) for i in sorted(order[:n_val])]
        train += [(files[i], label) for i in sorted(order[n_val:])]
    return train, validation


def limit_files(per_class: list[list[Path]], limit: int, seed: int) -> list[list[Path]]:
    """A deterministic subset of at most `limit` files per class (0 = all)."""
    if limit <= 0:
        return per_class
    rng = np.random.default_rng(seed + 1)
    return [
        sorted(files[i] for i in rng.permutation(len(files))[:limit])
        if len(files) > limit
        else files
        for files in per_class
    ]


def _to_split(pairs: list[tuple[Path, int]], decoded: dict[Path, np.ndarray]) -> Split:
    return Split(
        images=np.stack([decoded[path] for path, _ in pairs]),
        labels=np.asarray([label for _, label in pairs], dtype=np.int64),
        files=tuple(path for path, _ in pairs),
    )


def load_dataset(
    data_dir: Path,
    fraction: float = 0.2,
    seed: int = 1337,
    skip_bad_files: bool = False,
    limit_per_class: int = 0,
) -> tuple[Split, Split]:
    """(train, validation) splits of a Hand_written_digits folder, decoded to uint8."""
    per_class = limit_files(list_class_files(data_dir), limit_per_class, seed)
    decoded: dict[Path, np.ndarray] = {}
    readable = []
    for files in per_class:
        images, kept = load_class(files, skip_bad_files)
        decoded.update(zip(kept, images, strict=True))
        readable.append(kept)
    train, validation = stratified_split(readable, fraction, seed)
    return _to_split(train, decoded), _to_split(validation, decoded)
