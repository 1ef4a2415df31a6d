"""Benchmarks: real server on 127.0.0.1, real ONNX Runtime sessions, tiny durations.

No timing assertions: the runs must complete, write well-formed results and count errors.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import accuracy, analysis, latency
from benchmarks.classification import classification_report
from benchmarks.config import CLIENTS_PYTHON
from benchmarks.loadgen import Cell, run_cell
from benchmarks.machine import cpu_model
from benchmarks.noop import build_noop_onnx, write_noop_version
from benchmarks.samples import load_sample_pixels, serialized_requests
from benchmarks.server import ServerProcess, benchmark_server
from common.cli import UserError
from common.repository import METADATA_FILE, ONNX_FILE, read_metadata

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--warmup", "0.3", "--duration", "0.5", "--reference-seconds", "0.05"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def strict_json(path: Path) -> dict:
    """Parse JSON refusing NaN/Infinity, as a consumer of the results would."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-finite number {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def assert_pngs(folder: Path, names: list[str]) -> None:
    assert names
    for name in names:
        assert (folder / name).read_bytes()[:8] == PNG_MAGIC, name


def tiny_classifier():
    """A small model honouring the contract (image [N,100,100,1] -> probabilities [N,3])."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((100, 100, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """One tiny model published by the export stage, once for this module."""
    from export.config import ExportOptions
    from export.publish import publish_model

    root = tmp_path_factory.mktemp("bench-repo") / "model_repository"
    pixels, _ = load_sample_pixels(Path("absent.npz"), 8)
    options = ExportOptions(fp16=False, speed_repeats=1, speed_batch_sizes=(1,))
    metadata = {"val_accuracy": 0.5, "backbone": None}
    publish_model(tiny_classifier(), "scratch_cnn", root, pixels, metadata, options=options)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory):
    """One server with batching for the module's tests against a running target."""
    log = tmp_path_factory.mktemp("bench-server") / "server.log"
    with benchmark_server(repository, True, log) as running:
        yield running


def test_latency_run_starts_its_own_servers(repository: Path, tmp_path: Path):
    output = tmp_path / "run"
    code = latency.main(
        [
            "--model-repository",
            str(repository),
            "--models",
            "scratch_cnn",
            "--concurrency",
            "2",
            "--images-per-request",
            "1,3",
            "--batch-sizes",
            "1,2",
            "--output",
            str(output),
            "--run-name",
            "test",
            *TINY,
        ]
    )
    assert code == 0
    results = strict_json(output / "latency.json")
    assert finite_numbers(results)
    for key in ("machine", "notes", "references", "cells", "headline", "targets", "client_cost"):
        assert key in results
    assert results["machine"]["usable_cores"] >= 1
    assert any("share" in note and "cores" in note for note in results["notes"])
    spec = json.loads((output / "targets.json").read_text())  # the targets, beside the results
    assert [t["target"] for t in results["targets"]] == [t["name"] for t in spec["targets"]]
    assert all(t["value"] is None or t["met"] in (True, False) for t in results["targets"])

    references = results["references"]["scratch_cnn"]
    for runtime in (
        "onnxruntime",
        "onnxruntime_defaults",
        "onnxruntime_server_options",
        "savedmodel",
    ):
        assert [row["batch_size"] for row in references[runtime]] == [1, 2]
        assert all(row["images_per_s"] > 0 and row["runs"] >= 3 for row in references[runtime])

    cells = results["cells"]
    keys = {(c["model"], c["setting"], c["images_per_request"]) for c in cells}
    assert keys == {
        (m, s, k)
        for m in ("noop", "scratch_cnn")
        for s in ("batching", "no_batching")
        for k in (1, 3)
    }
    for cell in cells:
        assert cell["ok_requests"] > 0 and cell["errors"] == {}, cell
        assert cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"] <= cell["latency_ms"]["max"]
        assert cell["images_per_s"] == pytest.approx(
            cell["requests_per_s"] * cell["images_per_request"]
        )
    scratch = [c for c in cells if c["model"] == "scratch_cnn"]
    assert all(c["ratio_to_ort_same_batch"] > 0 and c["paired_ort"] for c in scratch)
    assert {c["reference_batch_size"] for c in scratch if c["setting"] == "no_batching"} == {1, 3}

    headline = results["headline"]["scratch_cnn"]
    assert headline["best"]["images_per_s"] == max(c["images_per_s"] for c in scratch)
    assert set(headline["batching_gain"]) == {"c2_x1", "c2_x3"}
    assert results["client_cost"]["max_requests_per_s"] > 0
    assert [t["model"] for t in results["targets"]] == ["scratch_cnn"] * 3
    assert_pngs(output, results["figures"])
    markdown = (output / "latency.md").read_text()
    assert "## Headline" in markdown and "| scratch_cnn |" in markdown
    assert "server started" in (output / "server_batching.log").read_text()


