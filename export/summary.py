"""python -m export.summary REPOSITORY: the figures export measured, as markdown tables."""

from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError, run_cli
from common.repository import latest_version, list_models, read_metadata, version_dir
from common.settings import parse_settings, setting
from export.config import FP16_ONNX_FILE


def equality_rows(name: str, metadata: dict) -> list[str]:
    check = metadata["equality_check"]
    return [
        f"| {name} | {c['batch_size']} | {c['images']} | {c['saved_model']['max_abs_diff']:.2e} "
        f"| {c['onnx']['max_abs_diff']:.2e} "
        f"| {c['saved_model']['class_mismatches'] + c['onnx']['class_mismatches']} |"
        for c in check["checks"]
    ]


def speed_rows(name: str, metadata: dict) -> list[str]:
    levels = metadata["onnxruntime_optimization"]["levels"]
    return [
        f"| {name} | {level} | {figures['session_load_ms']} | "
        + " | ".join(str(v) for k, v in figures.items() if k != "session_load_ms")
        + " |"
        for level, figures in levels.items()
    ]


def fp16_row(name: str, metadata: dict) -> str:
    variant = metadata.get("variants", {}).get(FP16_ONNX_FILE)
    if not variant:
        return f"| {name} | (not built) | | | |"
    change = variant.get("accuracy_change")
    change = "n/a" if change is None else f"{change:+.4f}"
    latency = variant.get("latency_level_all", "n/a")
    return (
        f"| {name} | {variant['max_abs_diff_vs_fp32']:.2e} | {variant['class_mismatches_vs_fp32']} "
        f"| {change} | {latency} |"
    )


def summarize(repository: Path) -> str:
    models = list_models(repository)
    if not models:
        raise UserError(f"{repository}: no published model")
    latest = {
        name: read_metadata(version_dir(repository, name, latest_version(repository / name)))
        for name in models
    }
    lines = [
        "| model | version | val_accuracy | ONNX accuracy (recomputed) | provider |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {m['version']} | {m.get('val_accuracy')} | {m.get('onnx_val_accuracy', 'n/a')} "
        f"| {m['equality_check']['onnx_provider']} |"
        for n, m in latest.items()
    ]
    lines += [
        "",
        "| model | batch size | images | SavedModel max abs diff | ONNX max abs diff "
        "| class mismatches |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, metadata in latest.items():
        lines += equality_rows(name, metadata)
    batch_keys = next(iter(latest.values()))["onnxruntime_optimization"]["levels"]["all"]
    columns = [k for k in batch_keys if k != "session_load_ms"]
    lines += [
        "",
        "| model | ORT optimisation | session load ms | " + " | ".join(columns) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for name, metadata in latest.items():
        lines += speed_rows(name, metadata)
    lines += [
        "",
        "| model | fp16 max abs diff vs fp32 | class changes | accuracy change | latency (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [fp16_row(name, metadata) for name, metadata in latest.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class SummaryCommand:
    repository: Path = setting(None, "a model repository folder", parse=Path, positional=True)


def main(argv: list[str] | None = None) -> None:
    command = parse_settings(SummaryCommand(), "python -m export.summary", __doc__, argv)
    repository = command.repository
    try:
        print(summarize(repository))
    except (KeyError, ValueError) as error:
        raise UserError(f"{repository}: metadata.json lacks or mangles {error}") from error


if __name__ == "__main__":
    run_cli(main)
