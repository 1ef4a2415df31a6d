"""Where a run trains: one device, MirroredStrategy over local devices, or
MultiWorkerMirroredStrategy over the workers that the standard TF_CONFIG variable names.

Batch sizes are global under every strategy: each step takes `batch_size` images in all,
split over the replicas, and the gradients are averaged over all of them. With the global
batch unchanged, the learning rates stay the same as on one device (docs/training.md,
"Several devices and several machines").

Every worker runs the same code on the same data with the same seeds and joins every
collective step; only the chief writes the run's files. A non-chief worker writes only
what TensorFlow requires (Keras' own checkpoint callbacks give it `workertemp_<i>` folders
and remove them) and its own scratch folder, removed when the run ends.
"""

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from training.cluster import cluster_role


@dataclass(frozen=True)
class Placement:
    """The strategy of a run and this process's part in it."""

    strategy: tf.distribute.Strategy
    kind: str  # "none", "mirrored" or "multi-worker" (what "auto" became)
    is_chief: bool
    worker: int  # this worker's index (0 on one machine)
    workers: int
    scratch: Path | None  # a non-chief worker's own folder for files nobody reads

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def describe(self, batch_sizes: dict[str, int]) -> str:
        per_replica = ", ".join(
            f"{name} {size} global = {size / self.replicas:g} per replica"
            for name, size in batch_sizes.items()
        )
        role = "chief" if self.is_chief else "non-chief"
        return (
            f"distribute: {self.kind}, {self.replicas} replica(s) on {self.workers} worker(s), "
            f"this is worker {self.worker} ({role}); batch sizes: {per_replica}"
        )

    def own_path(self, path: Path) -> Path:
        """Where this process writes `path`: there on the chief; on another worker, the same
        path under its scratch folder (parents created), so the run's files stay the chief's."""
        if self.scratch is None:
            return path
        mirrored = self.scratch.joinpath(*Path(path).resolve().parts[1:])
        mirrored.parent.mkdir(parents=True, exist_ok=True)
        return mirrored

    def barrier(self) -> None:
        """Wait until every worker gets here."""
        self.all_true(True)

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every worker (a collective step: all must ask)."""
        if self.workers == 1:
            return flag
        return bool(_collective_sum(self.strategy, tf.constant(0.0 if flag else 1.0)) == 0)


@tf.function
def _collective_sum(strategy: tf.distribute.Strategy, value: tf.Tensor) -> tf.Tensor:
    """`value` summed over every replica of every worker."""
    per_replica = strategy.run(lambda: tf.identity(value))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


def _mirrored_devices() -> list[str]:
    """Every GPU, or when there is none every logical CPU device (tests configure two)."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def _single_placement(strategy: tf.distribute.Strategy, kind: str) -> Placement:
    return Placement(strategy, kind, is_chief=True, worker=0, workers=1, scratch=None)


def _multi_worker_placement() -> Placement:
    role = cluster_role("multi-worker")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    scratch = None
    if not role.is_chief:
        scratch = Path(tempfile.mkdtemp(prefix=f"digits-worker{role.worker}-"))
    return Placement(strategy, "multi-worker", role.is_chief, role.worker, role.workers, scratch)


def choose_placement(distribute: str) -> Placement:
    """The strategy `--distribute` asks for. Call it before any other TensorFlow work:
    MultiWorkerMirroredStrategy must exist before the first operation runs."""
    if distribute == "multi-worker":
        return _multi_worker_placement()
    several_gpus = len(tf.config.list_logical_devices("GPU")) > 1
    if distribute == "mirrored" or (distribute == "auto" and several_gpus):
        return _single_placement(tf.distribute.MirroredStrategy(_mirrored_devices()), "mirrored")
    return _single_placement(tf.distribute.get_strategy(), "none")


@contextmanager
def placed(distribute: str):
    """The placement for the run, its scope entered; a non-chief's scratch removed after."""
    placement = choose_placement(distribute)
    try:
        with placement.strategy.scope():
            yield placement
    finally:
        if placement.scratch is not None:
            shutil.rmtree(placement.scratch, ignore_errors=True)
