"""The training job: every chosen model in turn (its checkpoints, training, saved model,
curves and confusion matrix), then the report and metrics.json; only the chief writes."""

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import tf_keras as keras

from common.contract import MODEL_NAMES
from common.misread import plot_misread
from common.ownership import claim_folder, release_folder, remove_owned
from common.validation_split import VALIDATION_FILE, save_validation_split
from training import report
from training.config import TrainConfig
from training.data import Split
from training.distribute import Placement, placed
from training.scratch_cnn import train_scratch_cnn
from training.vgg16_finetuned import train_vgg16_finetuned


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
    evaluation = report.evaluate(model, validation.images, validation.labels, validation.files)
    placement.barrier()  # every worker is done with the checkpoint folder
    if not placement.is_chief:
        return evaluation
    (out / "report" / f"{name}_history.json").write_text(json.dumps(history, indent=2) + "\n")
    report.plot_curves(history, f"{name}: training curves", out / "report" / f"{name}_curves.png")
    report.plot_confusion(
        evaluation["confusion"], f"{name} (validation)", out / "report" / f"{name}_confusion.png"
    )
    plot_misread(
        validation.images,
        evaluation["misread"],
        f"{name}: misread validation images",
        out / "report" / f"{name}_misread.png",
    )
    remove_owned(workdir)
    return {
        **evaluation,
        "val_errors": len(evaluation["misread"]),
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
