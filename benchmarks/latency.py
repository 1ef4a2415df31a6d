"""`python -m benchmarks.latency`: the server under closed-loop load, next to raw ONNX Runtime
and the TF SavedModel measured in-process in the same run.

    python -m benchmarks.latency                    # full run, writes benchmarks/results/<run>/
    python -m benchmarks.latency --quick            # a short smoke run
    python -m benchmarks.latency --target host:port # a server that is already running
"""

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import analysis, plots
from benchmarks.config import (
    DEFAULT_REPOSITORY,
    DEFAULT_VALIDATION_FILE,
    NOOP_MODEL,
    RESULTS_DIR,
    LatencyConfig,
    quick,
)
from benchmarks.loadgen import Cell, run_cell
from benchmarks.machine import load_average, machine_info
from benchmarks.noop import repository_with_noop
from benchmarks.references import best_per_batch, row_at, sweep, time_batch
from benchmarks.report import latency_markdown, summary_lines, write_results
from benchmarks.runtimes import (
    ORT_VARIANTS,
    as_model_input,
    onnx_predict,
    resolve_models,
    savedmodel_predict,
)
from benchmarks.samples import load_sample_pixels, serialized_requests
from benchmarks.server import ServerProbe, ServerProcess, require_serving, started_record
from common.cli import (
    ArgumentParser,
    UserError,
    non_negative_float,
    positive_float,
    positive_int,
    run_cli,
)
from common.ownership import claim_folder

SCHEMA = "digits-benchmarks/latency/1"


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Latency/throughput of the gRPC server (dynamic batching on and off) against "
        "raw ONNX Runtime and the TF SavedModel run in-process on the same machine.",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        help="model repository to serve and to time in-process [%(default)s]",
    )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        help="comma list of models [every model in the repository]",
    )
    parser.add_argument("--output", type=Path, help=f"results folder [{RESULTS_DIR}/<run-name>]")
    parser.add_argument(
        "--run-name", default=time.strftime("%Y%m%d-%H%M%S"), help="name of this run [a timestamp]"
    )
    parser.add_argument(
        "--target",
        help="HOST:PORT of a running server to benchmark instead of "
        "starting one (then only its own batching setting is measured)",
    )
    parser.add_argument("--concurrency", type=int_list, help="concurrency levels [1,4,16,64]")
    parser.add_argument("--images-per-request", type=int_list, help="images per request [1,8]")
    parser.add_argument("--batch-sizes", type=int_list, help="reference batch sizes [1,2,...,64]")
    parser.add_argument("--warmup", type=non_negative_float, help="seconds of warm-up per cell [1]")
    parser.add_argument("--duration", type=positive_float, help="measured seconds per cell [5]")
    parser.add_argument(
        "--reference-seconds", type=positive_float, help="seconds per reference batch size [1]"
    )
    parser.add_argument(
        "--max-batch-size", type=positive_int, help="the started servers' --max-batch-size [64]"
    )
    parser.add_argument("--payload", choices=("png", "raw"), help="what requests carry [png]")
    parser.add_argument(
        "--settings",
        type=lambda s: [x for x in s.split(",") if x],
        default=[analysis.BATCHING, analysis.NO_BATCHING],
        help="server settings to run: batching,no_batching [both]",
    )
    parser.add_argument(
        "--no-savedmodel", action="store_true", help="skip the TF SavedModel reference"
    )
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op client-cost cells")
    parser.add_argument(
        "--validation-file",
        type=Path,
        default=DEFAULT_VALIDATION_FILE,
        help="images to send (else bundled digits) [%(default)s]",
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a note to write into the results (repeatable)"
    )
    parser.add_argument(
        "--server-args",
        default="",
        help='extra flags for the servers this command starts, e.g. "--batch-delay-us 0"',
    )
    parser.add_argument("--quick", action="store_true", help="a short run: fewer, shorter cells")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> LatencyConfig:
    config = quick(LatencyConfig()) if args.quick else LatencyConfig()
    overrides = {
        "concurrencies": args.concurrency,
        "images_per_request": args.images_per_request,
        "batch_sizes": args.batch_sizes,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "reference_seconds": args.reference_seconds,
        "payload": args.payload,
        "max_batch_size": args.max_batch_size,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


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
    args: argparse.Namespace, config: LatencyConfig, machine: dict, sample_source: str
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
    config = build_config(args)
    models = resolve_models(args.model_repository, args.models)
    unknown = set(args.settings) - {analysis.BATCHING, analysis.NO_BATCHING}
    if unknown:
        raise UserError(f"unknown --settings {', '.join(sorted(unknown))} (batching, no_batching)")
    if args.target:
        require_serving(args.target)
    output = args.output or RESULTS_DIR / args.run_name
    claim_folder(output)  # ours, new or empty; a foreign folder is refused

    machine = machine_info()
    pixels, sample_source = load_sample_pixels(args.validation_file, max(config.batch_sizes))
    settings = [analysis.TARGET] if args.target else args.settings
    served = ([] if args.no_noop else [NOOP_MODEL]) + list(models)
    per_setting = len(served) * len(config.concurrencies) * len(config.images_per_request)
    runtimes = len(ORT_VARIANTS) + (0 if args.no_savedmodel else 1)
    total = len(models) * len(config.batch_sizes) * runtimes + per_setting * len(settings)

    cells, servers = [], {}
    with tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True) as progress:
        run = Run(config, pixels, progress)
        measure_references(run, models, not args.no_savedmodel)
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
                    limits = (config.max_batch_size, config.server_start_timeout_s)
                    extra = tuple(shlex.split(args.server_args))
                    with ServerProcess(repository, batching, log, *limits, extra) as server:
                        started = started_record(log)
                        servers[setting] = {"command": server.command[1:], "started": started}
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
        "run_name": args.run_name,
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
        "targets": analysis.targets(headline, cost),
        "figures": figures,
    }
    print("\n".join(summary_lines(results)))
    write_results(results, latency_markdown(results), output, "latency")
    return 0


if __name__ == "__main__":
    run_cli(main)
