"""Label-preserving augmentation for the tf.data training pipeline (never in the models).

Three presets (`--augmentation`):
- standard (the default before 2026-11-24): rotations up to 10 degrees, shifts up to
  8 % of the side, zoom +-10 % (independent height/width factors, so also a little stretch),
  contrast and sensor noise.
- robust: what other writers, pens and scanners do to a digit (the shifts that
  benchmarks/robustness.py measures): rotations up to 20 degrees, shifts up to 25 %, digits
  from a little larger down to half their size, thicker and thinner strokes, low resolution
  and blur, uneven lighting, stronger noise. Measured: much steadier off-centre and small
  digits, but lower clean validation accuracy with the standard schedule (README, Results).
- mixed (the default): each batch gets the robust or the standard transforms, half and
  half, so the model also sees digits as clean as the validation split's.
- scanned (not a `--augmentation` choice): the standard transforms, then every image down to
  a low resolution and back up. VGG16's feature cache holds `--scanned-copies` such passes:
  its fixed set of augmented views otherwise holds few coarse scans (docs/training.md).

No flip in any: a mirrored 2 is not a 2. Borders are filled with the nearest edge pixel,
so dark-on-white images do not grow black corners. These layers run only inside
`dataset.map(..., training=True)`; the models hold no random layer, so nothing random can
reach an exported graph. The layers written here draw their random numbers as Keras' own
preprocessing layers do, from Keras' seeded generator (a tf.random.Generator), one draw per
image, so a batch that tf.distribute splits between replicas is augmented as it would be
whole; only the mixed preset's choice is one draw per batch, so per replica.
"""

from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from common.contract import IMAGE_SIZE

CONTRAST = 0.2
# A blurred image is scaled down to one of these sides of a 100x100 image (log-spaced, so
# the coarsest scans are drawn as often as the mild ones; the same share of a smaller one's
# side, as in the fallback backbone's pretraining) and back up.
LOW_RESOLUTION_SIDES = (6, 8, 11, 16, 23, 32)
STROKE_WINDOWS = (3, 5)  # dilation / erosion windows
BACKGROUND_GRADIENT = 100.0  # at most, grey levels across the image


@dataclass(frozen=True)
class Augmentation:
    rotation: float  # fraction of a full turn, either way
    shift: float  # fraction of the side
    zoom: float | tuple[float, float]  # Keras' factors: negative = larger, positive = smaller
    noise_stddev: float  # on the 0..255 pixel scale
    shifts_of_scanning: bool  # stroke width and uneven lighting
    low_resolution_share: float  # of the images scaled down and back up


AUGMENTATIONS = {
    "standard": Augmentation(10 / 360, 0.08, 0.10, 6.0, False, low_resolution_share=0.0),
    "robust": Augmentation(20 / 360, 0.25, (-0.10, 1.0), 10.0, True, low_resolution_share=0.3),
    "scanned": Augmentation(10 / 360, 0.08, 0.10, 6.0, False, low_resolution_share=1.0),
}
SCANNED = "scanned"


MIXED = "mixed"  # each batch: robust or standard (augment_batches)
MIXED_ROBUST_SHARE = 0.5


