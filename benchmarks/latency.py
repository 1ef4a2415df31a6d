"""`python -m benchmarks.latency`: the server under closed-loop load, next to raw ONNX Runtime
and the TF SavedModel measured in-process in the same run.

    python -m benchmarks.latency                    # full run, writes benchmarks/results/<run>/
    python -m benchmarks.latency --quick            # a short smoke run
    python -m benchmarks.latency --target host:port # a server that is already running
"""

import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import analysis, plots
from benchmarks.config import (
    DEFAULT_REPOSITORY,
    DEFAULT_VALIDATION_FILE,
    LATENCY_TARGETS,
    NOOP_MODEL,
    RESULTS_DIR,
    LatencyConfig,
    quick,
)
from benchmarks.latency_report import latency_markdown, summary_lines
from benchmarks.loadgen import Cell, run_cell
from benchmarks.machine import load_average, machine_info
from benchmarks.noop import repository_with_noop
from benchmarks.references import best_per_batch, row_at, sweep, time_batch
from benchmarks.results_files import write_results
from benchmarks.runtimes import ORT_VARIANTS, onnx_predict, resolve_models
from benchmarks.samples import load_sample_pixels, serialized_requests
from benchmarks.server import ServerProbe, benchmark_server, require_serving
from common.cli import UserError, run_cli
from common.model_runtime import as_model_input, savedmodel_predict
from common.ownership import claim_folder
from common.settings import comma_list, parse_settings, setting, settings_group

SCHEMA = "digits-benchmarks/latency/1"


@dataclass(frozen=True)
class LatencyCommand:
    model_repository: Path = setting(
        DEFAULT_REPOSITORY, "model repository to serve and to time in-process", parse=Path
    )
    models: tuple[str, ...] = setting(
        (), "models (unset: every model in the repository)", parse=comma_list
    )
    output: Path | None = setting(
        None, f"results folder (unset: {RESULTS_DIR}/<run-name>)", parse=Path
    )
    run_name: str | None = setting(None, "name of this run (unset: a timestamp)", metavar="NAME")
    target: str | None = setting(
        None,
        "HOST:PORT of a running server to benchmark instead of starting one (then only its "
        "own batching setting is measured)",
        metavar="HOST:PORT",
    )
    settings: tuple[str, ...] = setting(
        (analysis.BATCHING, analysis.NO_BATCHING), "server settings to run", parse=comma_list
    )
    savedmodel: bool = setting(True, "time the TF SavedModel reference too")
    noop: bool = setting(True, "run the no-op client-cost cells")
    validation_file: Path = setting(
        DEFAULT_VALIDATION_FILE, "images to send (else bundled digits)", parse=Path
    )
    note: tuple[str, ...] = setting((), "a note to write into the results", many=True)
    server_args: str = setting(
        "", 'extra flags for the servers this command starts, e.g. "--batch-delay-us 0"'
    )
    quick: bool = setting(False, "a short run: fewer, shorter cells (other flags still win)")
    targets: Path = setting(
        LATENCY_TARGETS, "the targets the run is judged against (JSON)", parse=Path
    )
    config: LatencyConfig = settings_group(LatencyConfig(), prefix="")


def parse_args(argv: list[str] | None = None) -> LatencyCommand:
    """--quick changes the defaults the other flags override, so it is looked at first."""
    argv = sys.argv[1:] if argv is None else list(argv)
    base = LatencyConfig()
    defaults = LatencyCommand(config=quick(base) if "--quick" in argv else base)
    return parse_settings(
        defaults,
        "python -m benchmarks.latency",
        "Latency/throughput of the gRPC server (dynamic batching on and off) against raw ONNX "
        "Runtime and the TF SavedModel run in-process on the same machine.",
        argv,
    )


@dataclass
class Run:
    """What every step of one run shares."""

    config: LatencyConfig
    pixels: np.ndarray
    progress: tqdm
    references: dict = field(default_factory=dict)  # {model: {runtime: rows}}
    ort: dict = field(default_factory=dict)  # {model: {variant: ONNX Runtime predict function}}
    providers: dict = field(default_factory=dict)  # {model: provider the reference ran on}

    def sweep(self, predict, label: str) -> list[dict]:
        self.progress.set_description(label)
        config = self.config
        return sweep(
            predict,
            self.pixels,
            config.batch_sizes,
            config.reference_seconds,
            config.reference_min_runs,
            lambda size: self.progress.update(1),
        )