def test_load_generator_counts_errors_by_status(server: ServerProcess, repository: Path):
    pixels, _ = load_sample_pixels(Path("absent.npz"), 4)
    requests = serialized_requests("no_such_model", pixels, 1, 2, "raw")
    result = run_cell(
        server.target, Cell("no_such_model", 2, 1, 0.05, 0.3), requests, probe=server.probe()
    )
    assert result["ok_requests"] == 0
    assert result["errors"]["NOT_FOUND"] == result["requests"] > 0
    assert result["latency_ms"]["p50"] is None and result["images_per_s"] == 0

    good = serialized_requests("scratch_cnn", pixels, 2, 2, "png")
    result = run_cell(
        server.target, Cell("scratch_cnn", 1, 2, 0.05, 0.3), good, probe=server.probe()
    )
    assert result["ok_requests"] > 0 and result["errors"] == {}
    assert result["server_cpu_s"] >= 0 and result["client_cpu_s"] > 0
    assert result["server_inference_runs"] > 0 and 1 <= result["server_mean_batch_size"] <= 2


def test_latency_against_running_target(server: ServerProcess, repository: Path, tmp_path: Path):
    code = latency.main(
        [
            "--model-repository",
            str(repository),
            "--models",
            "scratch_cnn",
            "--target",
            server.target,
            "--concurrency",
            "1",
            "--images-per-request",
            "1",
            "--batch-sizes",
            "1",
            "--no-savedmodel",
            "--output",
            str(tmp_path),
            *TINY,
        ]
    )
    assert code == 0
    results = strict_json(tmp_path / "latency.json")
    # The target has no no-op model: its cells report NOT_FOUND, the model's cells succeed.
    by_model = {cell["model"]: cell for cell in results["cells"]}
    assert by_model["noop"]["errors"].get("NOT_FOUND", 0) > 0
    assert (
        by_model["scratch_cnn"]["setting"] == "target"
        and by_model["scratch_cnn"]["ok_requests"] > 0
    )
    assert results["client_cost"] is None
    assert set(results["references"]["scratch_cnn"]) == {
        "onnxruntime",
        "onnxruntime_defaults",
        "onnxruntime_server_options",
    }


def write_digit_folder(root: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    """A Hand_written_digits layout of real PNG and JPEG files, in several sizes."""
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / "Hand_written_digits" / f"{label}_digits"
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image).resize((60 + 10 * index, 60 + 10 * index))
        picture.save(folder / f"{index}.{'png' if index % 2 else 'jpg'}")
    return root


def test_accuracy_with_folder_and_server(server: ServerProcess, repository: Path, tmp_path: Path):
    pixels, _ = load_sample_pixels(Path("absent.npz"), 9)
    labels = np.arange(9) % 3
    np.savez(tmp_path / "validation_images.npz", images=pixels, labels=labels.astype(np.int64))
    data = write_digit_folder(tmp_path / "data", pixels, labels)
    output = tmp_path / "accuracy"
    code = accuracy.main(
        [
            "--model-repository",
            str(repository),
            "--models",
            "scratch_cnn",
            "--validation-file",
            str(tmp_path / "validation_images.npz"),
            "--data-dir",
            str(data),
            "--target",
            server.target,
            "--output",
            str(output),
        ]
    )
    assert code == 0
    results = strict_json(output / "accuracy.json")
    assert finite_numbers(results)
    assert results["datasets"]["validation"]["per_class"] == [3, 3, 3]
    assert results["datasets"]["Hand_written_digits"]["count"] == 9
    combos = {(e["dataset"], e["polarity"], e["format"]) for e in results["evaluations"]}
    assert combos == {
        (d, p, f)
        for d in ("validation", "Hand_written_digits")
        for p in ("normal", "inverted")
        for f in ("onnx", "savedmodel", "server")
    }
    for evaluation in results["evaluations"]:
        assert 0 <= evaluation["accuracy"] <= 1
        assert np.asarray(evaluation["confusion"]).sum() == 9
        assert set(evaluation["per_class"]) == {"0", "1", "2"}
    # The same pixels through the server and through ONNX Runtime directly: same answers.
    for pair in results["agreement"]:
        assert pair["label_agreement"] == 1.0, pair
        assert pair["max_abs_probability_difference"] < 1e-3, pair
    assert_pngs(output, results["figures"])
    assert len(results["figures"]) == 4  # 2 datasets x 1 model x 2 polarities


