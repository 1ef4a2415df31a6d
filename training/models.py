"""The two classifiers. Both take raw pixels (float32 [N, 100, 100, 1], 0..255) and do
all preprocessing in-graph, so a server only decodes and resizes.

Augmentation is NOT part of these models: it runs in the tf.data training pipeline
(training/augment.py), so no random op can ever reach an exported graph.
"""

from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from common.contract import CLASS_LABELS, IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME

NUM_CLASSES = len(CLASS_LABELS)
# VGG16's own preprocessing ("caffe" mode): BGR channel means, no scaling.
VGG16_BGR_MEANS = (103.939, 116.779, 123.68)
VGG16_LAST_BLOCK = "block5"
VGG16_TRUNK_OUTPUT = "block4_pool"


@keras.utils.register_keras_serializable(package="digits")
class PolarityNormalization(keras.layers.Layer):
    """Map any image to light ink on a dark background, stretched to 0..255.

    An image whose mean lies above the midpoint of its own range is mostly light
    (paper), so it is inverted; then min..max is stretched to 0..255. Dark-on-white
    and light-on-dark versions of one digit thus reach the network as the same pixels.
    """

    def call(self, images: tf.Tensor) -> tf.Tensor:
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        ink_is_dark = mean > (low + high) / 2.0
        images = tf.where(ink_is_dark, high - images, images - low)
        return images * (255.0 / tf.maximum(high - low, 1.0))


def contract_input(side: int = IMAGE_SIZE) -> keras.Input:
    return keras.Input(shape=(side, side, 1), dtype="float32", name=INPUT_NAME)


def classifier_output(features: tf.Tensor, num_classes: int = NUM_CLASSES) -> tf.Tensor:
    # float32 under a mixed-precision policy too: a softmax in bfloat16 loses the small
    # probabilities the loss needs (training/precision.py)
    return keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME, dtype="float32")(
        features
    )


def conv_block(x: tf.Tensor, filters: int) -> tf.Tensor:
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # A short data set (~80 steps an epoch): the default momentum 0.99 leaves the moving
    # statistics far from the data after the first epochs, and validation accuracy at chance.
    # Synchronized: under tf.distribute the statistics are those of the global batch, so
    # several replicas train the same model as one device (on one device nothing changes).
    x = keras.layers.BatchNormalization(momentum=0.9, synchronized=True)(x)
    x = keras.layers.ReLU()(x)
    return keras.layers.MaxPooling2D(2)(x)


def build_scratch_cnn() -> keras.Model:
    """The assignment's CNN (Conv 32/64/128, each + 2x2 max-pool, Flatten, Dense 128),
    improved with batch norm and dropout, on a 2x average-pooled input.

    The 2x downsampling to 50x50 first cuts the convolution cost ~4x; a digit at 50x50
    keeps every stroke (the bundled digits are 28x28 scans upscaled to 100x100).
    """
    inputs = contract_input()
    x = PolarityNormalization(name="polarity")(inputs)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = keras.layers.AveragePooling2D(2, name="downsample")(x)
    for filters in (32, 64, 128):
        x = conv_block(x, filters)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, classifier_output(x), name="scratch_cnn")


def build_vgg16_backbone(input_side: int, weights: str | None) -> keras.Model:
    """VGG16 convolutional base; `weights` is "imagenet", a local .h5 path, or None."""
    return keras.applications.VGG16(
        include_top=False, weights=weights, input_shape=(input_side, input_side, 3)
    )


def vgg16_input_features(inputs: tf.Tensor) -> tf.Tensor:
    """Raw grayscale pixels to what VGG16 expects: 3 channels, BGR means subtracted."""
    x = PolarityNormalization(name="polarity")(inputs)
    x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    return keras.layers.Normalization(
        mean=VGG16_BGR_MEANS, variance=(1.0, 1.0, 1.0), name="vgg16_preprocess"
    )(x)


def build_vgg16_classifier(
    backbone: keras.Model, num_classes: int, name: str, side: int = IMAGE_SIZE
) -> keras.Model:
    """Raw pixels -> VGG16 preprocessing -> backbone -> global average pooling -> dense head."""
    inputs = contract_input(side)
    x = vgg16_input_features(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(256, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(0.3, name="head_dropout")(x)
    return keras.Model(inputs, classifier_output(x, num_classes), name=name)


def build_vgg16_finetuned(backbone: keras.Model) -> keras.Model:
    """VGG16 backbone (frozen at first) + global average pooling + a small dense head."""
    backbone.trainable = False
    return build_vgg16_classifier(backbone, NUM_CLASSES, "vgg16_finetuned")


HEAD_LAYERS = ("head_pool", "head_dense", "head_dropout", OUTPUT_NAME)


@dataclass(frozen=True)
class VGG16Parts:
    """`model` cut in stages that share its layers (and weights): training a part trains
    `model`. Blocks 1-4 are frozen in both phases, so the trunk runs once per image."""

    trunk: keras.Model  # raw pixels -> block4_pool
    block5: keras.Model  # block4 features -> block5_pool
    head: keras.Model  # block5 features -> probabilities (phase 1 trains this)
    top: keras.Model  # block4 features -> probabilities (phase 2 trains this)


def _chain(inputs: tf.Tensor, layers: list[keras.layers.Layer]) -> tf.Tensor:
    for layer in layers:
        inputs = layer(inputs)
    return inputs


def _float32(features: tf.Tensor) -> tf.Tensor:
    """Features as float32 whatever the compute policy: the feature cache holds them, and a
    multi-worker predict() gathers them, which bfloat16 tensors cannot be."""
    return keras.layers.Activation("linear", dtype="float32")(features)


def vgg16_parts(model: keras.Model) -> VGG16Parts:
    backbone = model.get_layer("vgg16")
    lower = keras.Model(backbone.inputs, backbone.get_layer(VGG16_TRUNK_OUTPUT).output)
    preprocessed = model.get_layer("vgg16_preprocess").get_output_at(0)
    trunk = keras.Model(model.inputs, _float32(lower(preprocessed)), name="trunk")
    block5_layers = [la for la in backbone.layers if la.name.startswith(VGG16_LAST_BLOCK)]
    head_layers = [model.get_layer(name) for name in HEAD_LAYERS]
    block4_features = keras.Input(shape=lower.output_shape[1:], name="block4_features")
    block5_features = keras.Input(shape=backbone.output_shape[1:], name="block5_features")
    return VGG16Parts(
        trunk=trunk,
        block5=keras.Model(block4_features, _float32(_chain(block4_features, block5_layers))),
        head=keras.Model(block5_features, _chain(block5_features, head_layers), name="head"),
        top=keras.Model(
            block4_features, _chain(block4_features, block5_layers + head_layers), name="top"
        ),
    )


def unfreeze_last_block(model: keras.Model) -> None:
    """Phase 2 of fine-tuning: make only VGG16's last convolutional block trainable."""
    backbone = model.get_layer("vgg16")
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = layer.name.startswith(VGG16_LAST_BLOCK)
