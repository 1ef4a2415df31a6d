"""Label-preserving augmentation for the tf.data training pipeline (never in the models).

Small rotations, shifts, zooms (independent height/width factors, so also a little
stretch), contrast and sensor noise. No flip: a mirrored 2 is not a 2. Borders are
filled with the nearest edge pixel, so dark-on-white images do not grow black corners.
These layers run only inside `dataset.map(..., training=True)`; the models themselves
hold no random layer, so nothing random can reach an exported graph.
"""

import tensorflow as tf
import tf_keras as keras

ROTATION = 10 / 360  # fraction of a full turn: +-10 degrees
SHIFT = 0.08  # fraction of the side
ZOOM = 0.10
CONTRAST = 0.2
NOISE_STDDEV = 6.0  # on the 0..255 pixel scale


def build_augmenter(seed: int) -> keras.Sequential:
    """Random, label-preserving transforms of float32 [N, H, W, 1] images in 0..255."""
    fill = {"fill_mode": "nearest"}
    return keras.Sequential(
        [
            keras.layers.RandomRotation(ROTATION, seed=seed, **fill),
            keras.layers.RandomTranslation(SHIFT, SHIFT, seed=seed + 1, **fill),
            keras.layers.RandomZoom(ZOOM, ZOOM, seed=seed + 2, **fill),
            keras.layers.RandomContrast(CONTRAST, seed=seed + 3),
            keras.layers.GaussianNoise(NOISE_STDDEV, seed=seed + 4),
            keras.layers.Lambda(lambda x: tf.clip_by_value(x, 0.0, 255.0), name="clip"),
        ],
        name="augmenter",
    )


def augment_batches(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Apply the augmenter (training=True) to a dataset of (images, labels) batches."""
    augmenter = build_augmenter(seed)
    return dataset.map(
        lambda images, labels: (augmenter(images, training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
