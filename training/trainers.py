"""Training, evaluation and reporting of each model (TensorFlow lives from here on)."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tf_keras as keras

from common.contract import MODEL_NAMES
from training import report
from training.backbone import resolve_backbone
from training.config import TrainConfig
from training.data import Split
from training.models import build_scratch_cnn, build_vgg16_finetuned, unfreeze_last_block
from training.pipeline import evaluation_dataset, training_dataset
from training.train import PhaseSettings, fit_phase

EVAL_BATCH_SIZE = 64


def _phase(config: TrainConfig, name: str, learning_rate: float) -> PhaseSettings:
    return PhaseSettings(
        name, config.epochs, learning_rate, config.early_stopping_patience, config.verbose
    )


def _phase_summary(name: str, history: list[dict], val_accuracy: float) -> dict:
    return {
        "name": name,
        "epochs_run": len(history),
        "seconds": round(sum(row.get("seconds", 0.0) for row in history), 1),
        "val_accuracy": val_accuracy,
    }


def train_scratch_cnn(config, train_data, validation, workdir, callbacks) -> tuple:
    keras.utils.set_random_seed(config.seed)
    model = build_scratch_cnn()
    settings = _phase(config, "train", config.learning_rate)
    history = fit_phase(model, *train_data(), workdir, settings, callbacks)
    accuracy = report.evaluate(model, validation.images, validation.labels)["val_accuracy"]
    return model, history, [_phase_summary("train", history, accuracy)], None, None


def train_vgg16_finetuned(config, train_data, validation, workdir, callbacks) -> tuple:
    backbone = resolve_backbone(
        config.base_weights, config.cache_dir, config.pretrain, config.seed, config.verbose
    )
    print(f"vgg16_finetuned: backbone = {backbone.name}")
    keras.utils.set_random_seed(config.seed)
    model = build_vgg16_finetuned(backbone.model)
    phases, history = [], []
    for name, learning_rate in (
        ("phase1", config.learning_rate),
        ("phase2", config.finetune_learning_rate),
    ):
        if name == "phase2":
            unfreeze_last_block(model)  # block5 trainable, the rest stays frozen
        phase_history = fit_phase(
            model, *train_data(), workdir, _phase(config, name, learning_rate), callbacks
        )
        accuracy = report.evaluate(model, validation.images, validation.labels)["val_accuracy"]
        print(f"vgg16_finetuned: validation accuracy after {name}: {accuracy:.2%}")
        phases.append(_phase_summary(name, phase_history, accuracy))
        history += phase_history
    return model, history, phases, backbone.name, backbone.pretraining


TRAINERS = {"scratch_cnn": train_scratch_cnn, "vgg16_finetuned": train_vgg16_finetuned}


def train_and_report(
    name: str, config: TrainConfig, train: Split, validation: Split, callbacks: list
) -> dict:
    """Train one model, save it, write its history/curves/confusion; its summary entry."""
    out = config.output_dir
    workdir = out / "checkpoints" / name

    def train_data():
        return (
            training_dataset(train.images, train.labels, config.batch_size, config.seed),
            evaluation_dataset(validation.images, validation.labels, EVAL_BATCH_SIZE),
        )

    print(f"\n=== {name} ===")
    model, history, phases, backbone, pretraining = TRAINERS[name](
        config, train_data, validation, workdir, callbacks
    )
    model.save(out / "keras" / f"{name}.keras")
    evaluation = report.evaluate(model, validation.images, validation.labels)
    (out / "report" / f"{name}_history.json").write_text(json.dumps(history, indent=2) + "\n")
    report.plot_curves(history, f"{name}: training curves", out / "report" / f"{name}_curves.png")
    report.plot_confusion(
        evaluation["confusion"], f"{name} (validation)", out / "report" / f"{name}_confusion.png"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    val_errors = evaluation["val_count"] - round(
        evaluation["val_accuracy"] * evaluation["val_count"]
    )
    return {
        **evaluation,
        "val_errors": val_errors,
        "epochs_run": len(history),
        "train_seconds": round(sum(phase["seconds"] for phase in phases), 1),
        "backbone": backbone,
        "phases": phases,
        "pretraining": pretraining,
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
    np.savez_compressed(
        out / "validation_images.npz", images=validation.images, labels=validation.labels
    )
    others = [name for name in MODEL_NAMES if name not in config.models]
    summary = _previous_summary(out, others)
    for name in config.models:
        summary[name] = train_and_report(name, config, train, validation, callbacks)
    summary = {name: summary[name] for name in MODEL_NAMES if name in summary}
    settings = {key: str(value) for key, value in asdict(config).items()}
    settings["data_dir"] = str(data_dir)
    table = report.write_report(out, summary, settings)
    metrics = report.metrics_from_summary(summary)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    print("\n" + table)
    print(f"report: {out / 'report' / 'report.md'}")
    return summary
