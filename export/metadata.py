"""metadata.json: the contract, provenance and the sha256 of every file in a version."""

from datetime import UTC, datetime
from pathlib import Path

from common import versions
from common.contract import CLASS_LABELS, IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from common.repository import METADATA_FILE, sha256_file

LIBRARIES = ("tensorflow", "tf-keras", "tf2onnx", "onnx", "onnxconverter-common", "numpy")
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime")


def file_hashes(folder: Path) -> dict[str, str]:
    """{relative POSIX path: sha256} for every file under `folder` except metadata.json."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != METADATA_FILE
    }


def library_versions() -> dict[str, str | None]:
    """Export's libraries, and whichever ONNX Runtime build is installed as "onnxruntime"."""
    runtime = next(filter(None, map(versions.installed_version, ONNXRUNTIME_DISTRIBUTIONS)), None)
    return {**versions.library_versions(LIBRARIES), "onnxruntime": runtime}


def contract_metadata(name: str, version: int) -> dict:
    return {
        "name": name,
        "version": version,
        "classes": list(CLASS_LABELS),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 1]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, len(CLASS_LABELS)]},
        "library_versions": library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