def test_classification_report_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 0])
    report = classification_report(labels, np.eye(3)[predicted], ["0", "1", "2"])
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert report["per_class"]["0"]["precision"] == pytest.approx(1 / 3)
    assert report["per_class"]["1"]["recall"] == 1.0
    assert report["per_class"]["1"]["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert report["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_the_cpu_is_named_with_its_generation_and_vector_units(tmp_path: Path):
    """Two "AMD EPYC" machines, with and without AVX-512, read apart in every results file."""
    cpuinfo = tmp_path / "cpuinfo"
    entry = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(entry.format(model=17) + "flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_model(cpuinfo) == "AMD EPYC (family 25 model 17, AVX2, AVX-512, AVX512-BF16)"
    cpuinfo.write_text(entry.format(model=1) + "flags\t\t: fpu sse avx2\n")
    assert cpu_model(cpuinfo) == "AMD EPYC (family 25 model 1, AVX2)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Old CPU\nflags\t\t: fpu sse\n")
    assert cpu_model(cpuinfo) == "Old CPU (no AVX2)"
    assert cpu_model(tmp_path / "missing")  # no /proc/cpuinfo: what platform knows


def test_noop_model_honours_the_contract(tmp_path: Path):
    import hashlib

    import onnxruntime as ort

    session = ort.InferenceSession(
        build_noop_onnx().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    images = np.random.default_rng(0).uniform(0, 255, (5, 100, 100, 1)).astype(np.float32)
    (probabilities,) = session.run(["probabilities"], {"image": images})
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    folder = write_noop_version(tmp_path)
    metadata = read_metadata(folder)
    assert metadata["name"] == "noop" and metadata["input"]["shape"] == [-1, 100, 100, 1]
    digest = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    assert metadata["files"] == {ONNX_FILE: digest} and (folder / METADATA_FILE).exists()


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("benchmarks.latency", "--model-repository", "/nonexistent/repo"),
            "model repository not found",
        ),
        (
            ("benchmarks.accuracy", "--model-repository", "/nonexistent/repo"),
            "model repository not found",
        ),
        (
            ("benchmarks.flood", "--model-repository", "/nonexistent/repo"),
            "model repository not found",
        ),
        (
            ("benchmarks.protocols", "--model-repository", "/nonexistent/repo"),
            "model repository not found",
        ),
    ],
)
def test_user_errors_are_one_line(args: tuple[str, ...], message: str):
    result = run_command(*args)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_target_and_bad_data_dir(repository: Path, tmp_path: Path, capsys):
    from common.cli import UserError

    with pytest.raises(UserError, match="no SERVING digits server reachable"):
        latency.main(["--model-repository", str(repository), "--target", "127.0.0.1:1"])
    (tmp_path / "data" / "0_digits").mkdir(parents=True)
    with pytest.raises(UserError, match="class folder"):
        accuracy.main(
            [
                "--model-repository",
                str(repository),
                "--data-dir",
                str(tmp_path / "data"),
                "--output",
                str(tmp_path / "out"),
            ]
        )


@pytest.mark.parametrize(
    "module",
    [
        "benchmarks.latency",
        "benchmarks.accuracy",
        "benchmarks.flood",
        "benchmarks.protocols",
        "benchmarks.throughput",
    ],
)
def test_help(module: str):
    result = run_command(module, "--help")
    assert result.returncode == 0 and "--model-repository" in result.stdout


