"""tf.distribute: MirroredStrategy over two logical CPU devices, and two worker processes of
MultiWorkerMirroredStrategy on 127.0.0.1 (TF_CONFIG), through the real command."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

import training.models  # noqa: F401  (registers PolarityNormalization for load_model)
from tests.test_data import write_digit_folder
from training.cluster import cluster_role, loopback_tf_configs

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
TINY_VGG16 = ("--base-weights", "digits", "--pretrain-stages", "32x1,40x1")
TINY_VGG16 += ("--pretrain-per-class", "8", "--vgg16-batch-size", "8", "--finetune-epochs", "1")
DIGEST = re.compile(r"^(\w+): weights sha256 ([0-9a-f]{64})$", re.MULTILINE)


def run_module(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_mirrored_on_two_devices_trains_the_one_device_model(tmp_path):
    """Same seed and global batch: one device and two mirrored replicas give the same
    weights within float tolerance (dropout off, see tests/distributed_training_run.py)."""
    data = write_digit_folder(tmp_path / "Hand_written_digits")
    cache = tmp_path / "cache"  # the one-device run pretrains the backbone both then use
    models = ("scratch_cnn", "vgg16_finetuned")
    outputs = {}
    for distribute in ("none", "mirrored"):
        outputs[distribute] = tmp_path / distribute
        args = (distribute, str(data), str(outputs[distribute]), str(cache), *models)
        log = run_module("tests.distributed_training_run", *args)
        expected = "2 replica(s) on 1 worker(s)" if distribute == "mirrored" else "1 replica(s)"
        assert f"distribute: {distribute}, {expected}" in log
    images = np.load(outputs["none"] / "validation_images.npz")["images"][..., None]
    for name in models:
        one, two = (
            keras.models.load_model(outputs[d] / "keras" / f"{name}.keras")
            for d in ("none", "mirrored")
        )
        pairs = list(zip(one.get_weights(), two.get_weights(), strict=True))
        weight_change = max(float(np.max(np.abs(a - b))) for a, b in pairs)
        pixels = images.astype(np.float32)
        probabilities = [model.predict(pixels, verbose=0) for model in (one, two)]
        output_change = float(np.max(np.abs(probabilities[0] - probabilities[1])))
        print(f"{name}: weights differ by up to {weight_change:.1e}, outputs {output_change:.1e}")
        # Summation order differs between one device and two; Adam divides each gradient by
        # its own running size, so a near-zero gradient's rounding can move a weight by up to
        # one learning-rate step (1e-3 here), never more.
        assert weight_change < 1e-3 and output_change < 1e-3
        assert pairs and max(float(np.max(np.abs(a))) for a, _ in pairs) > 0.01


def start_workers(tmp_path: Path, args: list[str], count: int = 2) -> list[subprocess.Popen]:
    """`count` worker processes of the real command on 127.0.0.1, each with its own TMPDIR."""
    command = [sys.executable, "-m", "training.run", "--distribute", "multi-worker", *args]
    workers = []
    for index, tf_config in enumerate(loopback_tf_configs(count)):
        tmp = tmp_path / f"tmp{index}"
        tmp.mkdir(exist_ok=True)
        env = os.environ | {"TF_CONFIG": tf_config, "TMPDIR": str(tmp)}
        workers.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return workers


def finish(workers: list[subprocess.Popen]) -> list[str]:
    """Every worker's output; each must exit 0 within the time limit."""
    logs = []
    try:
        for worker in workers:
            logs.append(worker.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-4000:]
    return logs


def training_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    common = ["--data-dir", str(data), "--output", str(out), "--cache-dir", str(cache)]
    tiny = ["--batch-size", "8", "--font-digits", "4"]
    return common + ["--no-export", "--verbose", "2", *tiny, *extra]


def test_two_workers_train_one_model_and_only_the_chief_writes(tmp_path):
    data = write_digit_folder(tmp_path / "Hand_written_digits")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = training_args(data, out, cache, "--epochs", "1", *TINY_VGG16)
    chief_log, worker_log = finish(start_workers(tmp_path, args))

    assert "this is worker 0 (chief)" in chief_log
    assert "this is worker 1 (non-chief)" in worker_log
    chief_digests = dict(DIGEST.findall(chief_log))
    assert set(chief_digests) == {"scratch_cnn", "vgg16_finetuned"}
    assert chief_digests == dict(DIGEST.findall(worker_log))  # all-reduced: the same model
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*"))
    assert not [path for path in written if "workertemp" in path or "checkpoints" in path]
    assert {"metrics.json", "keras/scratch_cnn.keras", "keras/vgg16_finetuned.keras"} <= set(
        written
    )
    saved = keras.models.load_model(out / "keras" / "scratch_cnn.keras")
    assert saved.count_params() > 0
    backbones = sorted(path.suffix for path in (cache / "backbones").iterdir())
    assert backbones == ["", ".h5", ".json"]  # the ownership marker, weights, sidecar
    assert list((tmp_path / "tmp1").iterdir()) == []  # the non-chief's scratch is gone
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"scratch_cnn", "vgg16_finetuned"}


def first_epoch(log: str) -> int:
    return int(re.search(r"^Epoch (\d+)/", log, re.MULTILINE).group(1))


def test_interrupted_multi_worker_run_resumes_from_its_backup(tmp_path):
    """Both workers killed after a completed epoch (a preempted node pool, a Job restart):
    started again, they go on from the epoch after the last backup."""
    data = write_digit_folder(tmp_path / "Hand_written_digits", per_class=60)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = training_args(data, out, cache, "--models", "scratch_cnn", "--epochs", "3")
    workers = start_workers(tmp_path, args)
    backup = out / "checkpoints" / "scratch_cnn" / "train" / "backup"
    deadline = time.monotonic() + TIMEOUT_S
    while not list(backup.rglob("checkpoint")) and time.monotonic() < deadline:
        assert all(worker.poll() is None for worker in workers), "a worker stopped early"
        time.sleep(0.05)
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert not (out / "metrics.json").exists()

    chief_log, _ = finish(start_workers(tmp_path, args))
    assert first_epoch(chief_log) >= 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["scratch_cnn"]["epochs_run"] == 3


@pytest.mark.parametrize(
    ("tf_config", "problem"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG: not a cluster and task description"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index 3"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps'"),
    ],
)
def test_bad_tf_config_is_one_line_before_any_work(tmp_path, tf_config, problem):
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    done = subprocess.run(
        [sys.executable, "-m", "training.run", "--distribute", "multi-worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and problem in done.stderr


def test_chief_is_the_chief_task_else_worker_zero(monkeypatch):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    for task, chief in ((("chief", 0), True), (("worker", 0), False), (("worker", 1), False)):
        tf_config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
        role = cluster_role("multi-worker")
        assert role.is_chief is chief and role.workers == 3
    assert cluster_role("mirrored").workers == 1
