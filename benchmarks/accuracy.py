"""`python -m benchmarks.accuracy`: accuracy of both models, in every format, on the validation
split and on any labelled folder, at normal and inverted polarity.

    python -m benchmarks.accuracy                              # SavedModel + ONNX, validation split
    python -m benchmarks.accuracy --data-dir data/Hand_written_digits
    python -m benchmarks.accuracy --target 127.0.0.1:8500      # also end-to-end through a server
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import plots
from benchmarks.accuracy_report import accuracy_markdown, overview_lines
from benchmarks.classification import agreement, classification_report
from benchmarks.config import DEFAULT_VALIDATION_FILE, RESULTS_DIR, EvaluatedModels
from benchmarks.datasets import Dataset, load_folder, load_validation
from benchmarks.machine import machine_info
from benchmarks.results_files import write_results
from benchmarks.runtimes import onnx_predict, resolve_models
from benchmarks.server import require_serving
from common.cli import UserError, run_cli
from common.contract import CLASS_LABELS
from common.images import invert_polarity
from common.model_runtime import predict_in_batches, savedmodel_predict
from common.ownership import claim_folder
from common.repository import read_metadata
from common.settings import parse_settings, setting, settings_group

SCHEMA = "digits-benchmarks/accuracy/1"
POLARITIES = ("normal", "inverted")
SERVER_CHUNK = 64  # images per request when going through the server
BATCH_SIZE = 64  # images per in-process ONNX Runtime / SavedModel run


@dataclass(frozen=True)
class AccuracyCommand:
    inputs: EvaluatedModels = settings_group(EvaluatedModels(), prefix="")
    data_dir: Path | None = setting(
        None, "also a folder in the Hand_written_digits layout (0_digits, ...)", parse=Path
    )
    skip_bad_files: bool = setting(False, "skip unreadable files in --data-dir, else stop")
    target: str | None = setting(
        None, "HOST:PORT of a running server: also measure end to end", metavar="HOST:PORT"
    )
    savedmodel: bool = setting(True, "measure the TF SavedModel too")
    output: Path | None = setting(
        None, f"results folder (unset: {RESULTS_DIR}/<run-name>)", parse=Path
    )
    run_name: str | None = setting(None, "name of this run (unset: a timestamp)", metavar="NAME")


def parse_args(argv: list[str] | None = None) -> AccuracyCommand:
    return parse_settings(
        AccuracyCommand(),
        "python -m benchmarks.accuracy",
        "Accuracy, per-class precision/recall/F1 and confusion matrices of every model as "
        "SavedModel and ONNX (and through a server with --target), with the agreement between "
        "formats, at normal and inverted polarity.",
        argv,
    )


def load_datasets(args: AccuracyCommand) -> list[Dataset]:
    datasets = []
    validation_file = args.inputs.validation_file
    if validation_file.exists():
        datasets.append(load_validation(validation_file))
    elif validation_file != DEFAULT_VALIDATION_FILE or args.data_dir is None:
        raise UserError(
            f"validation split not found: {validation_file} (train first, or give --data-dir)"
        )
    if args.data_dir is not None:
        datasets.append(load_folder(args.data_dir, args.skip_bad_files))
    return datasets


def server_predict(client, model: str, images: list) -> np.ndarray:
    """Probabilities [N, classes] from the server, in requests of SERVER_CHUNK images."""
    rows = []
    for start in range(0, len(images), SERVER_CHUNK):
        response = client.classify(model, images[start : start + SERVER_CHUNK])
        rows += [list(prediction.probabilities) for prediction in response.predictions]
    return np.asarray(rows, dtype=np.float32)


def server_inputs(dataset: Dataset, polarity: str, pixels: np.ndarray) -> list:
    """What the server is sent: the files' own bytes where there are files and the polarity is
    theirs (the server then decodes them itself), otherwise the pixels."""
    if dataset.files and polarity == "normal":
        return [path.read_bytes() for path in dataset.files]
    return list(pixels)


def evaluate(
    args: AccuracyCommand, models: dict[str, Path], datasets: list[Dataset], client
) -> tuple[list[dict], list[dict], dict]:
    """Every (dataset, polarity, model, format): metrics; pairs of formats: agreement."""
    evaluations, agreements, probabilities = [], [], {}
    steps = len(models) * len(datasets) * len(POLARITIES)
    with tqdm(total=steps, unit="eval", file=sys.stderr, dynamic_ncols=True) as progress:
        for model, path in models.items():
            formats = {"onnx": onnx_predict(path)[0]}
            if args.savedmodel:
                formats["savedmodel"] = savedmodel_predict(path)
            for dataset in datasets:
                for polarity in POLARITIES:
                    progress.set_description(f"{model} {dataset.name} {polarity}")
                    pixels = (
                        dataset.pixels if polarity == "normal" else invert_polarity(dataset.pixels)
                    )
                    outputs = {
                        name: predict_in_batches(fn, pixels, BATCH_SIZE)
                        for name, fn in formats.items()
                    }
                    if client is not None:
                        outputs["server"] = server_predict(
                            client, model, server_inputs(dataset, polarity, pixels)
                        )
                    key = (dataset.name, polarity, model)
                    probabilities[key] = outputs
                    for name, values in outputs.items():
                        report = classification_report(dataset.labels, values, list(CLASS_LABELS))
                        evaluations.append(
                            {
                                "dataset": dataset.name,
                                "polarity": polarity,
                                "model": model,
                                "format": name,
                                **report,
                            }
                        )
                    names = list(outputs)
                    for i, first in enumerate(names):
                        for second in names[i + 1 :]:
                            agreements.append(
                                {
                                    "dataset": dataset.name,
                                    "polarity": polarity,
                                    "model": model,
                                    "formats": [first, second],
                                    **agreement(outputs[first], outputs[second]),
                                }
                            )
                    progress.update(1)
    return evaluations, agreements, probabilities


def confusion_figures(evaluations: list[dict], output: Path) -> list[str]:
    """One PNG per (dataset, model, polarity), a panel per format."""
    names = []
    groups = dict.fromkeys((e["dataset"], e["model"], e["polarity"]) for e in evaluations)
    for dataset, model, polarity in groups:
        matrices = {
            f"{e['format']} ({100 * e['accuracy']:.1f} %)": e["confusion"]
            for e in evaluations
            if (e["dataset"], e["model"], e["polarity"]) == (dataset, model, polarity)
        }
        path = output / f"confusion_{dataset}_{model}_{polarity}.png"
        title = f"{model} on {dataset}, {polarity} polarity"
        names.append(plots.confusion_matrices(matrices, list(CLASS_LABELS), title, path).name)
    return names


def training_check(models: dict[str, Path], evaluations: list[dict]) -> dict:
    """ONNX accuracy on the validation split here vs the val_accuracy the version records."""
    checks = {}
    for model, path in models.items():
        recorded = read_metadata(path).get("val_accuracy")
        here = [
            e["accuracy"]
            for e in evaluations
            if (e["model"], e["dataset"], e["polarity"], e["format"])
            == (model, "validation", "normal", "onnx")
        ]
        if here:
            checks[model] = {"recorded_val_accuracy": recorded, "measured_onnx_accuracy": here[0]}
    return checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = resolve_models(args.inputs.model_repository, list(args.inputs.models))
    datasets = load_datasets(args)
    client = None
    if args.target:
        from serving.client import DigitClient

        require_serving(args.target)
        client = DigitClient(args.target)
    run_name = args.run_name or time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / run_name
    claim_folder(output)  # ours, new or empty; a foreign folder is refused
    try:
        evaluations, agreements, _ = evaluate(args, models, datasets, client)
    finally:
        if client is not None:
            client.close()
    results = {
        "schema": SCHEMA,
        "run_name": run_name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.accuracy "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "models": {
            m: {
                "version_dir": str(p),
                "val_accuracy": read_metadata(p).get("val_accuracy"),
                "backbone": read_metadata(p).get("backbone"),
            }
            for m, p in models.items()
        },
        "datasets": {
            d.name: {
                "source": d.source,
                "count": int(len(d.labels)),
                "per_class": np.bincount(d.labels, minlength=len(CLASS_LABELS)).tolist(),
            }
            for d in datasets
        },
        "evaluations": evaluations,
        "agreement": agreements,
        "training_check": training_check(models, evaluations),
        "figures": confusion_figures(evaluations, output),
    }
    print("\n".join(overview_lines(results)))
    write_results(results, accuracy_markdown(results), output, "accuracy")
    return 0


if __name__ == "__main__":
    run_cli(main)
