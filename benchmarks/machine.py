"""What the figures were measured on: CPU, cores, memory, GPU, ONNX Runtime, library versions."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

from common.cpu import cpuinfo_field, usable_cores
from common.versions import library_versions

LIBRARIES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "tensorflow",
    "tf-keras",
    "grpcio",
    "protobuf",
    "pillow",
)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def gpus() -> list[str]:
    """GPU names from nvidia-smi; empty when there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Everything a reader needs to judge the figures, as plain JSON values."""
    import onnxruntime as ort

    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "onnxruntime_providers": ort.get_available_providers(),
        "onnxruntime_device": ort.get_device(),
        "platform": platform.platform(),
        "libraries": {
            name: version for name, version in library_versions(LIBRARIES).items() if version
        },
        "load_average_at_start": load_average(),
    }
