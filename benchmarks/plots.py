"""PNG figures: latency against throughput per setting, reference batch-size scaling,
confusion matrices. Matplotlib's Agg backend: no display needed."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.references import ceiling  # noqa: E402


def save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def latency_vs_throughput(cells: list[dict], references: dict, path: Path) -> Path:
    """One panel per model: p50 (solid) and p99 (dashed) against images/s, one curve per
    setting x images per request, points in concurrency order; dotted: raw ORT ceiling."""
    models = list(dict.fromkeys(cell["model"] for cell in cells))
    figure, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        curves = sorted(
            {(c["setting"], c["images_per_request"]) for c in cells if c["model"] == model}
        )
        for index, (setting, ipr) in enumerate(curves):
            points = sorted(
                (
                    c
                    for c in cells
                    if (c["model"], c["setting"], c["images_per_request"]) == (model, setting, ipr)
                    and not c.get("skipped")
                    and c["ok_requests"]
                ),
                key=lambda c: c["concurrency"],
            )
            if not points:
                continue
            x = [c["images_per_s"] for c in points]
            color = f"C{index}"
            label = f"{setting.replace('_', ' ')}, {ipr} img/req"
            axis.plot(
                x, [c["latency_ms"]["p50"] for c in points], "o-", color=color, label=f"{label} p50"
            )
            axis.plot(
                x,
                [c["latency_ms"]["p99"] for c in points],
                "x--",
                color=color,
                label=f"{label} p99",
            )
            for c in points:
                axis.annotate(
                    f"c{c['concurrency']}",
                    (c["images_per_s"], c["latency_ms"]["p50"]),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                )
        ort_rows = references.get(model, {}).get("onnxruntime")
        if ort_rows:
            axis.axvline(
                ceiling(ort_rows)["images_per_s"],
                color="gray",
                linestyle=":",
                label="raw ONNX Runtime ceiling",
            )
        axis.set(title=model, xlabel="throughput (images/s)", ylabel="latency (ms)", yscale="log")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "no successful request", ha="center", transform=axis.transAxes)
    return save(figure, path)


def reference_scaling(references: dict, path: Path) -> Path:
    """Per model: images/s and median latency against batch size, ONNX Runtime vs SavedModel."""
    models = [model for model, rows in references.items() if rows]
    figure, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for column, model in enumerate(models):
        for runtime, rows in references[model].items():
            if not rows or runtime == "onnxruntime":  # the per-batch best of the two ORT rows
                continue
            sizes = [row["batch_size"] for row in rows]
            axes[0][column].plot(sizes, [row["images_per_s"] for row in rows], "o-", label=runtime)
            axes[1][column].plot(sizes, [row["median_ms"] for row in rows], "o-", label=runtime)
        axes[0][column].set(title=model, ylabel="images/s", xscale="log")
        axes[1][column].set(
            xlabel="batch size", ylabel="median latency (ms)", xscale="log", yscale="log"
        )
        sizes = sorted({row["batch_size"] for rows in references[model].values() for row in rows})
        for axis in axes[:, column]:
            axis.set_xscale("log", base=2)
            axis.set_xticks(sizes, [str(size) for size in sizes])
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    return save(figure, path)


def confusion_matrices(
    matrices: dict[str, np.ndarray], labels: list[str], title: str, path: Path
) -> Path:
    """Side-by-side confusion matrices (rows: true class, columns: predicted), one per format."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.6), squeeze=False)
    for axis, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        matrix = np.asarray(matrix)
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            dark = value > matrix.max() / 2
            axis.text(
                column,
                row,
                str(value),
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
        axis.set(
            title=name,
            xlabel="predicted",
            ylabel="true",
            xticks=range(len(labels)),
            yticks=range(len(labels)),
            xticklabels=labels,
            yticklabels=labels,
        )
    figure.suptitle(title, fontsize=10)
    return save(figure, path)


def rss_over_time(servers: list[dict], path: Path) -> Path:
    """Resident size of each server over its flood rounds (rounds shaded)."""
    figure, axis = plt.subplots(figsize=(8, 4.2))
    for server in servers:
        seconds, megabytes = zip(*server["rss_series"], strict=True)
        axis.plot(seconds, megabytes, label=server["server"])
        for round_ in server["rounds"]:
            start = round_["started_at_s"]
            axis.axvspan(start, start + round_["wall_s"], alpha=0.08, color="grey")
    axis.set_xlabel("seconds since the server was ready (shaded: a flood round)")
    axis.set_ylabel("server RSS, MB")
    axis.set_ylim(bottom=0)
    axis.legend()
    axis.grid(alpha=0.3)
    return save(figure, path)


def perf_analyzer_sweep(rows: list[dict], path: Path) -> Path:
    """perf_analyzer against the OIP endpoint: throughput, and p50/p99 with the server's
    queue and compute shares, against concurrency."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    concurrency = [row["concurrency"] for row in rows]
    left.plot(concurrency, [row["images_per_s"] for row in rows], marker="o")
    left.set_xlabel("concurrency")
    left.set_ylabel("images/s")
    left.set_xscale("log", base=2)
    for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("server_queue_us", "server queue"),
                       ("server_compute_infer_us", "server compute infer")):  # fmt: skip
        right.plot(concurrency, [row[key] / 1000 for row in rows], marker="o", label=label)
    right.set_xlabel("concurrency")
    right.set_ylabel("ms")
    right.set_xscale("log", base=2)
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return save(figure, path)


def training_wall_times(rounds: list[list[dict]], path: Path) -> Path:
    """Wall seconds of each training setup, round by round (bars side by side)."""
    figure, axis = plt.subplots(figsize=(7, 4))
    setups = [run["setup"] for run in rounds[0]]
    width = 0.8 / len(setups)
    for offset, setup in enumerate(setups):
        walls = [next(r["wall_s"] for r in runs if r["setup"] == setup) for runs in rounds]
        positions = np.arange(len(rounds)) + offset * width
        axis.bar(positions, walls, width, label=setup)
    axis.set_xticks(np.arange(len(rounds)) + width * (len(setups) - 1) / 2)
    axis.set_xticklabels([f"round {index + 1}" for index in range(len(rounds))])
    axis.set_ylabel("wall seconds (training, same global batch)")
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    return save(figure, path)


def robustness_accuracy(rows: list[dict], path: Path) -> Path:
    """Accuracy per shift, mild and strong side by side, one panel per model; the targets'
    99 % and 97 % as lines."""
    models = sorted({row["model"] for row in rows})
    figure, axes = plt.subplots(len(models), 1, figsize=(11, 3.6 * len(models)), squeeze=False)
    for axis, model in zip(axes[:, 0], models, strict=True):
        mine = [row for row in rows if row["model"] == model]
        shifts = list(dict.fromkeys(row["shift"] for row in mine if row["shift"] != "clean"))
        clean = next(row["accuracy"] for row in mine if row["shift"] == "clean")
        for offset, strength in enumerate(("mild", "strong")):
            values = [
                next((r["accuracy"] for r in mine if (r["shift"], r["strength"]) == (s, strength)),
                     np.nan) * 100
                for s in shifts
            ]  # fmt: skip
            axis.bar(np.arange(len(shifts)) + (offset - 0.5) * 0.4, values, 0.4, label=strength)
        axis.axhline(100 * clean, color="black", linewidth=1, label="clean")
        for level, style in ((99, "--"), (97, ":")):
            axis.axhline(level, color="grey", linestyle=style, linewidth=1)
        axis.set_xticks(np.arange(len(shifts)))
        axis.set_xticklabels(shifts, rotation=30, ha="right")
        axis.set_ylim(max(0, min(r["accuracy"] for r in mine) * 100 - 5), 100.5)
        axis.set_ylabel("accuracy %")
        axis.set_title(model)
        axis.legend(loc="lower left", fontsize=8)
        axis.grid(alpha=0.3, axis="y")
    return save(figure, path)


def accuracy_intervals(rows: list[dict], path: Path) -> Path:
    """Accuracy per image set, a bar per model, with each 95 % interval as a whisker."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    sets = list(dict.fromkeys(row["images"] for row in rows))
    figure, axis = plt.subplots(figsize=(2.2 + 1.6 * len(sets), 4))
    width = 0.8 / len(models)
    for offset, model in enumerate(models):
        mine = {row["images"]: row for row in rows if row["model"] == model}
        found = [mine.get(name) for name in sets]
        values = np.array([100 * row["accuracy"] if row else np.nan for row in found])
        low = np.array([100 * row["interval"][0] if row else np.nan for row in found])
        high = np.array([100 * row["interval"][1] if row else np.nan for row in found])
        positions = np.arange(len(sets)) + (offset - (len(models) - 1) / 2) * width
        axis.bar(positions, values, width, label=model,
                 yerr=[values - low, high - values], capsize=3)  # fmt: skip
    axis.set_xticks(np.arange(len(sets)))
    axis.set_xticklabels(sets)
    axis.set_ylim(max(0, np.nanmin([100 * r["interval"][0] for r in rows]) - 5), 100.5)
    axis.set_ylabel("accuracy % (95 % interval)")
    axis.legend(loc="lower left", fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    return save(figure, path)


def shift_examples(sets: dict, count: int, path: Path) -> Path:
    """A grid: a row per shift and strength, the same `count` validation images (spread over
    the set, so over the classes) in each."""
    keys = list(sets)
    chosen = np.linspace(0, len(sets[keys[0]]) - 1, count).astype(int)
    figure, axes = plt.subplots(
        len(keys), count, figsize=(1.3 * count + 1.6, 1.3 * len(keys)), squeeze=False
    )
    for row, key in enumerate(keys):
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(sets[key][chosen[column]], cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(" ".join(key).replace("none", ""), rotation=0, ha="right",
                                va="center", fontsize=8)  # fmt: skip
    return save(figure, path)


def throughput_bars(cells: dict[tuple[str, str, int, int], dict], path: Path) -> Path:
    """Per cell (model, concurrency, images per request): each server's throughput, and the
    cores it and the client kept busy (stacked), side by side."""
    columns = sorted({key[1:] for key in cells})
    servers = list(dict.fromkeys(key[0] for key in cells))
    figure, (rate_axis, core_axis) = plt.subplots(1, 2, figsize=(14, 4.5))
    width = 0.8 / len(servers)
    for offset, server in enumerate(servers):
        found = [cells.get((server, *column)) for column in columns]
        positions = np.arange(len(columns)) + offset * width
        rates = [cell["images_per_s"] if cell else 0 for cell in found]
        server_cores = [cell["server_cores"] or 0 if cell else 0 for cell in found]
        client_cores = [cell["client_cores"] if cell else 0 for cell in found]
        colour = f"C{offset}"
        rate_axis.bar(positions, rates, width, label=server, color=colour)
        core_axis.bar(positions, server_cores, width, label=f"{server}: server", color=colour)
        core_axis.bar(positions, client_cores, width, bottom=server_cores, color=colour,
                      alpha=0.35, hatch="//", label=f"{server}: client")  # fmt: skip
    for axis in (rate_axis, core_axis):
        axis.set_xticks(np.arange(len(columns)) + width * (len(servers) - 1) / 2)
        axis.set_xticklabels([f"{m}\nC={c} x {k}" for m, c, k in columns], fontsize=8)
        axis.grid(alpha=0.3, axis="y")
    rate_axis.set_ylabel("images per second")
    rate_axis.legend(fontsize=8)
    core_axis.set_ylabel("cores busy (CPU s per s)")
    core_axis.legend(fontsize=7)
    return save(figure, path)
