"""Augmentation: label-preserving, never a flip, training-only; models hold no randomness."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tf_keras.src.engine.base_layer import BaseRandomLayer

from training.augment import augment_batches, build_augmenter
from training.bundled.materialise import load_bundled
from training.models import build_scratch_cnn, build_vgg16_backbone, build_vgg16_finetuned
from training.pipeline import evaluation_dataset, training_dataset


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


def test_augmented_images_are_never_mirrored():
    """A Γ-shaped stroke, augmented many times, always stays closer to itself than to a flip."""
    glyph = np.zeros((100, 100, 1), np.float32)
    glyph[10:90, 15:35] = 255.0  # vertical bar on the left
    glyph[10:30, 15:70] = 255.0  # horizontal bar on top
    augmented = build_augmenter(seed=3)(np.repeat(glyph[None], 64, axis=0), training=True)
    for out in augmented.numpy():
        same = np.corrcoef(glyph.ravel(), out.ravel())[0, 1]
        for mirror in (glyph[:, ::-1], glyph[::-1, :], glyph[::-1, ::-1]):
            assert same > np.corrcoef(mirror.ravel(), out.ravel())[0, 1]


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
