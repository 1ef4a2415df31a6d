"""Where the VGG16 backbone's pretrained weights come from.

`--base-weights imagenet` lets Keras fetch the ImageNet notop weights (cached in
~/.keras/models); `--base-weights PATH` loads a local copy of that .h5; `auto` (default)
tries ImageNet and, when it cannot be had, falls back, with a notice, to a VGG16 that
this package pretrains itself on the bundled digits 3-9 (seven classes disjoint from
0/1/2) at a small input size, cached so it is built once; `digits` asks for that
fallback directly (offline, reproducible). Convolution weights do not
depend on the input size, so they load into the 100x100 backbone unchanged.
Never random weights: a fine-tuned model always starts from a pretrained backbone.
"""

import json
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from common.cli import UserError
from common.contract import IMAGE_SIZE
from common.ownership import claim_folder
from training.bundled.materialise import load_bundled
from training.config import BASE_WEIGHTS_CHOICES, PretrainConfig, TrainConfig
from training.distribute import Placement
from training.models import build_vgg16_backbone, build_vgg16_classifier
from training.pipeline import EVAL_BATCH_SIZE, evaluation_dataset, training_dataset
from training.precision import compute_policy, resolve_precision
from training.reproducibility import make_reproducible

PRETRAIN_DIGITS = (3, 4, 5, 6, 7, 8, 9)
FALLBACK_NAME = "digits3-9-pretrained-vgg16"
DOWNLOAD_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Backbone:
    model: keras.Model  # VGG16 notop at 100x100x3 with pretrained weights
    name: str  # "imagenet", "digits3-9-pretrained-vgg16" or "file:<name>"
    pretraining: dict | None  # the fallback's sidecar: accuracy, seconds, settings


