"""Layout of the versioned model repository (readable as-is by Triton and TF Serving).

    model_repository/
      <model>/config.pbtxt            Triton configuration (ONNX Runtime backend)
      <model>/<version>/model.onnx    ONNX graph
      <model>/<version>/saved_model.pb, variables/   the TF SavedModel (TF Serving layout)
      <model>/<version>/metadata.json classes, contract, accuracy, backbone, sha256 of files

Versions are positive integers counting up; a version folder is complete once it exists
(it is written under a temporary name and renamed).
"""

import hashlib
import json
from pathlib import Path

REPOSITORY_FOLDER = "model_repository"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
TRITON_CONFIG_FILE = "config.pbtxt"


def version_number(name: str) -> int | None:
    """The version a folder name stands for: a positive integer written plainly, as export
    names them ("²", "01", "0", "7x": None, ignored like any other stray folder)."""
    if not (name.isascii() and name.isdigit()) or str(int(name)) != name or name == "0":
        return None
    return int(name)


def list_versions(model_dir: Path) -> list[int]:
    """Published versions of one model, ascending (temporary and stray folders are ignored)."""
    if not Path(model_dir).is_dir():
        return []
    numbers = (version_number(p.name) for p in Path(model_dir).iterdir() if p.is_dir())
    return sorted(number for number in numbers if number is not None)


def folder_state(folder: Path) -> tuple:
    """(path, size, mtime) of every file under `folder`: changes while a copy is under way."""
    try:
        return tuple(
            (p.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns)
            for p in sorted(Path(folder).rglob("*"))
            if (stat := p.stat()) and p.is_file()
        )
    except OSError:  # a file vanished during the walk: the folder is changing
        return ("changing",)


def latest_version(model_dir: Path) -> int | None:
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def version_dir(repository: Path, model: str, version: int) -> Path:
    return Path(repository) / model / str(version)


def list_models(repository: Path) -> list[str]:
    """Models in the repository that have at least one published version."""
    if not Path(repository).is_dir():
        return []
    return sorted(p.name for p in Path(repository).iterdir() if p.is_dir() and list_versions(p))


def read_metadata(version_path: Path) -> dict:
    return json.loads((Path(version_path) / METADATA_FILE).read_text())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (metadata.json records these)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
