"""Training, evaluation and reporting of each model (TensorFlow lives from here on)."""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import tf_keras as keras

from common.contract import MODEL_NAMES
from common.ownership import claim_folder, release_folder, remove_owned
from common.validation_split import VALIDATION_FILE, save_validation_split
from training import report
from training.backbone import resolve_backbone
from training.config import TrainConfig
from training.data import Split
from training.distribute import Placement, placed
from training.models import (
    VGG16Parts,
    build_scratch_cnn,
    build_vgg16_finetuned,
    unfreeze_last_block,
    vgg16_parts,
)
from training.pipeline import (
    EVAL_BATCH_SIZE,
    augmented_dataset,
    evaluation_dataset,
    feature_dataset,
    training_dataset,
)
from training.reproducibility import make_reproducible
from training.train import PhaseSettings, fit_phase


@dataclass(frozen=True)
class TrainingResult:
    """What a trainer hands back."""

    model: keras.Model
    history: list[dict]  # one row per epoch, every phase
    phases: list[dict]  # per phase: epochs run, seconds, validation accuracy
    backbone: str | None = None  # the pretrained backbone a fine-tuned model started from
    pretraining: dict | None = None  # the fallback backbone's sidecar, when it was used


def _phase(config: TrainConfig, name: str, learning_rate: float) -> PhaseSettings:
    return PhaseSettings(
        name, config.epochs, learning_rate, config.early_stopping_patience, config.verbose
    )


def _phase_summary(name: str, history: list[dict], val_accuracy: float) -> dict:
    return {
        "name": name,
        "epochs_run": len(history),
        "seconds": round(sum(row.get("seconds", 0.0) for row in history), 1),  # in fit()
        "val_accuracy": val_accuracy,
    }


def image_data(config: TrainConfig, train: Split, validation: Split) -> Callable:
    """Augmented training images and plain validation images, as datasets, on demand."""
    return lambda: (
        training_dataset(train.images, train.labels, config.batch_size, config.seed),
        evaluation_dataset(validation.images, validation.labels, EVAL_BATCH_SIZE),
    )