def _imagenet_backbone() -> keras.Model:
    """Keras' own ImageNet weights (download on first use); raise on any failure."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        return build_vgg16_backbone(IMAGE_SIZE, "imagenet")
    finally:
        socket.setdefaulttimeout(previous)


def _file_backbone(path: Path) -> keras.Model:
    if not path.is_file():
        raise UserError(f"{path}: VGG16 weights file not found")
    try:
        return build_vgg16_backbone(IMAGE_SIZE, str(path))
    except Exception as error:  # h5py/Keras raise many types for a wrong file
        raise UserError(f"{path}: cannot load VGG16 notop weights: {error}") from None


def resolve_backbone(config: TrainConfig, placement: Placement) -> Backbone:
    """The pretrained VGG16 backbone asked for by --base-weights (see module docstring)."""
    base_weights = config.base_weights
    if base_weights not in BASE_WEIGHTS_CHOICES:
        path = Path(base_weights)
        return Backbone(_file_backbone(path), f"file:{path.name}", None)
    if base_weights == "digits":
        return _fallback_backbone(config, placement)
    imagenet, reason = None, "another worker could not get them"
    try:
        imagenet = _imagenet_backbone()
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    # Every worker must start from the same backbone: ImageNet only if all of them got it.
    if placement.all_true(imagenet is not None):
        return Backbone(imagenet, "imagenet", None)
    if base_weights == "imagenet":
        raise UserError(
            f"cannot get the ImageNet VGG16 weights ({reason}); pass --base-weights PATH "
            "to a local vgg16 notop .h5, or --base-weights auto for the offline fallback"
        )
    print(
        f"notice: ImageNet VGG16 weights unavailable ({reason}); falling back to a VGG16 "
        "backbone pretrained on the bundled digits 3-9 (not ImageNet)",
        file=sys.stderr,
    )
    return _fallback_backbone(config, placement)


def _fallback_backbone(config: TrainConfig, placement: Placement) -> Backbone:
    path, sidecar = ensure_fallback_weights(
        config.cache_dir, config.pretrain, config.seed, config.verbose, placement
    )
    return Backbone(_file_backbone(path), FALLBACK_NAME, sidecar)


def fallback_paths(cache_dir: Path, pretrain: PretrainConfig) -> tuple[Path, Path]:
    """Where the fallback pretrained with `pretrain` (its precision resolved) is cached."""
    sides = "-".join(str(side) for side, _ in pretrain.stages)
    augmented = "" if pretrain.augmentation == "standard" else f"_{pretrain.augmentation}"
    arithmetic = "" if pretrain.precision == "float32" else "_bf16"
    stem = Path(cache_dir) / "backbones" / f"vgg16_digits3to9_{sides}px{augmented}{arithmetic}"
    return stem.with_suffix(".h5"), stem.with_suffix(".json")


def ensure_fallback_weights(
    cache_dir: Path,
    pretrain: PretrainConfig,
    seed: int,
    verbose: int,
    placement: Placement,
) -> tuple[Path, dict]:
    """The cached fallback backbone weights (.h5) and their sidecar; pretrain if missing
    (on every worker of a multi-worker run; the chief writes the cache)."""
    pretrain = replace(pretrain, precision=resolve_precision(pretrain.precision))
    weights, sidecar_path = fallback_paths(cache_dir, pretrain)
    settings = {**asdict(pretrain), "seed": seed, "digits": list(PRETRAIN_DIGITS)}
    settings = json.loads(json.dumps(settings))  # as the sidecar reads back (lists)
    if weights.is_file() and sidecar_path.is_file():
        sidecar = json.loads(sidecar_path.read_text())
        # sidecars written before --pretrain-augmentation and --pretrain-precision existed were
        # pretrained standard, in float32
        written_before = {"augmentation": "standard", "precision": "float32"}
        if {**written_before, **sidecar.get("settings", {})} == settings:
            print(f"using cached fallback backbone {weights} (built in {sidecar['seconds']:.0f} s)")
            return weights, sidecar
    if placement.is_chief:
        claim_folder(weights.parent)  # a foreign folder of that name is refused, not written to
    weights = placement.own_path(weights)
    sidecar = pretrain_on_digits(weights, pretrain, seed, verbose)
    sidecar["settings"] = settings
    placement.own_path(sidecar_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return weights, sidecar


def _pretraining_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[list, list]:
    """Indices of a seeded per-class subset of digits 3-9, split 90/10 train/held-out."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in range(len(PRETRAIN_DIGITS)):
        indices = rng.permutation(np.flatnonzero(labels == label))
        if per_class > 0:
            indices = indices[:per_class]
        n_held = max(1, len(indices) // 10)
        held_out += list(indices[:n_held])
        train += list(indices[n_held:])
    return train, held_out


def _resized(images: np.ndarray, side: int) -> np.ndarray:
    resized = tf.image.resize(images[..., np.newaxis], (side, side), "bilinear")
    return np.clip(np.rint(resized.numpy()[..., 0]), 0, 255).astype(np.uint8)


def _classifier(
    side: int, weights: list | None, learning_rate: float, precision: str
) -> keras.Model:
    """VGG16 (random init, or `weights` of the previous stage) + head at side x side,
    computing in `precision` (its weights are float32 in either)."""
    with compute_policy(precision):
        model = build_vgg16_classifier(
            build_vgg16_backbone(side, None), len(PRETRAIN_DIGITS), "vgg16_digits3to9", side
        )
    if weights is not None:
        model.set_weights(weights)  # every weight is independent of the input size
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _held_out_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    data = evaluation_dataset(_resized(images, IMAGE_SIZE), labels, EVAL_BATCH_SIZE)
    return float(model.evaluate(data, verbose=0)[1])


def pretrain_on_digits(weights: Path, pretrain: PretrainConfig, seed: int, verbose: int) -> dict:
    """Train VGG16 (random init) + head on digits 3-9, stage by stage at growing image
    sizes, computing in `pretrain.precision` (resolved); save the backbone's weights."""
    make_reproducible(seed)
    images, labels = load_bundled(PRETRAIN_DIGITS)
    labels = labels - PRETRAIN_DIGITS[0]
    train, held = _pretraining_split(labels, pretrain.per_class, seed)
    print(
        f"pretraining the fallback VGG16 backbone on digits 3-9: {len(train)} images, "
        f"stages (side x epochs) {pretrain.stages_label()}, {pretrain.augmentation} "
        f"augmentation, in {pretrain.precision}"
    )
    model, history, epochs_run, start = None, None, 0, time.perf_counter()
    for side, epochs in pretrain.stages:
        previous = model.get_weights() if model else None
        model = _classifier(side, previous, pretrain.learning_rate, pretrain.precision)
        train_images, held_images = _resized(images[train], side), _resized(images[held], side)
        history = model.fit(
            training_dataset(
                train_images, labels[train], pretrain.batch_size, seed, pretrain.augmentation
            ),
            validation_data=evaluation_dataset(held_images, labels[held], EVAL_BATCH_SIZE),
            epochs=epochs,
            verbose=verbose,
        )
        epochs_run += epochs
    seconds = time.perf_counter() - start
    # fit() evaluated the final weights on the held-out digits at the last stage's size.
    accuracy = float(history.history["val_accuracy"][-1])
    if accuracy < 0.9:
        print(
            f"warning: the fallback VGG16 pretraining reached only {accuracy:.1%} on held-out "
            "digits 3-9 (more --pretrain-stages epochs or --pretrain-per-class)",
            file=sys.stderr,
        )
    final = _classifier(IMAGE_SIZE, model.get_weights(), pretrain.learning_rate, "float32")
    final.get_layer("vgg16").save_weights(str(weights))
    # How well the filters carry over to the size the fine-tuning uses (head not retrained).
    accuracy_full_size = _held_out_accuracy(final, images[held], labels[held])
    print(
        f"fallback backbone: {accuracy:.2%} on {len(held)} held-out digits "
        f"({accuracy_full_size:.2%} at {IMAGE_SIZE}x{IMAGE_SIZE}) in {seconds:.0f} s"
    )
    return {
        "backbone": FALLBACK_NAME,
        "weights": weights.name,
        "held_out_accuracy": accuracy,  # at the last stage's image size
        "held_out_size": pretrain.stages[-1][0],
        "held_out_accuracy_full_size": accuracy_full_size,  # the same digits at 100x100
        "held_out_count": len(held),
        "train_count": len(train),
        "stages": pretrain.stages_label(),
        "epochs_run": epochs_run,
        "seconds": round(seconds, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
