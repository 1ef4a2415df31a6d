"""Accuracy and calibration of every model under controlled shifts of the validation images.

    python -m benchmarks.robustness [--model-repository DIR] [--validation-file FILE]

Every shift of benchmarks/shifts.py (low resolution, blur, thick and thin strokes, rotation,
shear, off-centre, rescaled, noise, JPEG, uneven background, the other polarity), at its mild
and strong setting, applied to the validation split and run through each model's ONNX graph
(the file the server serves). Reported per model and shift: accuracy and the expected
calibration error (ECE, 15 equal-width confidence bins); per model across the shifted
cells, the mean accuracy and its drop from clean; all judged against the targets in
benchmarks/targets/robustness.json. Results: robustness.json, .md, a PNG of accuracies and a
PNG grid of example images, in the results folder.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import plots
from benchmarks.config import RESULTS_DIR, EvaluatedModels
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from benchmarks.runtimes import onnx_predict, resolve_models
from benchmarks.shifts import ONE_SETTING, SHIFTS, STRENGTHS
from common.cli import UserError, positive_int, run_cli
from common.model_runtime import predict_in_batches
from common.ownership import claim_folder
from common.settings import comma_list, parse_settings, setting, settings_group
from common.validation_split import load_validation_split

ROBUSTNESS_TARGETS = Path(__file__).resolve().parent / "targets" / "robustness.json"
CALIBRATION_BINS = 15
BATCH_SIZE = 64


@dataclass(frozen=True)
class RobustnessCommand:
    inputs: EvaluatedModels = settings_group(EvaluatedModels(), prefix="")
    shifts: tuple[str, ...] = setting(tuple(SHIFTS), "shifts to run", parse=comma_list)
    limit: int = setting(0, "at most N validation images (0: all)", parse=int)
    examples: int = setting(4, "example images per shift in the PNG grid", parse=positive_int)
    targets: Path = setting(ROBUSTNESS_TARGETS, "the targets (JSON)", parse=Path)
    output: Path = setting(RESULTS_DIR / "robustness", "results folder", parse=Path)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    error = 0.0
    for index in range(CALIBRATION_BINS):
        chosen = bins == index
        if chosen.any():
            error += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(error)


TEMPERATURES = np.round(np.arange(0.5, 4.01, 0.05), 2)


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): what a temperature layer at the end of the graph would return."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def fitted_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the least negative log-likelihood on these (clean) images."""
    rows = np.arange(len(labels))

    def nll(t: float) -> float:
        chosen = temperature_scaled(probabilities, t)[rows, labels]
        return -np.mean(np.log(np.clip(chosen, 1e-12, 1)))

    return float(min(TEMPERATURES, key=nll))


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "ece": expected_calibration_error(probabilities, labels),
        "mean_confidence": float(probabilities.max(axis=1).mean()),
    }


def shifted_sets(images: np.ndarray, names: tuple[str, ...]) -> dict[tuple[str, str], np.ndarray]:
    """{(shift, strength): images}, the clean set as ("clean", "none")."""
    sets = {("clean", "none"): images}
    for name in names:
        for strength in STRENGTHS[:1] if name in ONE_SETTING else STRENGTHS:
            sets[(name, strength)] = SHIFTS[name](images, strength)
    return sets


CLEAN = ("clean", "none")  # the unshifted row's (shift, strength)


def model_names(rows: list[dict]) -> list[str]:
    return sorted({row["model"] for row in rows})


def accuracies(rows: list[dict], model: str) -> dict[tuple[str, str], float]:
    """A model's accuracy per (shift, strength), the clean row included."""
    return {(r["shift"], r["strength"]): r["accuracy"] for r in rows if r["model"] == model}


def shifted_accuracies(rows: list[dict], model: str) -> dict[tuple[str, str], float]:
    """A model's accuracy in every shifted cell of the suite (the clean row left out)."""
    return {cell: acc for cell, acc in accuracies(rows, model).items() if cell != CLEAN}