def test_flood_measures_memory_and_answers_against_two_checkouts(repository, tmp_path):
    """A tiny flood, this checkout against itself as the baseline: every field, the plot."""
    from benchmarks import flood

    output = tmp_path / "flood"
    args = ["--model-repository", str(repository), "--output", str(output)]
    flood.main(
        [*args, "--requests", "4", "--side", "400", "--rounds", "2", "--baseline-root", str(ROOT)]
    )
    results = strict_json(output / "flood.json")
    assert finite_numbers(results) and results["servers"][0]["server"].startswith("this checkout (")
    for server in results["servers"]:
        assert server["serving_after"] and len(server["rounds"]) == 2
        for round_ in server["rounds"]:
            assert sum(round_["answers"].values()) == 4
            assert 0 < round_["rss_before_mb"] <= round_["rss_peak_mb"]
    assert_pngs(output, [results["figure"]])
    assert "| this checkout (" in (output / "flood.md").read_text()


def test_digits_v1_and_oip_side_by_side_with_one_load_generator(server: ServerProcess):
    from benchmarks import protocols

    cells = protocols.side_by_side(server.target, "scratch_cnn", [2], seconds=0.5)
    assert [cell["protocol"] for cell in cells] == ["digits.v1", "oip"]
    for cell in cells:
        assert cell["ok_requests"] > 0 and cell["errors"] == {}, cell
    (row,) = protocols.ratio_rows(cells)
    assert row[0] == "2" and float(row[3]) > 0


def test_http_frameworks_measures_both_libraries(tmp_path):
    from benchmarks import http_frameworks

    if not CLIENTS_PYTHON.is_file():
        pytest.skip("no .venv-clients: run `make clients` (make test does)")
    output = tmp_path / "http"
    http_frameworks.main(["--seconds", "0.3", "--concurrency", "2", "--output", str(output)])
    results = strict_json(output / "http_frameworks.json")
    assert [cell["framework"] for cell in results["cells"]] == ["aiohttp", "starlette"]
    for cell in results["cells"]:
        assert cell["requests_per_s"] > 0 and cell["server_cpu_ms_per_request"] > 0
    assert "| 2 | aiohttp |" in (output / "http_frameworks.md").read_text()


def test_targets_are_data_and_a_bad_file_is_one_line(tmp_path):
    """The shipped targets name only measures the analysis computes; a file naming anything
    else, or no file, is refused with the measures that exist."""
    from benchmarks.config import LATENCY_TARGETS

    spec = analysis.read_targets(LATENCY_TARGETS)
    assert {t["measure"] for t in spec["targets"]} <= set(analysis.MEASURE_NAMES)
    headline = {"best": {}, "concurrency_1": {}, "ort_batch_gain": {}, "batching_gain": {},
                "batching_cpu_gain": {}}  # fmt: skip
    assert set(analysis.measures(headline, None)) == set(analysis.MEASURE_NAMES)
    bad = tmp_path / "targets.json"
    bad.write_text(json.dumps({"model": "m", "targets": [
        {"measure": "speed", "name": "x", "sense": ">=", "threshold": 1}]}))  # fmt: skip
    for path in (bad, tmp_path / "absent.json"):
        with pytest.raises(UserError, match="not a targets file.*c1_p50_over_ort_ms"):
            analysis.read_targets(path)


def test_throughput_against_a_baseline_checkout_reports_cpu_per_side(repository, tmp_path):
    """This checkout at 1 and 2 workers beside itself as the baseline, and the gRPC floor (two
    processes) on the no-op cell: every cell has the cores of each side, the idle share and
    the CPU per request; the targets are judged."""
    from benchmarks import throughput

    output = tmp_path / "throughput"
    args = ["--model-repository", str(repository), "--output", str(output),
            "--baseline", str(ROOT), "--workers", "1,2", "--rounds", "1"]  # fmt: skip
    throughput.main([*args, *TINY])
    results = strict_json(output / "throughput.json")
    assert finite_numbers(results)
    assert results["servers"] == ["baseline", "workers=1", "workers=2", "grpc-floor"]
    cells = results["cells"]
    assert {(c["server"], c["model"], c["concurrency"]) for c in cells} >= {
        ("workers=2", "scratch_cnn", 32), ("baseline", "noop", 32), ("grpc-floor", "noop", 32)
    }  # fmt: skip
    assert {c["model"] for c in cells if c["server"] == "grpc-floor"} == {"noop"}
    for cell in cells:
        assert cell["ok_requests"] > 0 and not cell["errors"], cell
        assert cell["server_cores"] > 0 and cell["client_cores"] > 0
        assert 0 <= cell["machine_idle_share"] <= 1
        assert cell["server_cpu_ms_per_request"] > 0 and cell["client_cpu_ms_per_request"] > 0
    assert results["headlines"]["c32_throughput_over_baseline"] > 0
    # a ratio of two rates, reported, not asserted below 1: with the machine busy (a second
    # suite beside this one) the floor's one short round came out 3 % slower than the no-op
    assert results["headlines"]["noop_rate_over_grpc_floor"] > 0
    assert ("grpc-floor", "noop", 1) in {(c["server"], c["model"], c["concurrency"]) for c in cells}
    assert results["headlines"]["c1_p50_noop_over_grpc_floor_ms"] is not None
    (by_model,) = results["raw_onnxruntime_after_pause"].values()  # one round
    lone = by_model["scratch_cnn"]
    assert lone["batch_size"] == 1 and lone["median_ms"] > 0
    assert results["headlines"]["c1_p50_over_ort_after_pause_ms"] is not None
    assert set(results["headlines"]) == {"best_c32_setting", *throughput.MEASURES}
    assert {t["measure"] for t in results["targets"]} >= {"noop_rate_over_baseline"}
    assert_pngs(output, ["throughput.png"])
    assert "| workers=2 | scratch_cnn | 32 x 1 |" in (output / "throughput.md").read_text()


