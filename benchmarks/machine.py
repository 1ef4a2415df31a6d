"""What the figures were measured on: CPU, cores, memory, GPU, ONNX Runtime, library versions."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

from common.cpu import CPUINFO, cpuinfo_field, usable_cores
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


# The vector units that decide how fast a model runs here, as /proc/cpuinfo's flags name them.
VECTOR_UNITS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
}


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's name from /proc/cpuinfo with its family, model and vector units, else what
    platform knows. A virtual machine's "AMD EPYC" names several generations, with and
    without AVX-512, so the name alone cannot tell two committed runs' machines apart."""
    name = cpuinfo_field("model name", cpuinfo)
    if name is None:
        return platform.processor() or platform.machine()
    flags = set((cpuinfo_field("flags", cpuinfo) or "").split())
    units = [label for flag, label in VECTOR_UNITS.items() if flag in flags]
    family, model = cpuinfo_field("cpu family", cpuinfo), cpuinfo_field("model", cpuinfo)
    details = [f"family {family} model {model}"] if family and model else []
    return f"{name} ({', '.join(details + [', '.join(units) or 'no AVX2'])})"


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
