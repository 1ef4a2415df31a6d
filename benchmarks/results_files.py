"""Writing a benchmark's results: strict JSON (no NaN), its markdown page, table helpers."""

import json
from pathlib import Path


def write_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def write_results(results: dict, markdown: str, output: Path, stem: str) -> Path:
    """STEM.json and STEM.md in the results folder; says where (the markdown's path)."""
    write_json(results, output / f"{stem}.json")
    page = output / f"{stem}.md"
    page.write_text(markdown)
    print(f"results: {page}")
    return page


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A number for a table cell; '-' when it was not measured."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_lines(machine: dict) -> list[str]:
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    return [
        f"- CPU: {machine['cpu_model']}, {machine['usable_cores']} usable cores "
        f"({machine['logical_cores']} logical), {machine['memory_gib']} GiB",
        f"- GPU: {', '.join(machine['gpus']) or 'none (no GPU figure was measured)'}",
        f"- ONNX Runtime providers: {', '.join(machine['onnxruntime_providers'])}",
        f"- load average at start / end: {machine.get('load_average_at_start')} / "
        f"{machine.get('load_average_at_end')}",
        f"- {libraries}",
    ]
