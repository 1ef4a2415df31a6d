"""The accuracy run as markdown: overview, per-class figures, agreement between formats."""

from benchmarks.results_files import fmt, table


def overview_rows(evaluations: list[dict]) -> list[list[str]]:
    return [
        [
            e["dataset"],
            e["model"],
            e["format"],
            e["polarity"],
            str(e["count"]),
            f"{100 * e['accuracy']:.2f} %",
            fmt(e["macro_f1"], 3),
        ]
        for e in evaluations
    ]


def per_class_rows(evaluations: list[dict]) -> list[list[str]]:
    rows = []
    for e in evaluations:
        for label, figures in e["per_class"].items():
            rows.append(
                [
                    e["dataset"],
                    e["model"],
                    e["format"],
                    e["polarity"],
                    label,
                    fmt(figures["precision"], 3),
                    fmt(figures["recall"], 3),
                    fmt(figures["f1"], 3),
                    str(figures["support"]),
                ]
            )
    return rows


def overview_lines(results: dict) -> list[str]:
    """The accuracy table: what the command also prints when it ends."""
    return ["## Accuracy", ""] + table(
        ["dataset", "model", "format", "polarity", "images", "accuracy", "macro F1"],
        overview_rows(results["evaluations"]),
    )


def accuracy_markdown(results: dict) -> str:
    lines = [f"# Accuracy: {results['run_name']}", ""]
    for name, dataset in results["datasets"].items():
        lines.append(
            f"- dataset `{name}`: {dataset['count']} images {dataset['per_class']} "
            f"per class, from {dataset['source']}"
        )
    for model, info in results["models"].items():
        check = results["training_check"].get(model, {})
        lines.append(
            f"- `{model}`: {info['version_dir']}, backbone {info['backbone']}; val_accuracy "
            f"recorded at export {fmt(info['val_accuracy'], 4)}, measured here (ONNX, "
            f"validation, normal polarity) {fmt(check.get('measured_onnx_accuracy'), 4)}"
        )
    lines += [""] + overview_lines(results)
    lines += ["", "## Agreement between formats", ""]
    lines += table(
        ["dataset", "model", "polarity", "formats", "same label", "largest probability difference"],
        [
            [
                a["dataset"],
                a["model"],
                a["polarity"],
                " vs ".join(a["formats"]),
                f"{100 * a['label_agreement']:.2f} %",
                f"{a['max_abs_probability_difference']:.2e}",
            ]
            for a in results["agreement"]
        ],
    )
    lines += ["", "## Per class", ""]
    lines += table(
        ["dataset", "model", "format", "polarity", "class", "precision", "recall", "F1", "support"],
        per_class_rows(results["evaluations"]),
    )
    lines += ["", "## Confusion matrices", ""]
    lines += [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"