def suite_summary(rows: list[dict]) -> dict[str, dict]:
    """Per model, across the shifted cells: the mean accuracy (what a user sees) and the
    mean drop from its own clean accuracy (robustness apart from clean accuracy)."""
    summary = {}
    for model in model_names(rows):
        shifted = list(shifted_accuracies(rows, model).values())
        clean = accuracies(rows, model)[CLEAN]
        if shifted:
            mean = float(np.mean(shifted))
            summary[model] = {"cells": len(shifted), "mean": mean, "mean_drop": clean - mean}
    return summary


def as_robust_as(rows: list[dict], model: str, reference: str) -> dict:
    """`model` against `reference` over the shifted cells both have: met when its mean
    accuracy is at least the reference's; the cells above and below it say where."""
    mine, theirs = shifted_accuracies(rows, model), shifted_accuracies(rows, reference)
    cells = sorted(mine.keys() & theirs.keys())
    above = sum(mine[cell] > theirs[cell] for cell in cells)
    below = sum(mine[cell] < theirs[cell] for cell in cells)
    mean, reference_mean = (float(np.mean([acc[c] for c in cells])) for acc in (mine, theirs))
    return {"model": model, "target": f"as robust as {reference}: mean shifted accuracy",
            "threshold": reference_mean, "value": mean,
            "at": f"{len(cells)} cells: above in {above}, below in {below}",
            "met": mean >= reference_mean}  # fmt: skip


def judge(rows: list[dict], spec: dict) -> list[dict]:
    """Each model's worst shift per strength against the targets, its polarity gap, and
    the comparisons of spec's "as_robust_as" (model: reference) whose models both ran."""
    verdicts = []
    ran = model_names(rows)
    for model in ran:
        mine = accuracies(rows, model)
        clean = mine[CLEAN]
        for strength, threshold in spec["minimum_accuracy"].items():
            worst = min(
                ((acc, shift) for (shift, s), acc in mine.items() if s == strength), default=None
            )
            if worst is not None:
                verdicts.append({"model": model, "target": f"every shift, {strength}: accuracy",
                                 "threshold": threshold, "value": worst[0], "at": worst[1],
                                 "met": worst[0] >= threshold})  # fmt: skip
        if ("inverted", "mild") in mine:
            gap = abs(clean - mine[("inverted", "mild")])
            threshold = spec["polarity_gap"]
            verdicts.append({"model": model, "target": "polarity gap (points)",
                             "threshold": 100 * threshold, "value": 100 * gap, "at": "inverted",
                             "met": gap <= threshold})  # fmt: skip
    for model, reference in spec.get("as_robust_as", {}).items():
        if {model, reference} <= set(ran):
            verdicts.append(as_robust_as(rows, model, reference))
    return verdicts


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Robustness: accuracy and calibration under shifts",
        "",
        f"{results['images']} validation images (the held-out 20 % split), each shift at its "
        f"mild and strong setting, through each model's ONNX graph on {machine['cpu_model']} "
        f"({machine['usable_cores']} cores). ECE: expected calibration error, "
        f"{CALIBRATION_BINS} bins (0 = confidence means what it says); ECE at T: the same "
        "after temperature scaling, T fitted by negative log-likelihood on the clean "
        "validation images ("
        + ", ".join(f"{m} T = {t:g}" for m, t in temperatures(results["rows"]).items())
        + ").",
        "",
    ]
    models = model_names(results["rows"])
    header = ["shift", "strength"] + [f"{m} acc / ECE / ECE at T" for m in models]
    by_key = {(r["model"], r["shift"], r["strength"]): r for r in results["rows"]}
    keys = list(dict.fromkeys((r["shift"], r["strength"]) for r in results["rows"]))
    rows = [
        [shift, strength]
        + [
            f"{100 * by_key[(m, shift, strength)]['accuracy']:.2f} % / "
            f"{by_key[(m, shift, strength)]['ece']:.3f} / "
            f"{by_key[(m, shift, strength)]['ece_temperature_scaled']:.3f}"
            for m in models
        ]
        for shift, strength in keys
    ]
    lines += table(header, rows)
    summary = results["suite"]
    lines += ["", "Across the shifted cells:", ""]
    lines += table(
        ["model", "cells", "mean accuracy", "mean drop from clean (points)"],
        [[m, str(v["cells"]), f"{100 * v['mean']:.2f} %", f"{100 * v['mean_drop']:.2f}"]
         for m, v in summary.items()],
    )  # fmt: skip
    lines += ["", "Targets:", ""]
    lines += table(
        ["model", "target", "threshold", "measured", "where", "met"],
        [[v["model"], v["target"], f"{v['threshold']:g}", f"{v['value']:.4g}", v["at"],
          "yes" if v["met"] else "**no**"] for v in results["targets"]],
    )  # fmt: skip
    lines += ["", f"![accuracy per shift]({results['figure']})", "",
              f"![examples]({results['examples_figure']})", ""]  # fmt: skip
    return "\n".join(lines)


