"""The dataset: folder layout, decoding of any format/size/colour, the 80/20 split."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from common.contract import CLASS_FOLDERS
from training.bundled.materialise import COMPLETE_MARKER, load_bundled, materialise_bundled_digits
from training.data import list_class_files, load_dataset

PER_CLASS = 10


def write_digit_folder(root: Path, per_class: int = PER_CLASS) -> Path:
    """A Hand_written_digits folder of real bundled digits in mixed formats, sizes, colours."""
    images, labels = load_bundled((0, 1, 2))
    formats = [("png", "L", 100), ("jpg", "RGB", 64), ("bmp", "RGB", 150), ("png", "RGB", 28)]
    for digit, folder in enumerate(CLASS_FOLDERS):
        (root / folder).mkdir(parents=True)
        for index, sample in enumerate(images[labels == digit][:per_class]):
            suffix, mode, side = formats[index % len(formats)]
            image = Image.fromarray(sample, "L").resize((side, side)).convert(mode)
            image.save(root / folder / f"sample_{index:02d}.{suffix}")
    return root


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "Hand_written_digits")


def test_split_is_deterministic_stratified_80_20_and_disjoint(digit_folder):
    train, validation = load_dataset(digit_folder, 0.2, seed=7)
    again_train, again_validation = load_dataset(digit_folder, 0.2, seed=7)
    assert train.files == again_train.files and validation.files == again_validation.files
    np.testing.assert_array_equal(validation.images, again_validation.images)

    assert not set(train.files) & set(validation.files)
    every_file = {path for files in list_class_files(digit_folder) for path in files}
    assert set(train.files) | set(validation.files) == every_file
    assert np.bincount(validation.labels).tolist() == [2, 2, 2]  # 20 % of 10, per class
    assert np.bincount(train.labels).tolist() == [8, 8, 8]
    for split in (train, validation):
        for path, label in zip(split.files, split.labels, strict=True):
            assert path.parent.name == CLASS_FOLDERS[label]


def test_another_seed_gives_another_split(digit_folder):
    _, validation = load_dataset(digit_folder, 0.2, seed=7)
    _, other = load_dataset(digit_folder, 0.2, seed=8)
    assert validation.files != other.files


def test_every_format_size_and_colour_becomes_uint8_100x100(digit_folder):
    train, validation = load_dataset(digit_folder)
    for split in (train, validation):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (100, 100)
        assert split.labels.dtype == np.int64
        assert split.images.max() > 200  # real ink survived decoding and resizing
    suffixes = {path.suffix for path in train.files + validation.files}
    assert suffixes == {".png", ".jpg", ".bmp"}


def test_limit_per_class_takes_a_deterministic_subset(digit_folder):
    train, validation = load_dataset(digit_folder, limit_per_class=5)
    assert len(train.labels) + len(validation.labels) == 15
    assert load_dataset(digit_folder, limit_per_class=5)[0].files == train.files


def test_bad_file_is_fatal_by_default_and_skipped_with_a_warning_on_request(digit_folder):
    corrupt = digit_folder / "1_digits" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    with pytest.raises(UserError, match="corrupt.png"):
        load_dataset(digit_folder)
    with pytest.warns(UserWarning, match="corrupt.png"):
        train, validation = load_dataset(digit_folder, skip_bad_files=True)
    assert corrupt not in train.files + validation.files
    assert len(train.labels) + len(validation.labels) == 3 * PER_CLASS


def test_class_without_a_readable_image_is_fatal_even_when_skipping(tmp_path):
    root = write_digit_folder(tmp_path / "digits", per_class=3)
    for path in (root / "2_digits").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="2_digits: no readable image"), pytest.warns(UserWarning):
        load_dataset(root, skip_bad_files=True)


def test_hidden_files_are_ignored(digit_folder):
    (digit_folder / "0_digits" / ".DS_Store").write_bytes(b"\0\0")
    (digit_folder / ".cache").mkdir()
    train, validation = load_dataset(digit_folder)
    assert len(train.labels) + len(validation.labels) == 3 * PER_CLASS


def test_bundled_digits_are_materialised_once_as_100px_grayscale_pngs(tmp_path):
    folder = materialise_bundled_digits(tmp_path)
    counts = [len(list((folder / name).glob("*.png"))) for name in CLASS_FOLDERS]
    _, labels = load_bundled((0, 1, 2))
    assert counts == np.bincount(labels).tolist()  # 1001, 1127, 991
    sample = next((folder / "2_digits").glob("*.png"))
    with Image.open(sample) as image:
        assert image.mode == "L" and image.size == (100, 100)
    marker = folder / COMPLETE_MARKER
    stamp = sample.stat().st_mtime_ns
    assert materialise_bundled_digits(tmp_path) == folder
    assert sample.stat().st_mtime_ns == stamp and marker.exists()
