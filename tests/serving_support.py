"""A tiny real model repository and an in-process server, for tests/test_serving*.py.

The repository holds two small CNNs with untrained (seeded) weights, exported to ONNX once
and cached under .pytest_cache, keyed by the source files that shape them; each test
session copies the cache, so tests may add versions freely.
"""

import asyncio
import functools
import hashlib
import io
import json
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from benchmarks.server import ServerProcess, free_port  # noqa: F401  (used by the tests)
from common.contract import IMAGE_SIZE
from common.repository import METADATA_FILE, ONNX_FILE, list_versions, version_dir
from serving.config import ServerConfig
from serving.server import DigitServer

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"scratch_cnn": 1, "second_cnn": 2}  # name: weight seed
FIXTURE_VERSION = b"2"  # bump when the builder below changes


def cache_key() -> str:
    """Changes with the sources that shape the exported graphs (model builders, export)."""
    digest = hashlib.sha256(FIXTURE_VERSION)
    for path in [ROOT / "training/models.py", *sorted((ROOT / "export").glob("*.py"))]:
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def seeded_model(seed: int):
    """The scratch CNN with seeded weights and a sharpened softmax (clear, distinct answers)."""
    import tf_keras as keras

    from training.models import build_scratch_cnn

    keras.utils.set_random_seed(seed)
    model = build_scratch_cnn()
    head = model.get_layer("probabilities")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 40.0, bias])
    return model


def validation_images(count: int = 16) -> np.ndarray:
    return np.stack([digit_pixels(i) for i in range(count)])


def publish(model, name: str, repository: Path) -> Path:
    """export.publish.publish_model (quick checks), or tf2onnx directly without the export stage."""
    metadata = {"val_accuracy": 0.5, "backbone": None}
    try:
        from export.config import ExportOptions
        from export.publish import publish_model
    except ImportError:
        return convert_directly(model, name, repository, metadata)
    quick = ExportOptions(fp16=False, speed_repeats=1, speed_batch_sizes=(1,), batch_one_images=4)
    return publish_model(model, name, repository, validation_images(), metadata, options=quick)


def convert_directly(model, name: str, repository: Path, metadata: dict) -> Path:
    import tensorflow as tf
    import tf2onnx

    folder = version_dir(repository, name, 1)
    folder.mkdir(parents=True)
    spec = (tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(
        model, input_signature=spec, opset=17, output_path=str(folder / ONNX_FILE)
    )
    metadata = {
        "name": name,
        "version": 1,
        "classes": ["0", "1", "2"],
        "input": {"name": "image", "dtype": "float32", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 1]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [-1, 3]},
        **metadata,
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return folder


def build_repository(destination: Path) -> None:
    from common.tf_setup import configure_tensorflow_environment

    configure_tensorflow_environment()
    for name, seed in MODELS.items():
        publish(seeded_model(seed), name, destination)


def cached_repository(cache_root: Path, destination: Path) -> Path:
    """Copy the cached repository to `destination`, building the cache first if needed."""
    cached = cache_root / cache_key()
    if not cached.is_dir():
        building = cache_root / f".building-{cache_key()}"
        shutil.rmtree(building, ignore_errors=True)
        build_repository(building)
        for stale in cache_root.iterdir():
            if stale != building:
                shutil.rmtree(stale, ignore_errors=True)
        building.rename(cached)
    shutil.copytree(cached, destination)
    return destination


def add_version(repository: Path, name: str, source: int | None = None) -> int:
    """Publish a copy of the newest version of `name` (or of `source`) as the next one
    (atomic rename)."""
    model_dir = repository / name
    newest = list_versions(model_dir)[-1]
    version = newest + 1
    temporary = model_dir / f".tmp-copy-{version}"
    shutil.copytree(model_dir / str(source or newest), temporary)
    metadata = json.loads((temporary / METADATA_FILE).read_text())
    metadata["version"] = version
    (temporary / METADATA_FILE).write_text(json.dumps(metadata))
    temporary.rename(model_dir / str(version))
    return version


# ---- images ---------------------------------------------------------------------------


@functools.cache
def bundled_digits() -> np.ndarray:
    with np.load(ROOT / "training/bundled/mnist_digits.npz") as archive:
        return archive["images"][:256]


def digit_pixels(index: int) -> np.ndarray:
    """A real handwritten digit from the bundled archive, uint8 [100, 100], distinct per index."""
    small = bundled_digits()[index]
    return np.asarray(Image.fromarray(small).resize((IMAGE_SIZE, IMAGE_SIZE)))


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def direct_probabilities(repository: Path, name: str, pixels: np.ndarray, version: int = 1):
    """The model's own answer: ONNX Runtime on float32 [N, 100, 100, 1], no server."""
    session = ort.InferenceSession(
        str(version_dir(repository, name, version) / ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    batch = pixels.astype(np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
    return session.run(None, {"image": batch})[0]


# ---- servers --------------------------------------------------------------------------


def server_config(repository: Path, **overrides) -> ServerConfig:
    base = ServerConfig(
        model_repository=repository,
        port=0,
        metrics_port=0,
        http_port=0,
        poll_seconds=0,
        grace_seconds=5,
        max_message_bytes=2 * 1024 * 1024,
    )
    return replace(base, **overrides)


class ServerThread:
    """A real DigitServer on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.server: DigitServer | None = None
        self.port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = DigitServer(self.config)
        try:
            self.port = await self.server.start()
        except BaseException as error:
            self._error = error
            self._ready.set()
            await self.server.stop(None)
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop(self.config.grace_seconds)

    def call(self, coroutine, timeout: float = 10):
        """Run a coroutine on the server's loop (e.g. registry.refresh()) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


# ---- the real client libraries (.venv-clients) ------------------------------------------


def run_in_clients_env(script: str, *arguments) -> subprocess.CompletedProcess:
    """tests/SCRIPT run by .venv-clients' Python (skips the test where it is not built)."""
    import pytest

    from benchmarks.config import CLIENTS_PYTHON

    if not CLIENTS_PYTHON.is_file():
        pytest.skip("no .venv-clients: run `make clients` (make test does)")
    return subprocess.run(
        [str(CLIENTS_PYTHON), str(ROOT / "tests" / script), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=120,
    )
