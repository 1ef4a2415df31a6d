"""Augmentation: label-preserving, never a flip, training-only; models hold no randomness."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tf_keras.src.engine.base_layer import BaseRandomLayer

from training.augment import (
    AUGMENTATIONS,
    SCANNED,
    RandomBackgroundGradient,
    RandomLowResolution,
    RandomStrokeWidth,
    augment_batches,
    build_augmenter,
    scaled_side,
)
from training.bundled.materialise import load_bundled
from training.models import build_scratch_cnn, build_vgg16_backbone, build_vgg16_finetuned
from training.pipeline import evaluation_dataset, feature_dataset, training_dataset


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, nested models included."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers += all_layers(layer)
    return layers


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """A few real bundled digits upscaled to 100x100 as float32 [N, 100, 100, 1]."""
    images, labels = load_bundled((0, 1, 2))
    pick = np.concatenate([np.flatnonzero(labels == d)[:4] for d in range(3)])
    upscaled = tf.image.resize(images[pick][..., None].astype(np.float32), (100, 100))
    return upscaled.numpy(), labels[pick]


@pytest.fixture(scope="module")
def models() -> list[keras.Model]:
    return [build_scratch_cnn(), build_vgg16_finetuned(build_vgg16_backbone(100, None))]


def test_no_flip_anywhere_in_the_pipeline_or_the_models(models):
    augmenter_layers = all_layers(build_augmenter(seed=1))
    for layer in augmenter_layers + [la for model in models for la in all_layers(model)]:
        assert "flip" not in type(layer).__name__.lower()
    assert {type(la).__name__ for la in augmenter_layers} >= {"RandomRotation", "RandomZoom"}


def ink_lean(image: np.ndarray) -> tuple[float, float]:
    """Where the ink's centroid lies in its box, from -1 (left / top) to 1 (right / bottom):
    turned by at most 20 degrees, moved, zoomed or stretched, a glyph keeps the signs; a
    mirror image changes one of them."""
    rows, cols = np.nonzero(image[..., 0] > 127)
    lean = []
    for axis in (cols, rows):
        centre, half = (axis.min() + axis.max()) / 2, (axis.max() - axis.min()) / 2
        lean.append((axis.mean() - centre) / half)
    return lean[0], lean[1]


def test_augmented_images_are_never_mirrored():
    """A Γ-shaped glyph (its ink leans left and up), augmented many times, always leans the
    same way: no transform of the augmenter mirrors it."""
    glyph = np.zeros((100, 100, 1), np.float32)
    glyph[30:70, 36:46] = 255.0  # vertical bar on the left (small: shifts never cut it)
    glyph[30:40, 36:64] = 255.0  # horizontal bar on top
    assert ink_lean(glyph[:, ::-1])[0] > 0 and ink_lean(glyph[::-1])[1] > 0  # mirrors lean away
    # Only the geometric layers can mirror; the others change pixel values in place (and
    # their noise and ramps would blur where the ink's box ends).
    geometric = ("RandomRotation", "RandomZoom", "RandomTranslation")
    augmented = np.repeat(glyph[None], 64, axis=0)
    for layer in build_augmenter(seed=3).layers:
        if type(layer).__name__ in geometric:
            augmented = layer(augmented, training=True)
    for out in augmented.numpy():
        left, up = ink_lean(out)
        assert left < 0.1 and up < 0.1, (left, up)  # a mirror leans by about +0.3


def test_augmentation_keeps_shape_dtype_range_and_labels(digits):
    images, labels = digits
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    out_images, out_labels = zip(*augment_batches(dataset, seed=5), strict=True)
    out_images = np.concatenate(out_images)
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    assert out_images.min() >= 0.0 and out_images.max() <= 255.0
    assert not np.allclose(out_images, images)  # it did change the pixels
    np.testing.assert_array_equal(np.concatenate(out_labels), labels)


def test_augmentation_is_identity_outside_training(digits):
    images, _ = digits
    np.testing.assert_array_equal(build_augmenter(seed=1)(images, training=False), images)


def test_training_pipeline_augments_and_evaluation_pipeline_does_not(digits):
    images, labels = digits
    raw = images[..., 0].astype(np.uint8)
    eval_images = np.concatenate([x for x, _ in evaluation_dataset(raw, labels, 5)])
    np.testing.assert_array_equal(eval_images[..., 0], raw.astype(np.float32))
    train_batch, _ = next(iter(training_dataset(raw, labels, len(raw), seed=1)))
    assert train_batch.dtype == tf.float32 and train_batch.shape == (len(raw), 100, 100, 1)
    assert not np.isin(train_batch.numpy().round(3), raw).all()  # not only shuffled


def test_models_hold_no_random_layer_but_dropout_and_are_deterministic(models, digits):
    images, _ = digits
    for model in models:
        randoms = [la for la in all_layers(model) if isinstance(la, BaseRandomLayer)]
        assert all(isinstance(la, keras.layers.Dropout) for la in randoms), randoms
        first = model(images, training=False).numpy()
        np.testing.assert_array_equal(first, model(images, training=False).numpy())


def test_models_see_the_same_pixels_for_both_polarities(models, digits):
    images, _ = digits
    for model in models:
        normal = model(images, training=False).numpy()
        inverted = model(255.0 - images, training=False).numpy()
        np.testing.assert_allclose(normal, inverted, atol=1e-5)


def test_augmentation_differs_per_image_per_batch_and_per_epoch(digits):
    images, _ = digits
    twice = np.concatenate([images[:4], images[:4]])
    dataset = tf.data.Dataset.from_tensors((twice, np.zeros(8))).repeat(2)
    dataset = augment_batches(dataset, seed=1)
    epoch1 = [batch.numpy() for batch, _ in dataset]
    epoch2 = [batch.numpy() for batch, _ in dataset]
    assert not np.allclose(epoch1[0][:4], epoch1[0][4:])  # same image, same batch
    assert not np.allclose(epoch1[0], epoch1[1])  # same images, next batch
    assert not np.allclose(epoch1[0], epoch2[0])  # same batch, next epoch


def test_stroke_width_layer_dilates_and_erodes_only_when_training(digits):
    """Half the images unchanged, the rest max- or min-pooled (thicker or thinner ink)."""
    images, _ = digits
    layer = RandomStrokeWidth(seed=4)
    np.testing.assert_array_equal(layer(images, training=False), images)
    many = np.repeat(images[:1], 64, axis=0)
    out = layer(many, training=True).numpy()
    ink = (out > 127).mean(axis=(1, 2, 3))
    original = (images[:1] > 127).mean()
    assert (ink == original).sum() > 16  # unchanged
    assert (ink > original).any() and (ink < original).any()  # thicker and thinner


def test_low_resolution_and_background_layers_keep_the_digit(digits):
    images, labels = digits
    many = np.repeat(images[:1], 64, axis=0)
    low = RandomLowResolution(0.3, seed=1)
    np.testing.assert_array_equal(low(many, training=False), many)
    change = np.abs(low(many, training=True).numpy() - many).mean(axis=(1, 2, 3))
    assert 0 < (change > 1).sum() < 40  # a share of the images (0.3 of them expected)
    assert (change[change > 0] > 1).all()  # a scaled image is visibly coarser
    assert len(np.unique(change[change > 0].round(3))) > 2  # more than one side drawn
    ramp = RandomBackgroundGradient(seed=2)(images, training=True).numpy()
    paper = images < 64  # light ink on dark paper: the paper gets lighter, never darker
    assert (ramp[paper] >= images[paper] - 1e-3).all() and (ramp[paper] > images[paper]).any()


def test_scanned_preset_makes_every_image_coarser_and_nothing_else_of_the_robust_ones(digits):
    """VGG16's scanned passes: every image down to a low resolution and back up, with the
    standard geometry (no stroke or lighting change)."""
    images, _ = digits
    many = np.repeat(images[:1], 64, axis=0)
    coarse = RandomLowResolution(1.0, seed=1)(many, training=True).numpy()
    assert (np.abs(coarse - many).mean(axis=(1, 2, 3)) > 1).all()  # every image
    kinds = [type(layer) for layer in build_augmenter(seed=1, preset=SCANNED).layers]
    standard = [type(layer) for layer in build_augmenter(seed=1, preset="standard").layers]
    assert kinds == standard[:3] + [RandomLowResolution] + standard[3:]
    assert AUGMENTATIONS[SCANNED].rotation == AUGMENTATIONS["standard"].rotation


def test_mixed_preset_gives_each_batch_the_robust_or_the_standard_transforms():
    """How far a white square's pixels move tells the presets apart (the robust one shifts,
    shrinks and relights much more): over 12 batches the mixed preset gives some of each."""
    square = np.pad(np.full((40, 40), 255.0, np.float32), 30)[None, ..., None]
    images, labels = np.repeat(square, 4, axis=0), np.arange(4)

    def moved(preset: str) -> list[float]:
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(12)
        batches = list(augment_batches(dataset, seed=3, preset=preset))
        for _, out_labels in batches:
            np.testing.assert_array_equal(out_labels, labels)
        return [float(np.abs(batch.numpy() - images).mean()) for batch, _ in batches]

    standard, robust, mixed = moved("standard"), moved("robust"), moved("mixed")
    assert max(standard) < min(robust), (standard, robust)
    middle = (max(standard) + min(robust)) / 2
    assert any(m < middle for m in mixed) and any(m > middle for m in mixed), mixed


def test_low_resolution_is_the_same_share_of_any_image_side():
    """8 px of a 100x100 digit are 4 px of a 50x50 one (pretraining's smaller stages)."""
    assert scaled_side(8, tf.constant([100, 100])).numpy().tolist() == [8, 8]
    assert scaled_side(8, tf.constant([50, 50])).numpy().tolist() == [4, 4]
    assert scaled_side(6, tf.constant([32, 32])).numpy().tolist() == [2, 2]  # at least 2
    small = np.pad(np.full((1, 16, 16, 1), 255.0, np.float32), ((0, 0), (8, 8), (8, 8), (0, 0)))
    out = RandomLowResolution(0.3, seed=1)(np.repeat(small, 64, axis=0), training=True).numpy()
    assert out.shape == (64, 32, 32, 1)
    assert (np.abs(out - small).mean(axis=(1, 2, 3)) > 1).any()  # some made coarser


def dropped_channels(dataset: tf.data.Dataset, features: np.ndarray, rate: float) -> np.ndarray:
    """Per channel of each view in the order the epoch gave them, whether its whole map was
    zeroed; every kept map must be the view's own (labels index the views) scaled by
    1 / (1 - rate)."""
    masks = []
    for batch, indices in dataset:
        batch, original = batch.numpy(), features[indices.numpy()]
        zero = (batch == 0).all(axis=(1, 2))
        kept = np.where(zero[:, None, None, :], 0.0, original / (1 - rate))
        np.testing.assert_allclose(batch, kept, rtol=1e-5)
        masks.append(zero)
    return np.concatenate(masks)


def test_feature_dropout_zeroes_whole_channels_of_each_view_afresh_every_epoch():
    """VGG16's phase 2 (--feature-dropout): the cached block-4 features of a view lose a
    share of their channels, a new draw each epoch (not the last epoch's masks over the
    reshuffled views); the validation features none."""
    features = np.random.default_rng(0).uniform(1, 2, (96, 6, 6, 40)).astype(np.float32)
    views = np.arange(len(features))
    dataset = feature_dataset(features, views, 32, seed=1, channel_dropout=0.25)
    first, second = (dropped_channels(dataset, features, 0.25) for _ in range(2))
    assert 0.2 < first.mean() < 0.3 and 0.2 < second.mean() < 0.3
    assert (first != second).mean() > 0.2  # about 2 x 0.25 x 0.75 if drawn anew
    validation = np.concatenate([batch for batch, _ in feature_dataset(features, views, 32)])
    np.testing.assert_array_equal(validation, features)
