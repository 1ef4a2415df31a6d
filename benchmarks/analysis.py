"""From raw cells and references to the figures worth reading: ratios, headline, targets."""

import json
from pathlib import Path

from benchmarks.config import NOOP_MODEL
from benchmarks.references import ceiling, row_at
from benchmarks.stats import ratio
from common.cli import UserError

BATCHING, NO_BATCHING, TARGET = "batching", "no_batching", "target"


def reference_batch_size(
    setting: str, concurrency: int, images_per_request: int, max_batch: int
) -> int:
    """The batch the server can at best form in a cell: a request alone without batching,
    up to every image in flight (capped by --max-batch-size) with it."""
    if setting == NO_BATCHING:
        return min(images_per_request, max_batch)
    return min(concurrency * images_per_request, max_batch)


def expected_latency_s(
    setting: str, concurrency: int, images_per_request: int, ort_rows: list[dict] | None
) -> float:
    """A rough request latency (images in flight / raw throughput), used to size a cell."""
    if not ort_rows:
        return 0.0
    rate = ceiling(ort_rows) if setting != NO_BATCHING else row_at(ort_rows, images_per_request)
    return concurrency * images_per_request / rate["images_per_s"]


def add_ratios(cell: dict, ort_rows: list[dict] | None, max_batch: int, cores: int) -> dict:
    """Every server figure next to raw ONNX Runtime measured in the same run: preferably the
    paired measurement taken just before the cell, else the batch-size sweep."""
    cell["client_cpu_share"] = ratio(cell["client_cpu_s"], cell["duration_s"] * cores)
    cell["server_cpu_share"] = ratio(cell["server_cpu_s"], cell["duration_s"] * cores)
    if not ort_rows:
        return cell
    size = reference_batch_size(
        cell["setting"], cell["concurrency"], cell["images_per_request"], max_batch
    )
    paired, swept = cell.get("paired_ort"), row_at(ort_rows, size)
    same = paired or swept
    cell["reference_batch_size"] = same["batch_size"]
    cell["ort_images_per_s_same_batch"] = same["images_per_s"]
    cell["ratio_to_ort_same_batch"] = ratio(cell["images_per_s"], same["images_per_s"])
    cell["ratio_to_ort_same_batch_sweep"] = ratio(cell["images_per_s"], swept["images_per_s"])
    cell["ratio_to_ort_ceiling"] = ratio(cell["images_per_s"], ceiling(ort_rows)["images_per_s"])
    cell["cpu_efficiency_vs_ort"] = ratio(
        same.get("cpu_ms_per_image"), cell.get("cpu_ms_per_image")
    )
    request = cell["images_per_request"]
    single = paired if paired and paired["batch_size"] == request else row_at(ort_rows, request)
    latency = cell["latency_ms"]
    cell["ort_median_ms_request_batch"] = single["median_ms"]
    cell["p50_over_ort_ms"] = (
        None if latency["p50"] is None else latency["p50"] - single["median_ms"]
    )
    cell["p99_over_ort_ms"] = None if latency["p99"] is None else latency["p99"] - single["p99_ms"]
    return cell


def find_cell(
    cells: list[dict], model: str, setting: str, concurrency: int, ipr: int
) -> dict | None:
    for cell in cells:
        if (cell["model"], cell["setting"], cell["concurrency"], cell["images_per_request"]) == (
            model,
            setting,
            concurrency,
            ipr,
        ) and not cell.get("skipped"):
            return cell
    return None


def batching_gain(
    cells: list[dict], model: str, concurrency: int, ipr: int, cpu: bool = False
) -> float | None:
    """Throughput with batching over without (cpu=True: CPU ms per image without over with)."""
    on = find_cell(cells, model, BATCHING, concurrency, ipr)
    off = find_cell(cells, model, NO_BATCHING, concurrency, ipr)
    if on is None or off is None:
        return None
    if cpu:
        return ratio(off.get("cpu_ms_per_image"), on.get("cpu_ms_per_image"))
    return ratio(on["images_per_s"], off["images_per_s"])


def ort_batch_gain(ort_rows: list[dict] | None) -> dict | None:
    """What batching gains raw ONNX Runtime itself (largest batch over batch 1): the bound on
    any server's batching gain on this machine."""
    if not ort_rows:
        return None
    one, largest = row_at(ort_rows, 1), max(ort_rows, key=lambda row: row["batch_size"])
    return {
        "batch_size": largest["batch_size"],
        "images_per_s": ratio(largest["images_per_s"], one["images_per_s"]),
        "cpu": ratio(one.get("cpu_ms_per_image"), largest.get("cpu_ms_per_image")),
    }