def measure_references(run: Run, models: dict[str, Path], with_savedmodel: bool) -> None:
    """Raw ONNX Runtime (both session configurations) and the SavedModel at every batch size.
    "onnxruntime" holds the better configuration per batch size: the ceiling."""
    for model, path in models.items():
        rows = {}
        run.ort[model] = {}
        for variant in ORT_VARIANTS:
            run.ort[model][variant], run.providers[model] = onnx_predict(path, variant=variant)
            rows[f"onnxruntime_{variant}"] = run.sweep(run.ort[model][variant], f"ORT {model}")
        rows["onnxruntime"] = best_per_batch({v: rows[f"onnxruntime_{v}"] for v in ORT_VARIANTS})
        if with_savedmodel:
            predict = savedmodel_predict(path)
            rows["savedmodel"] = run.sweep(predict, f"SavedModel {model}")
        run.references[model] = rows


def plan_cells(
    model: str, setting: str, config: LatencyConfig, ort_rows: list[dict] | None
) -> list[tuple[Cell, str | None]]:
    """The cells for one model and setting, stretched so slow models still reach a steady state;
    those expected to exceed max_expected_latency_s per request are planned as skipped."""
    planned = []
    for concurrency in config.concurrencies:
        for ipr in config.images_per_request:
            expected = analysis.expected_latency_s(setting, concurrency, ipr, ort_rows)
            warmup = max(config.warmup_s, 1.5 * expected)
            cell = Cell(model, concurrency, ipr, warmup, max(config.duration_s, 4 * expected))
            skip = None
            if expected > config.max_expected_latency_s:
                skip = f"expected ~{expected:.1f} s per request > {config.max_expected_latency_s} s"
            planned.append((cell, skip))
    return planned


def paired_reference(run: Run, cell: Cell, setting: str) -> dict | None:
    """Raw ONNX Runtime at the cell's comparable batch size, timed just before the cell, so
    the ratio compares two measurements taken under the same load on a shared machine."""
    if cell.model not in run.ort or run.config.paired_reference_s <= 0:
        return None
    size = analysis.reference_batch_size(
        setting, cell.concurrency, cell.images_per_request, run.config.max_batch_size
    )
    variant = row_at(run.references[cell.model]["onnxruntime"], size)["variant"]
    predict = run.ort[cell.model][variant]
    batch = as_model_input(np.resize(run.pixels, (size, *run.pixels.shape[1:])))
    # The session is warm from the sweep: one warm-up run, two runs at least (slow models).
    row = time_batch(predict, batch, run.config.paired_reference_s, min_runs=2, warmup_runs=1)
    return {**row, "variant": variant}


def drive(
    run: Run, target: str, setting: str, models: list[str], probe: ServerProbe | None
) -> list[dict]:
    """Every cell of every model against one server setting."""
    cells = []
    for model in models:
        ort_rows = run.references.get(model, {}).get("onnxruntime")
        for cell, skip in plan_cells(model, setting, run.config, ort_rows):
            run.progress.set_description(
                f"{setting} {model} c{cell.concurrency} x{cell.images_per_request}"
            )
            if skip:
                result = {
                    "model": model,
                    "concurrency": cell.concurrency,
                    "images_per_request": cell.images_per_request,
                    "skipped": skip,
                }
            else:
                paired = paired_reference(run, cell, setting)
                requests = serialized_requests(
                    model,
                    run.pixels,
                    cell.images_per_request,
                    run.config.distinct_requests,
                    run.config.payload,
                )
                result = run_cell(target, cell, requests, run.config.request_timeout_s, probe)
                result["paired_ort"] = paired
                run.progress.set_postfix(
                    img_s=f"{result['images_per_s']:.0f}",
                    p50_ms=f"{result['latency_ms']['p50'] or 0:.1f}",
                )
            result["setting"] = setting
            cells.append(result)
            run.progress.update(1)
    return cells