def temperatures(rows: list[dict]) -> dict[str, float]:
    return {row["model"]: row["temperature"] for row in rows}


def read_targets(path: Path) -> dict:
    try:
        spec = json.loads(Path(path).read_text())
        for value in [*spec["minimum_accuracy"].values(), spec["polarity_gap"]]:
            float(value)
        pairs = spec.get("as_robust_as", {}).items()
        if not all(isinstance(name, str) for pair in pairs for name in pair):
            raise ValueError("as_robust_as: expected {model: reference model}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: not a robustness targets file ({error})") from None
    return spec


def evaluate(models: dict[str, Path], sets: dict, labels: np.ndarray) -> list[dict]:
    rows = []
    with tqdm(total=len(models) * len(sets), unit="set", file=sys.stderr) as progress:
        for model, folder in models.items():
            predict, provider = onnx_predict(folder)
            temperature = None  # fitted on the clean images, the first set
            for (shift, strength), images in sets.items():
                progress.set_description(f"{model} {shift} {strength}")
                probabilities = predict_in_batches(predict, images, BATCH_SIZE)
                temperature = temperature or fitted_temperature(probabilities, labels)
                scaled = temperature_scaled(probabilities, temperature)
                row = {"model": model, "shift": shift, "strength": strength, "provider": provider}
                row |= scores(probabilities, labels) | {"temperature": temperature}
                row["ece_temperature_scaled"] = expected_calibration_error(scaled, labels)
                rows.append(row)
                progress.update(1)
    return rows


def main(argv: list[str] | None = None) -> int:
    command = parse_settings(
        RobustnessCommand(), "python -m benchmarks.robustness", __doc__.split("\n")[0], argv
    )
    unknown = set(command.shifts) - set(SHIFTS)
    if unknown:
        raise UserError(f"--shifts: unknown {', '.join(sorted(unknown))}; choose from "
                        f"{', '.join(SHIFTS)}")  # fmt: skip
    spec = read_targets(command.targets)
    models = resolve_models(command.inputs.model_repository, list(command.inputs.models))
    images, labels = load_validation_split(command.inputs.validation_file)
    if command.limit > 0:
        images, labels = images[: command.limit], labels[: command.limit]
    output = claim_folder(command.output)
    sets = shifted_sets(images, command.shifts)
    rows = evaluate(models, sets, labels)
    results = {"machine": machine_info(), "images": int(len(labels)), "rows": rows,
               "suite": suite_summary(rows), "targets": judge(rows, spec),
               "target_spec": spec}  # fmt: skip
    results["figure"] = plots.robustness_accuracy(rows, output / "robustness.png").name
    examples = plots.shift_examples(sets, command.examples, output / "robustness_examples.png")
    results["examples_figure"] = examples.name
    write_results(results, markdown(results), output, "robustness")
    return 0


if __name__ == "__main__":
    run_cli(main)