def model_headline(model: str, cells: list[dict], ort_rows: list[dict] | None) -> dict:
    """Best setting vs the ceiling, concurrency-1 latency vs raw, gain of batching."""
    measured = [
        c for c in cells if c["model"] == model and not c.get("skipped") and c["ok_requests"]
    ]
    best = max(measured, key=lambda c: c["images_per_s"], default=None)
    single = row_at(ort_rows, 1) if ort_rows else None
    headline = {
        "best": None
        if best is None
        else {
            key: best.get(key)
            for key in (
                "setting",
                "concurrency",
                "images_per_request",
                "images_per_s",
                "reference_batch_size",
                "ort_images_per_s_same_batch",
                "ratio_to_ort_same_batch",
                "ratio_to_ort_ceiling",
                "cpu_ms_per_image",
                "cpu_efficiency_vs_ort",
            )
        },
        "ort_ceiling": ceiling(ort_rows) if ort_rows else None,
        "ort_single_image": single,
        "ort_batch_gain": ort_batch_gain(ort_rows),
        "concurrency_1": {},
        "batching_gain": {},
        "batching_cpu_gain": {},
    }
    for setting in (BATCHING, NO_BATCHING, TARGET):
        cell = find_cell(cells, model, setting, 1, 1)
        if cell is not None:
            headline["concurrency_1"][setting] = {
                "p50_ms": cell["latency_ms"]["p50"],
                "p99_ms": cell["latency_ms"]["p99"],
                "p50_over_ort_ms": cell.get("p50_over_ort_ms"),
                "p99_over_ort_ms": cell.get("p99_over_ort_ms"),
            }
    for concurrency in sorted({c["concurrency"] for c in measured}):
        for ipr in sorted({c["images_per_request"] for c in measured}):
            gain = batching_gain(cells, model, concurrency, ipr)
            if gain is not None:
                headline["batching_gain"][f"c{concurrency}_x{ipr}"] = gain
                cpu_gain = batching_gain(cells, model, concurrency, ipr, cpu=True)
                headline["batching_cpu_gain"][f"c{concurrency}_x{ipr}"] = cpu_gain
    return headline


MEASURE_NAMES = ("best_ratio_to_ort_same_batch", "batching_gain_c64_x1", "c1_p50_over_ort_ms")


def measures(headline: dict, cost: dict | None) -> dict[str, tuple]:
    """Every measure a targets file may name: (value, the same in CPU time or None, note)."""
    best = headline["best"] or {}
    c1 = headline["concurrency_1"].get(BATCHING) or headline["concurrency_1"].get(TARGET) or {}
    bound = headline["ort_batch_gain"] or {}
    floor = (cost or {}).get("p50_ms_concurrency_1")
    return {
        "best_ratio_to_ort_same_batch": (
            best.get("ratio_to_ort_same_batch"),
            best.get("cpu_efficiency_vs_ort"),
            "CPU view: raw ORT's CPU ms per image / server's + client's",
        ),
        "batching_gain_c64_x1": (
            headline["batching_gain"].get("c64_x1"),
            headline["batching_cpu_gain"].get("c64_x1"),
            f"raw ORT itself gains {format_ratio(bound.get('images_per_s'))} in images/s and "
            f"{format_ratio(bound.get('cpu'))} in CPU per image from batch 1 to "
            f"{bound.get('batch_size', '-')}",
        ),
        "c1_p50_over_ort_ms": (
            c1.get("p50_over_ort_ms"),
            None,
            "the no-op model's p50 at concurrency 1 (gRPC + client + server, no inference): "
            + ("-" if floor is None else f"{floor:.2f} ms"),
        ),
    }


def read_targets(path: Path, measure_names: tuple[str, ...] = MEASURE_NAMES) -> dict:
    """A targets file (benchmarks/targets/latency.json, or another benchmark's with its own
    measures); a UserError names what is wrong."""
    try:
        spec = json.loads(Path(path).read_text())
        known = set(measure_names)
        for target in spec["targets"]:
            if target["measure"] not in known or target["sense"] not in (">=", "<="):
                raise ValueError(f"{target['measure']!r} {target['sense']!r}")
            float(target["threshold"]), str(spec["model"]), str(target["name"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path}: not a targets file ({error}); measures: {', '.join(measure_names)}"
        ) from None
    return spec


def targets(headlines: dict[str, dict], spec: dict, cost: dict | None = None) -> list[dict]:
    """Each target of `spec` (a targets file, benchmarks/targets/) with its measured value
    (None: not run), the same comparison in CPU time, what bounds it, and whether it is met."""
    headline = headlines.get(spec["model"])
    if headline is None:
        return []
    measured = measures(headline, cost)
    results = []
    for target in spec["targets"]:
        value, cpu_view, note = measured[target["measure"]]
        threshold, sense = target["threshold"], target["sense"]
        met = meets(value, sense, threshold)
        results.append(
            {"model": spec["model"], "target": target["name"], "value": value, "sense": sense,
             "threshold": threshold, "met": met, "cpu_view": cpu_view, "note": note}
        )  # fmt: skip
    return results


def meets(value: float | None, sense: str, threshold: float) -> bool | None:
    """Whether a measured value meets a target (">=" or "<=" the threshold); None if not run."""
    if value is None:
        return None
    return value >= threshold if sense == ">=" else value <= threshold


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def client_cost(cells: list[dict]) -> dict | None:
    """What the no-op model shows: the request rate client + transport + server plumbing allow."""
    noop = [
        c for c in cells if c["model"] == NOOP_MODEL and not c.get("skipped") and c["ok_requests"]
    ]
    if not noop:
        return None
    fastest = max(noop, key=lambda c: c["requests_per_s"])
    c1 = [c for c in noop if c["concurrency"] == 1 and c["images_per_request"] == 1]
    return {
        "max_requests_per_s": fastest["requests_per_s"],
        "at": {k: fastest[k] for k in ("setting", "concurrency", "images_per_request")},
        "client_cpu_ms_per_request": fastest["client_cpu_ms_per_request"],
        "p50_ms_concurrency_1": c1[0]["latency_ms"]["p50"] if c1 else None,
    }