def notes(
    args: LatencyCommand, config: LatencyConfig, machine: dict, sample_source: str
) -> list[str]:
    cores = machine["usable_cores"]
    lines = [
        f"Client (load generator) and server run on the same machine and share its {cores} "
        "CPU cores: every server figure includes the client's own cost. The client's and the "
        "server's CPU use is given per cell, and the no-op model shows the cost of the path "
        "without inference.",
        "Absolute times drift on a shared machine; ratios to raw ONNX Runtime measured in this "
        "same run are the figures to compare.",
        f"Requests carry {config.payload} images ({sample_source}); each cell runs "
        f"{config.warmup_s} s warm-up then at least {config.duration_s} s measured (longer for "
        "slow models), closed loop: each caller sends its next request when the reply arrives.",
        "The 'same batch' reference is raw ONNX Runtime at the largest batch the server can form "
        "in the cell: min(concurrency x images/request, max batch) with batching, the request's "
        "own images without.",
    ]
    if args.quick:
        lines.append("--quick run: short cells, figures are indicative only.")
    return lines + list(args.note)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = args.config
    models = resolve_models(args.model_repository, args.models)
    unknown = set(args.settings) - {analysis.BATCHING, analysis.NO_BATCHING}
    if unknown:
        raise UserError(f"unknown --settings {', '.join(sorted(unknown))} (batching, no_batching)")
    if args.target:
        require_serving(args.target)
    run_name = args.run_name or time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS_DIR / run_name
    targets = analysis.read_targets(args.targets)
    claim_folder(output)  # ours, new or empty; a foreign folder is refused
    (output / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")  # beside results

    machine = machine_info()
    pixels, sample_source = load_sample_pixels(args.validation_file, max(config.batch_sizes))
    settings = [analysis.TARGET] if args.target else args.settings
    served = ([NOOP_MODEL] if args.noop else []) + list(models)
    per_setting = len(served) * len(config.concurrencies) * len(config.images_per_request)
    runtimes = len(ORT_VARIANTS) + (1 if args.savedmodel else 0)
    total = len(models) * len(config.batch_sizes) * runtimes + per_setting * len(settings)

    cells, servers = [], {}
    with tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True) as progress:
        run = Run(config, pixels, progress)
        measure_references(run, models, args.savedmodel)
        if args.target:
            cells += drive(run, args.target, analysis.TARGET, served, None)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-repo-") as temporary:
                repository = repository_with_noop(
                    args.model_repository, list(models), Path(temporary)
                )
                for setting in settings:
                    log = output / f"server_{setting}.log"
                    batching = setting == analysis.BATCHING
                    extra = shlex.split(args.server_args)
                    server = benchmark_server(
                        repository, batching, log, *extra,
                        max_batch_size=config.max_batch_size,
                        start_timeout_s=config.server_start_timeout_s,
                    )  # fmt: skip
                    with server:
                        servers[setting] = {
                            "command": server.command[1:],
                            "started": server.started,
                        }
                        cells += drive(run, server.target, setting, served, server.probe())
    machine["load_average_at_end"] = load_average()

    for cell in cells:
        if not cell.get("skipped"):
            ort_rows = run.references.get(cell["model"], {}).get("onnxruntime")
            analysis.add_ratios(cell, ort_rows, config.max_batch_size, machine["usable_cores"])
    cost = analysis.client_cost(cells)
    headline = {
        m: analysis.model_headline(m, cells, run.references[m]["onnxruntime"]) for m in models
    }
    figures = [
        plots.latency_vs_throughput(
            cells, run.references, output / "latency_vs_throughput.png"
        ).name,
        plots.reference_scaling(run.references, output / "reference_scaling.png").name,
    ]
    results = {
        "schema": SCHEMA,
        "run_name": run_name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.latency "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "machine": machine,
        "notes": notes(args, config, machine, sample_source),
        "models": {
            m: {"version_dir": str(p), "onnxruntime_provider": run.providers[m]}
            for m, p in models.items()
        },
        "servers": servers if servers else {analysis.TARGET: {"target": args.target}},
        "references": run.references,
        "cells": cells,
        "client_cost": cost,
        "headline": headline,
        "targets": analysis.targets(headline, targets, cost),
        "figures": figures,
    }
    print("\n".join(summary_lines(results)))
    write_results(results, latency_markdown(results), output, "latency")
    return 0


if __name__ == "__main__":
    run_cli(main)