def test_a_reference_with_pauses_times_the_runs_and_not_the_pauses():
    """A lone caller's image comes after a pause: each run waits, untimed, before it starts."""
    from benchmarks.references import time_batch

    calls = []
    batch = np.zeros((1, 100, 100, 1), np.float32)
    row = time_batch(calls.append, batch, seconds=0.2, min_runs=3, warmup_runs=1, pause_s=0.05)
    assert 3 <= row["runs"] <= 5  # 0.2 s of 50 ms pauses, not thousands of runs back to back
    assert len(calls) == row["runs"] + 1  # the warm-up run is not counted
    assert row["median_ms"] < 50  # the pause is not in the timed interval
    assert time_batch(calls.append, batch, seconds=0.05, min_runs=3)["runs"] > 100


def test_throughput_runs_only_the_cells_named(repository, tmp_path):
    """--cells: an A/B run of one cell (two checkouts, alternating rounds); the headlines of
    cells not run are None, and a cell that does not exist is a one-line error."""
    from benchmarks import throughput

    output = tmp_path / "throughput"
    args = ["--model-repository", str(repository), "--output", str(output),
            "--baseline", str(ROOT), "--workers", "2", "--rounds", "2",
            "--cells", "scratch_cnn:32x1"]  # fmt: skip
    throughput.main([*args, *TINY])
    results = strict_json(output / "throughput.json")
    assert {(c["server"], c["model"], c["concurrency"], c["round"]) for c in results["cells"]} == {
        (server, "scratch_cnn", 32, r) for server in ("baseline", "workers=2") for r in (1, 2)
    }
    assert results["headlines"]["c32_throughput_over_baseline"] > 0
    assert results["headlines"]["noop_rate_over_baseline"] is None
    result = run_command("benchmarks.throughput", "--cells", "scratch_cnn:64x1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "scratch_cnn:32x1" in lines[0]


def test_throughput_targets_naming_an_unknown_measure_are_one_line(tmp_path):
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"model": "scratch_cnn", "targets": [
        {"measure": "c32_speedup", "name": "x", "sense": ">=", "threshold": 1}]}))  # fmt: skip
    result = run_command("benchmarks.throughput", "--targets", str(targets))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "c32_speedup" in lines[0], result.stderr


def test_training_precision_times_both_policies_side_by_side(tmp_path):
    from benchmarks import training_precision

    output = tmp_path / "precision"
    training_precision.main(["--images", "48", "--rounds", "2", "--output", str(output)])
    results = strict_json(output / "training_precision.json")
    policies = [row["policy"] for row in results["rows"]]
    assert policies == ["float32", "mixed_bfloat16"] * 2
    for row in results["rows"]:
        assert min(row[key] for key in ("trunk_ms", "trunk_cpu_ms", "phase2_ms")) > 0
    # bfloat16 keeps 8 significant bits: the features differ, but by about a percent
    errors = [row["feature_error"] for row in results["rows"] if "feature_error" in row]
    assert len(errors) == 2 and all(0 < error < 0.1 for error in errors)
    assert all(len(ratios) == 2 for ratios in results["speedups"].values())
    assert "| 1 | mixed_bfloat16 |" in (output / "training_precision.md").read_text()
