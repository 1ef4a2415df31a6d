"""One training phase: model.fit with Keras callbacks (early stopping, checkpoints, LR
schedule, resumable), and what a model's recipe hands back.

Each training phase works in its own folder under DIR/checkpoints/<model>/. An interrupted
fit resumes at the epoch where it stopped (BackupAndRestore); a phase that completed is
not repeated (its best weights and history are kept until the whole model is done).
"""

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from training.config import TrainConfig
from training.distribute import Placement

MONITOR = "val_loss"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass(frozen=True)
class TrainingResult:
    """What a trainer hands back."""

    model: keras.Model
    history: list[dict]  # one row per epoch, every phase
    phases: list[dict]  # per phase: epochs run, seconds, validation accuracy
    backbone: str | None = None  # the pretrained backbone a fine-tuned model started from
    pretraining: dict | None = None  # the fallback backbone's sidecar, when it was used


@dataclass(frozen=True)
class PhaseSettings:
    name: str  # "train" (scratch_cnn), "phase1" / "phase2" (vgg16_finetuned)
    epochs: int
    learning_rate: float
    patience: int
    verbose: int
    min_epochs: int = 0  # before early stopping watches (Keras' start_from_epoch)
    ema_momentum: float = 0.0  # of the weights' moving average (phase_optimizer); 0: none


class EpochTimer(keras.callbacks.Callback):
    """Adds the epoch's wall time to the logs, so that CSVLogger records it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def phase_callbacks(
    workdir: Path, settings: PhaseSettings, placement: Placement
) -> list[keras.callbacks.Callback]:
    """Keras' checkpoint callbacks take the shared folder on every worker (they give
    non-chief workers their own temporary folders); the CSV log is this process's own.

    Order matters at the end of an epoch: the timer and the LR schedule fill the logs the
    CSV row records, and the backup comes last, so a run killed in between repeats the
    epoch (its row is then written again) instead of losing its row.
    """
    return [
        EpochTimer(),
        keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, factor=0.5, patience=2, min_lr=settings.learning_rate / 100
        ),
        keras.callbacks.EarlyStopping(
            monitor=MONITOR,
            patience=settings.patience,
            restore_best_weights=True,
            start_from_epoch=settings.min_epochs,
            verbose=1,
        ),
        keras.callbacks.ModelCheckpoint(
            str(workdir / "best.weights.h5"),
            monitor=MONITOR,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(str(placement.own_path(workdir / "history.csv")), append=True),
        keras.callbacks.BackupAndRestore(str(workdir / "backup")),
    ]


def read_history(csv_path: Path, phase: str) -> list[dict]:
    """CSVLogger rows, one per epoch (a row re-written after a resume replaces the old one)."""
    rows: dict[int, dict] = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = int(row["epoch"])
            rows[epoch] = {"phase": phase, "epoch": epoch + 1} | {
                key: float(row[key]) for key in HISTORY_KEYS if row.get(key) not in (None, "")
            }
    return [rows[epoch] for epoch in sorted(rows)]


def fit_phase(
    model: keras.Model,
    data: Callable[[], tuple[tf.data.Dataset, tf.data.Dataset]],
    workdir: Path,
    settings: PhaseSettings,
    placement: Placement,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> list[dict]:
    """Compile and fit one phase (or reload it if it completed earlier); its epoch history.

    `data()` builds the (training, validation) datasets, only when the phase has to run.
    Every worker decides from the chief's files, so all of them resume alike.
    """
    workdir = Path(workdir) / settings.name
    done = workdir / "done.json"
    if done.is_file():
        print(f"{model.name}: {settings.name} already completed, reloading its best weights")
        model.load_weights(str(workdir / "best.weights.h5"))
        return json.loads(done.read_text())["history"]
    if placement.is_chief:
        workdir.mkdir(parents=True, exist_ok=True)
    train_data, validation_data = data()
    model.compile(
        optimizer=phase_optimizer(settings, train_data),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=settings.epochs,
        callbacks=phase_callbacks(workdir, settings, placement) + list(extra_callbacks or []),
        verbose=settings.verbose,
    )
    history = read_history(placement.own_path(workdir / "history.csv"), settings.name)
    # EarlyStopping restored the best weights; keep them in the checkpoint the reload uses.
    # Every worker saves: reading synchronised variables is a collective step.
    model.save_weights(str(placement.own_path(workdir / "best.weights.h5")))
    if placement.is_chief:
        done.write_text(json.dumps({"history": history}, indent=2))
    return history


def phase_optimizer(
    settings: PhaseSettings, train_data: tf.data.Dataset
) -> keras.optimizers.Optimizer:
    """Adam at the phase's rate; with an EMA momentum, Keras' moving average of the weights,
    written into the model at the last step of every epoch, so that validation, early
    stopping, the checkpoints and the saved model all see the average."""
    if not settings.ema_momentum:
        return keras.optimizers.Adam(settings.learning_rate)
    steps_per_epoch = int(train_data.cardinality())
    if steps_per_epoch < 1:
        raise ValueError("a moving average per epoch needs a dataset of known length")
    return keras.optimizers.Adam(
        settings.learning_rate,
        use_ema=True,
        ema_momentum=settings.ema_momentum,
        ema_overwrite_frequency=steps_per_epoch,
    )


def phase_settings(config: TrainConfig, name: str, learning_rate: float) -> PhaseSettings:
    """A phase of at most `config.epochs` epochs at `learning_rate`, watched from its first."""
    return PhaseSettings(
        name, config.epochs, learning_rate, config.early_stopping_patience, config.verbose
    )


def restored_epoch(history: list[dict], min_epochs: int) -> dict:
    """The history row of the weights EarlyStopping left: the lowest val_loss among the
    epochs it watched (from `min_epochs` on), or the last epoch when it watched none."""
    watched = [row for row in history if row["epoch"] > min_epochs]
    return min(watched, key=lambda row: row["val_loss"]) if watched else history[-1]


def phase_summary(name: str, history: list[dict], val_accuracy: float) -> dict:
    """What the report shows of one phase."""
    return {
        "name": name,
        "epochs_run": len(history),
        "seconds": round(sum(row.get("seconds", 0.0) for row in history), 1),  # in fit()
        "val_accuracy": val_accuracy,
    }