class FeatureCache:
    """Frozen-stage outputs, computed once per run: block4 features of the training images
    (plus `augmented_copies` augmented passes) and of the validation images; block5
    features derived from them for phase 1."""

    def __init__(self, parts: VGG16Parts, config: TrainConfig, train: Split, validation: Split):
        self.parts, self.config, self.train, self.validation = parts, config, train, validation
        self.block4: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.seconds = 0.0

    def _block4(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.block4 is None:
            config, train, validation = self.config, self.train, self.validation
            start = time.perf_counter()
            passes = [evaluation_dataset(train.images, train.labels, EVAL_BATCH_SIZE)] + [
                augmented_dataset(train.images, train.labels, EVAL_BATCH_SIZE, config.seed + k)
                for k in range(config.augmented_copies)
            ]
            predict = self.parts.trunk.predict
            features = np.concatenate([predict(p, verbose=config.verbose) for p in passes])
            val_data = evaluation_dataset(validation.images, validation.labels, EVAL_BATCH_SIZE)
            self.block4 = (
                features,
                np.tile(train.labels, len(passes)),
                predict(val_data, verbose=config.verbose),
            )
            self.seconds += time.perf_counter() - start
            print(
                f"frozen blocks 1-4: features of {len(features)} training images "
                f"({len(passes)} pass(es)) and {len(validation.labels)} validation images "
                f"in {time.perf_counter() - start:.0f} s"
            )
        return self.block4

    def _datasets(self, features, labels, val_features) -> tuple:
        return (
            feature_dataset(features, labels, self.config.vgg16_batch_size, self.config.seed),
            feature_dataset(val_features, self.validation.labels, EVAL_BATCH_SIZE),
        )

    def block4_data(self) -> tuple:
        return self._datasets(*self._block4())

    def block5_data(self) -> tuple:
        features, labels, val_features = self._block4()
        start = time.perf_counter()
        block5 = self.parts.block5.predict
        outputs = (block5(features, verbose=0), labels, block5(val_features, verbose=0))
        self.seconds += time.perf_counter() - start
        return self._datasets(*outputs)


def train_scratch_cnn(config, placement, train, validation, workdir, callbacks) -> TrainingResult:
    make_reproducible(config.seed)
    model = build_scratch_cnn()
    settings = _phase(config, "train", config.learning_rate)
    data = image_data(config, train, validation)
    history = fit_phase(model, data, workdir, settings, placement, callbacks)
    accuracy = report.evaluate(model, validation.images, validation.labels)["val_accuracy"]
    return TrainingResult(model, history, [_phase_summary("train", history, accuracy)])


def train_vgg16_finetuned(
    config, placement, train, validation, workdir, callbacks
) -> TrainingResult:
    """Phase 1: backbone frozen, train the head. Phase 2: unfreeze block5, low learning rate.

    Blocks 1-4 stay frozen throughout, so their output is computed once (for the images and
    `augmented_copies` augmented passes): phase 1 trains the head on block5 features, phase 2
    block5 + head on block4 features, instead of a 100x100 VGG16 pass per image per epoch.
    """
    backbone = resolve_backbone(config, placement)
    print(f"vgg16_finetuned: backbone = {backbone.name}")
    make_reproducible(config.seed)
    model = build_vgg16_finetuned(backbone.model)
    parts = vgg16_parts(model)
    cache = FeatureCache(parts, config, train, validation)
    phase1 = _phase(config, "phase1", config.learning_rate)
    history1 = fit_phase(parts.head, cache.block5_data, workdir, phase1, placement, callbacks)
    unfreeze_last_block(model)  # block5 trainable, blocks 1-4 stay frozen
    phase2 = _phase(config, "phase2", config.finetune_learning_rate)
    history2 = fit_phase(parts.top, cache.block4_data, workdir, phase2, placement, callbacks)
    phases = []
    for name, history in (("phase1", history1), ("phase2", history2)):
        # EarlyStopping restored the weights of the lowest val_loss epoch: its accuracy.
        best = min(history, key=lambda row: row["val_loss"])
        phases.append(_phase_summary(name, history, best["val_accuracy"]))
    phases[0]["feature_seconds"] = round(cache.seconds, 1)
    return TrainingResult(model, history1 + history2, phases, backbone.name, backbone.pretraining)


def batch_sizes(config: TrainConfig) -> dict[str, int]:
    """The global batch size of each model to train (both VGG16 phases use one)."""
    sizes = {"scratch_cnn": config.batch_size, "vgg16_finetuned": config.vgg16_batch_size}
    return {name: sizes[name] for name in config.models}


TRAINERS = {"scratch_cnn": train_scratch_cnn, "vgg16_finetuned": train_vgg16_finetuned}


def checkpoint_dir(workdir: Path, config: TrainConfig, train: Split, placement: Placement) -> Path:
    """The model's checkpoint folder (marked as ours), emptied if an earlier run of ours left
    it with other settings or data (only the same run may resume); a foreign one is refused.
    The chief prepares it; the other workers wait for that and only read it."""
    settings = asdict(replace(config, verbose=0, export=False))
    settings["train_files"] = [str(path) for path in train.files]
    fingerprint = hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()
    stamp = workdir / "run.sha256"
    if placement.is_chief:
        if workdir.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
            remove_owned(workdir)
            print(f"{workdir}: left by a run with other settings, starting afresh")
        claim_folder(workdir)
        stamp.write_text(fingerprint)
    placement.barrier()
    return workdir


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes: equal on every worker of one multi-worker run."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def train_and_report(
    name: str,
    config: TrainConfig,
    placement: Placement,
    train: Split,
    validation: Split,
    callbacks: list,
) -> dict:
    """Train one model, save it, write its history/curves/confusion; its summary entry."""
    out = config.output_dir
    print(f"\n=== {name} ===")
    workdir = checkpoint_dir(out / "checkpoints" / name, config, train, placement)
    result = TRAINERS[name](config, placement, train, validation, workdir, callbacks)
    model, history, phases = result.model, result.history, result.phases
    print(f"{name}: weights sha256 {weights_digest(model)}")
    # Every worker saves (TensorFlow's rule for multi-worker runs); only the chief's is kept.
    model.save(placement.own_path(out / "keras" / f"{name}.keras"))
    evaluation = report.evaluate(model, validation.images, validation.labels)
    placement.barrier()  # every worker is done with the checkpoint folder
    if not placement.is_chief:
        return evaluation
    (out / "report" / f"{name}_history.json").write_text(json.dumps(history, indent=2) + "\n")
    report.plot_curves(history, f"{name}: training curves", out / "report" / f"{name}_curves.png")
    report.plot_confusion(
        evaluation["confusion"], f"{name} (validation)", out / "report" / f"{name}_confusion.png"
    )
    remove_owned(workdir)
    val_errors = evaluation["val_count"] - round(
        evaluation["val_accuracy"] * evaluation["val_count"]
    )
    return {
        **evaluation,
        "val_errors": val_errors,
        "epochs_run": len(history),
        "train_seconds": round(
            sum(phase["seconds"] + phase.get("feature_seconds", 0.0) for phase in phases), 1
        ),
        "backbone": result.backbone,
        "phases": phases,
        "pretraining": result.pretraining,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
    }


def _previous_summary(output_dir: Path, keep: list[str]) -> dict:
    """Entries of models trained by an earlier run into the same folder (still on disk)."""
    path = output_dir / "report" / "summary.json"
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    return {
        name: entry
        for name, entry in previous.items()
        if name in keep and (output_dir / "keras" / f"{name}.keras").is_file()
    }


def train_all(
    config: TrainConfig, data_dir: Path, train: Split, validation: Split, callbacks: list
) -> dict:
    """Train the chosen models, then write the report and metrics.json; the summary."""
    out = config.output_dir
    with placed(config.distribute) as placement:
        print(placement.describe(batch_sizes(config)))
        if placement.is_chief:
            save_validation_split(out / VALIDATION_FILE, validation.images, validation.labels)
        summary = {
            name: train_and_report(name, config, placement, train, validation, callbacks)
            for name in config.models
        }
    if not placement.is_chief:
        return summary
    others = [name for name in MODEL_NAMES if name not in config.models]
    summary = _previous_summary(out, others) | summary
    summary = {name: summary[name] for name in MODEL_NAMES if name in summary}
    settings = {key: str(value) for key, value in asdict(config).items()}
    settings["data_dir"] = str(data_dir)
    table = report.write_report(out, summary, settings)
    metrics = report.metrics_from_summary(summary)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    release_folder(out / "checkpoints")  # kept if anything but our marker is left in it
    print("\n" + table)
    print(f"report: {out / 'report' / 'report.md'}")
    return summary
