"""The latency run as a readable page: headline, targets, references, every cell."""

from benchmarks.results_files import fmt, machine_lines, pct, table


def headline_rows(headlines: dict) -> list[list[str]]:
    rows = []
    for model, h in headlines.items():
        best = h["best"] or {}
        single = h["ort_single_image"] or {}
        c1 = h["concurrency_1"]
        on, off = c1.get("batching") or c1.get("target") or {}, c1.get("no_batching") or {}
        gains = h["batching_gain"]
        setting = f"{best.get('setting', '-')} c{best.get('concurrency', '-')}"
        setting += f" x{best.get('images_per_request', '-')}"
        same_batch = f"batch {best.get('reference_batch_size', '-')}"
        rows.append(
            [
                model,
                setting,
                fmt(best.get("images_per_s")),
                f"{pct(best.get('ratio_to_ort_same_batch'))} ({same_batch})",
                pct(best.get("ratio_to_ort_ceiling")),
                f"{fmt(on.get('p50_ms'), 2)} / {fmt(on.get('p99_ms'), 2)}",
                f"{fmt(off.get('p50_ms'), 2)} / {fmt(off.get('p99_ms'), 2)}",
                f"{fmt(single.get('median_ms'), 2)} / {fmt(single.get('p99_ms'), 2)}",
                fmt(gains.get("c16_x1"), 2, "x"),
                fmt(gains.get("c64_x1"), 2, "x"),
                fmt((h.get("ort_batch_gain") or {}).get("images_per_s"), 2, "x"),
                pct(best.get("cpu_efficiency_vs_ort")),
            ]
        )
    return rows


REFERENCE_COLUMNS = {
    "onnxruntime_defaults": "ORT defaults",
    "onnxruntime_server_options": "ORT server options",
    "savedmodel": "SavedModel",
}


def reference_table(rows_by_runtime: dict) -> list[str]:
    """batch | per runtime: median / p99 ms and images/s."""
    runtimes = [name for name in REFERENCE_COLUMNS if rows_by_runtime.get(name)]
    by_size = {name: {r["batch_size"]: r for r in rows_by_runtime[name]} for name in runtimes}
    sizes = sorted({size for rows in by_size.values() for size in rows})
    header = ["batch"]
    for name in runtimes:
        label = REFERENCE_COLUMNS[name]
        header += [f"{label} median / p99 ms", f"{label} img/s", f"{label} CPU ms/img"]
    rows = []
    for size in sizes:
        row = [str(size)]
        for name in runtimes:
            r = by_size[name].get(size, {})
            row += [
                f"{fmt(r.get('median_ms'), 2)} / {fmt(r.get('p99_ms'), 2)}",
                fmt(r.get("images_per_s")),
                fmt(r.get("cpu_ms_per_image"), 2),
            ]
        rows.append(row)
    return table(header, rows)


def cell_rows(cells: list[dict]) -> list[list[str]]:
    rows = []
    for c in cells:
        head = [c["setting"], str(c["concurrency"]), str(c["images_per_request"])]
        if c.get("skipped"):
            rows.append(head + [f"skipped: {c['skipped']}"] + [""] * 11)
            continue
        latency = c["latency_ms"]
        errors = ", ".join(f"{k} {v}" for k, v in c["errors"].items()) or "0"
        rows.append(
            head
            + [
                fmt(c["images_per_s"]),
                fmt(c["requests_per_s"]),
                fmt(latency["p50"], 2),
                fmt(latency["p90"], 2),
                fmt(latency["p99"], 2),
                fmt(latency["max"], 2),
                errors,
                f"{pct(c.get('ratio_to_ort_same_batch'))} (b{c.get('reference_batch_size', '-')})",
                f"{pct(c.get('client_cpu_share'))} / {pct(c.get('server_cpu_share'))}",
                f"{fmt(c.get('cpu_ms_per_image'), 2)} ({pct(c.get('cpu_efficiency_vs_ort'))})",
                f"{fmt(c.get('server_mean_batch_size'))} / "
                f"{pct(c.get('server_inference_busy_share'))}",
            ]
        )
    return rows


HEADLINE_HEADER = [
    "model",
    "best setting",
    "images/s",
    "of raw ORT, same batch",
    "of raw ORT ceiling",
    "c=1 p50/p99 ms (batching)",
    "c=1 p50/p99 ms (no batching)",
    "raw ORT batch-1 median/p99 ms",
    "batching gain c16",
    "batching gain c64",
    "raw ORT's own gain, largest batch vs 1",
    "CPU efficiency vs raw ORT (best setting)",
]
MET = {True: "yes", False: "NO", None: "not measured"}


def summary_lines(results: dict) -> list[str]:
    """The headline table and the targets: what the command also prints when it ends."""
    lines = ["## Headline", ""] + table(HEADLINE_HEADER, headline_rows(results["headline"]))
    if results["targets"]:
        lines += ["", "## Targets", ""]
        lines += table(
            ["model", "target", "measured", "threshold", "met", "CPU-time view", "context"],
            [
                [
                    t["model"],
                    t["target"],
                    fmt(t["value"], 2),
                    f"{t['sense']} {t['threshold']}",
                    MET[t["met"]],
                    fmt(t.get("cpu_view"), 2),
                    t.get("note", ""),
                ]
                for t in results["targets"]
            ],
        )
    return lines


def latency_markdown(results: dict) -> str:
    """The run as a readable page: notes, machine, headline, targets, references, every cell."""
    lines = [f"# Latency and throughput: {results['run_name']}", ""]
    lines += [f"- {note}" for note in results["notes"]] + ["", "## Machine", ""]
    lines += machine_lines(results["machine"]) + [""] + summary_lines(results)
    cost = results.get("client_cost")
    if cost:
        lines += ["", "## Client and transport cost (no-op model)", ""]
        lines += [
            f"- at most {fmt(cost['max_requests_per_s'])} requests/s through the whole path "
            f"({cost['at']['setting']}, concurrency {cost['at']['concurrency']}, "
            f"{cost['at']['images_per_request']} image(s)/request), the client spending "
            f"{fmt(cost['client_cpu_ms_per_request'], 3)} ms CPU per request;",
            f"- p50 at concurrency 1: {fmt(cost['p50_ms_concurrency_1'], 3)} ms "
            "(a request that does no inference).",
        ]
    lines += ["", "## References (in-process, same machine, same run)", ""]
    for model, rows_by_runtime in results["references"].items():
        lines += [f"### {model}", ""]
        lines += reference_table(rows_by_runtime) + [""]
    lines += ["## Server cells", ""]
    for model in dict.fromkeys(cell["model"] for cell in results["cells"]):
        lines += [f"### {model}", ""]
        lines += table(
            [
                "setting",
                "concurrency",
                "images/request",
                "images/s",
                "requests/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "errors",
                "of raw ORT (batch)",
                "CPU client / server",
                "CPU ms/image (raw ORT's / this)",
                "server batch / busy",
            ],
            cell_rows([c for c in results["cells"] if c["model"] == model]),
        ) + [""]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"