class SeededTransform(keras.__internal__.layers.BaseRandomLayer):
    """A random transform that runs only when training, drawing from Keras' generator seeded
    with `seed` (as Keras' own preprocessing layers do)."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(seed=seed, force_generator=True, **kwargs)

    def call(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        return self.transform(images) if training else images

    def uniform(self, shape) -> tf.Tensor:
        return self._random_generator.random_uniform(shape)

    def transform(self, images: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


def one_variant_per_image(
    images: tf.Tensor, variants: list[tf.Tensor], unchanged_share: float, draws: tf.Tensor
) -> tf.Tensor:
    """Per image: itself with probability `unchanged_share`, else one of `variants` (each a
    transform of the whole batch), chosen by `draws` (uniform in 0..1, one per image)."""
    changed = (draws - unchanged_share) / (1.0 - unchanged_share)  # uniform in 0..1 if > 0
    pick = tf.where(draws < unchanged_share, 0, 1 + tf.cast(changed * len(variants), tf.int32))
    pick = tf.minimum(pick, len(variants))
    stacked = tf.stack([images, *variants], axis=1)  # [N, 1 + variants, H, W, 1]
    return tf.gather(stacked, pick, batch_dims=1)


class RandomStrokeWidth(SeededTransform):
    """Per image: unchanged half the time, else the strokes dilated or eroded by a 3x3 or 5x5
    window. Max- and min-pooling are dilation and erosion of light ink and the reverse of dark
    ink: choosing among all of them covers both polarities without knowing which an image has."""

    def transform(self, images: tf.Tensor) -> tf.Tensor:
        variants = []
        for window in STROKE_WINDOWS:
            pool = lambda x, w=window: tf.nn.max_pool2d(x, w, 1, "SAME")  # noqa: E731
            variants += [pool(images), -pool(-images)]
        return one_variant_per_image(images, variants, 0.5, self.uniform([tf.shape(images)[0]]))


def scaled_side(side: int, size: tf.Tensor) -> tf.Tensor:
    """[h, w] that are `side` pixels of a 100x100 image, for an image of `size` (at least 2)."""
    scaled = tf.round(tf.cast(size, tf.float32) * (side / IMAGE_SIZE))
    return tf.maximum(tf.cast(scaled, tf.int32), 2)


class RandomLowResolution(SeededTransform):
    """Per image, for `share` of them: down to one of LOW_RESOLUTION_SIDES and back up, as a
    cheap scanner or a thumbnail gives (and a blur)."""

    def __init__(self, share: float, seed: int, **kwargs):
        super().__init__(seed, **kwargs)
        self.share = share

    def transform(self, images: tf.Tensor) -> tf.Tensor:
        size = tf.shape(images)[1:3]
        variants = [
            tf.image.resize(
                tf.image.resize(images, scaled_side(side, size), "area"), size, "bilinear"
            )
            for side in LOW_RESOLUTION_SIDES
        ]
        draws = self.uniform([tf.shape(images)[0]])
        return one_variant_per_image(images, variants, 1.0 - self.share, draws)


class RandomBackgroundGradient(SeededTransform):
    """Uneven lighting: a linear ramp in a random direction, up to BACKGROUND_GRADIENT grey
    levels, added towards the paper's side (the ink is whichever side is the minority)."""

    def transform(self, images: tf.Tensor) -> tf.Tensor:
        count, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        draws = self.uniform([count, 2])
        angle = 2 * 3.141592653589793 * draws[:, 0]
        amplitude = BACKGROUND_GRADIENT * draws[:, 1]
        rows = tf.cast(tf.range(height), tf.float32)[None, :, None] / tf.cast(height, tf.float32)
        cols = tf.cast(tf.range(width), tf.float32)[None, None, :] / tf.cast(width, tf.float32)
        ramp = tf.cos(angle)[:, None, None] * cols + tf.sin(angle)[:, None, None] * rows
        ramp = (ramp - tf.reduce_min(ramp, axis=[1, 2], keepdims=True)) * amplitude[:, None, None]
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        paper_is_light = mean > (low + high) / 2.0  # the models' own polarity rule
        direction = tf.where(paper_is_light, -1.0, 1.0)
        return images + direction * ramp[..., None]


class RandomChoiceOfTwo(SeededTransform):
    """Per batch: `first` with probability `first_share`, else `second`."""

    def __init__(self, first, second, first_share: float, seed: int, **kwargs):
        super().__init__(seed, **kwargs)
        self.first, self.second, self.first_share = first, second, first_share

    def transform(self, images: tf.Tensor) -> tf.Tensor:
        return tf.cond(
            self.uniform([]) < self.first_share,
            lambda: self.first(images, training=True),
            lambda: self.second(images, training=True),
        )


def build_augmenter(seed: int, preset: str = "standard") -> keras.Sequential:
    """Random, label-preserving transforms of float32 [N, H, W, 1] images in 0..255."""
    settings, fill = AUGMENTATIONS[preset], {"fill_mode": "nearest"}
    share = settings.low_resolution_share
    scanning = [
        *([RandomLowResolution(share, seed + 6, name="low_resolution")] if share else []),
        *(
            [RandomBackgroundGradient(seed + 7, name="background_gradient")]
            if settings.shifts_of_scanning
            else []
        ),
    ]
    layers = [
        *(
            [RandomStrokeWidth(seed + 5, name="stroke_width")]
            if settings.shifts_of_scanning
            else []
        ),
        keras.layers.RandomRotation(settings.rotation, seed=seed, **fill),
        keras.layers.RandomTranslation(settings.shift, settings.shift, seed=seed + 1, **fill),
        keras.layers.RandomZoom(settings.zoom, settings.zoom, seed=seed + 2, **fill),
        *scanning,
        keras.layers.RandomContrast(CONTRAST, seed=seed + 3),
        keras.layers.GaussianNoise(settings.noise_stddev, seed=seed + 4),
        keras.layers.Lambda(lambda x: tf.clip_by_value(x, 0.0, 255.0), name="clip"),
    ]
    return keras.Sequential(layers, name="augmenter")


def augment_batches(
    dataset: tf.data.Dataset, seed: int, preset: str = "standard"
) -> tf.data.Dataset:
    """Apply the augmenter (training=True) to a dataset of (images, labels) batches; the
    mixed preset gives each batch the robust or the standard augmenter, half and half."""
    if preset == MIXED:
        robust, standard = build_augmenter(seed, "robust"), build_augmenter(seed + 10, "standard")
        augmenter = RandomChoiceOfTwo(robust, standard, MIXED_ROBUST_SHARE, seed + 8)
    else:
        augmenter = build_augmenter(seed, preset)
    return dataset.map(
        lambda images, labels: (augmenter(images, training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
