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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from common.cli import UserError
from common.contract import IMAGE_SIZE
from training.bundled.materialise import load_bundled
from training.config import BASE_WEIGHTS_CHOICES, PretrainConfig
from training.models import build_vgg16_backbone, build_vgg16_classifier
from training.pipeline import evaluation_dataset, training_dataset
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


def resolve_backbone(
    base_weights: str, cache_dir: Path, pretrain: PretrainConfig, seed: int, verbose: int
) -> Backbone:
    """The pretrained VGG16 backbone asked for by --base-weights (see module docstring)."""
    if base_weights not in BASE_WEIGHTS_CHOICES:
        path = Path(base_weights)
        return Backbone(_file_backbone(path), f"file:{path.name}", None)
    if base_weights == "digits":
        path, sidecar = ensure_fallback_weights(cache_dir, pretrain, seed, verbose)
        return Backbone(_file_backbone(path), FALLBACK_NAME, sidecar)
    try:
        return Backbone(_imagenet_backbone(), "imagenet", None)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if base_weights == "imagenet":
            raise UserError(
                f"cannot get the ImageNet VGG16 weights ({reason}); pass --base-weights PATH "
                "to a local vgg16 notop .h5, or --base-weights auto for the offline fallback"
            ) from None
        print(
            f"notice: ImageNet VGG16 weights unavailable ({reason}); falling back to a VGG16 "
            "backbone pretrained on the bundled digits 3-9 (not ImageNet)",
            file=sys.stderr,
        )
    path, sidecar = ensure_fallback_weights(cache_dir, pretrain, seed, verbose)
    return Backbone(_file_backbone(path), FALLBACK_NAME, sidecar)


def fallback_paths(cache_dir: Path, pretrain: PretrainConfig) -> tuple[Path, Path]:
    stem = Path(cache_dir) / "backbones" / f"vgg16_digits3to9_{pretrain.image_size}px"
    return stem.with_suffix(".h5"), stem.with_suffix(".json")


def ensure_fallback_weights(
    cache_dir: Path, pretrain: PretrainConfig, seed: int, verbose: int
) -> tuple[Path, dict]:
    """The cached fallback backbone weights (.h5) and their sidecar; pretrain if missing."""
    weights, sidecar_path = fallback_paths(cache_dir, pretrain)
    settings = {**asdict(pretrain), "seed": seed, "digits": list(PRETRAIN_DIGITS)}
    if weights.is_file() and sidecar_path.is_file():
        sidecar = json.loads(sidecar_path.read_text())
        if sidecar.get("settings") == settings:
            print(f"using cached fallback backbone {weights} (built in {sidecar['seconds']:.0f} s)")
            return weights, sidecar
    weights.parent.mkdir(parents=True, exist_ok=True)
    sidecar = pretrain_on_digits(weights, pretrain, seed, verbose)
    sidecar["settings"] = settings
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return weights, sidecar


def _pretraining_data(
    pretrain: PretrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits 3-9 (labels 0..6), a per-class subset, resized; 90/10 train/held-out."""
    images, labels = load_bundled(PRETRAIN_DIGITS)
    labels = labels - PRETRAIN_DIGITS[0]
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in range(len(PRETRAIN_DIGITS)):
        indices = rng.permutation(np.flatnonzero(labels == label))
        if pretrain.per_class > 0:
            indices = indices[: pretrain.per_class]
        n_held = max(1, len(indices) // 10)
        held_out += list(indices[:n_held])
        train += list(indices[n_held:])
    side = pretrain.image_size
    resized = tf.image.resize(images[..., np.newaxis], (side, side), "bilinear")
    pixels = np.clip(np.rint(resized.numpy()[..., 0]), 0, 255).astype(np.uint8)
    return pixels[train], labels[train], pixels[held_out], labels[held_out]


def pretrain_on_digits(weights: Path, pretrain: PretrainConfig, seed: int, verbose: int) -> dict:
    """Train VGG16 (random init) + head on digits 3-9; save the backbone's weights."""
    make_reproducible(seed)
    x_train, y_train, x_held, y_held = _pretraining_data(pretrain, seed)
    print(
        f"pretraining the fallback VGG16 backbone on digits 3-9: {len(x_train)} images at "
        f"{pretrain.image_size}x{pretrain.image_size}, {pretrain.epochs} epoch(s)"
    )
    backbone = build_vgg16_backbone(pretrain.image_size, None)
    model = build_vgg16_classifier(
        backbone, len(PRETRAIN_DIGITS), "vgg16_digits3to9", side=pretrain.image_size
    )
    model.compile(
        optimizer=keras.optimizers.Adam(pretrain.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    held_out = evaluation_dataset(x_held, y_held, 128)
    start = time.perf_counter()
    history = model.fit(
        training_dataset(x_train, y_train, pretrain.batch_size, seed),
        validation_data=held_out,
        epochs=pretrain.epochs,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(held_out, verbose=0)
    if accuracy < 0.9:
        print(
            f"warning: the fallback VGG16 pretraining reached only {accuracy:.1%} on held-out "
            "digits 3-9 (raise --pretrain-epochs or --pretrain-per-class)",
            file=sys.stderr,
        )
    backbone.save_weights(str(weights))
    print(f"fallback backbone: {accuracy:.2%} on {len(x_held)} held-out digits in {seconds:.0f} s")
    return {
        "backbone": FALLBACK_NAME,
        "weights": weights.name,
        "held_out_accuracy": float(accuracy),
        "held_out_count": len(x_held),
        "train_count": len(x_train),
        "epochs_run": len(history.history["loss"]),
        "seconds": round(seconds, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
