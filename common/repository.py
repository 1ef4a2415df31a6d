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


def list_versions(model_dir: Path) -> list[int]:
    """Published versions of one model, ascending (temporary folders are ignored)."""
    if not Path(model_dir).is_dir():
        return []
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


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
