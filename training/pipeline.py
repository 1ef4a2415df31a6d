"""tf.data pipelines over the in-memory uint8 splits (the data set is small)."""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from training.augment import augment_batches

EVAL_BATCH_SIZE = 64  # evaluation and feature passes (no gradients, so larger than training's)


def _sharded_by_element(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Multi-worker training splits each batch between the workers (in-memory data has no
    files to split them by); elsewhere this option does nothing."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _image_slices(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    """One (uint8 [H, W, 1], int64) element per image, unbatched."""
    slices = tf.data.Dataset.from_tensor_slices((images[..., np.newaxis], labels))
    return _sharded_by_element(slices)


def _cast(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(images, tf.float32), labels


def _float_batches(slices: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches cast to the model's float32 [B, H, W, 1]."""
    return slices.batch(batch_size).map(_cast, num_parallel_calls=tf.data.AUTOTUNE)


def training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    augmentation: str = "standard",
) -> tf.data.Dataset:
    """Shuffled (seeded, reshuffled each epoch), batched, augmented."""
    slices = _image_slices(images, labels).shuffle(
        len(images), seed=seed, reshuffle_each_iteration=True
    )
    batches = _float_batches(slices, batch_size)
    return augment_batches(batches, seed, augmentation).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """In order, batched, never augmented."""
    return _float_batches(_image_slices(images, labels), batch_size).prefetch(tf.data.AUTOTUNE)


def feature_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int | None = None,
    channel_dropout: float = 0.0,
) -> tf.data.Dataset:
    """Precomputed backbone features; shuffled when a seed is given (training), with
    `channel_dropout` of each view's feature maps zeroed, a fresh draw every epoch (Keras'
    SpatialDropout2D, so the kept ones are scaled up to the same expected sum)."""
    dataset = _sharded_by_element(tf.data.Dataset.from_tensor_slices((features, labels)))
    if seed is not None:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if channel_dropout:
        # force_generator: masks from Keras' seeded generator, which advances every batch
        # (without it, a seeded Dropout in a tf.data map can repeat its masks each epoch)
        dropout = keras.layers.SpatialDropout2D(channel_dropout, seed=seed, force_generator=True)
        dataset = dataset.map(
            lambda batch, batch_labels: (dropout(batch, training=True), batch_labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def augmented_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    augmentation: str = "standard",
) -> tf.data.Dataset:
    """One augmented pass over the images, in order (to precompute augmented features)."""
    batches = _float_batches(_image_slices(images, labels), batch_size)
    return augment_batches(batches, seed, augmentation).prefetch(tf.data.AUTOTUNE)
