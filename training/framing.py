"""Digit framing in-graph: MNIST's own normalisation, applied to every image a model sees.

MNIST's digits were scaled so that the longer side of their ink box is 20 of 28 pixels
(the aspect ratio kept) and moved so that their centre of mass is the centre of the frame.
The bundled digits (MNIST shown at 100x100) are framed that way already; a client's digit
is framed however its scanner, crop or thumbnail left it: tight against the edges, small
in a corner. `DigitFraming` frames every image the MNIST way before the network sees it,
so a digit's framing no longer changes what the model reads.

It runs after `PolarityNormalization` (light ink on a dark background, 0..255). The ink is
what lies above a quarter of the range; the box spans the rows and columns between the first and
the last EDGE_INK_SHARE of the ink's mass (so a stray speck of noise does not stretch it);
the image is then resampled by two matrix products (rows, then columns), a triangle filter
as wide as the step between samples, so a shrunk digit is smoothed, not aliased. Everything
is plain tensor arithmetic (MatMul, CumSum, reductions), which ONNX expresses op for op.
An image with no ink passes unchanged.
"""

import tensorflow as tf
import tf_keras as keras

# The longer side of the ink box after framing, as a share of the frame: what the bundled
# digits measure by this rule (median 69 of 100 px, 5-95 % 65-70: MNIST's 20 of 28 px, less
# the faint edge of its anti-aliased strokes), so that framing leaves them almost as they are.
FRAMED_SHARE = 0.69
INK_LEVEL = 64.0  # of 0..255 after polarity normalisation: a blurred stroke's edge counts
EDGE_INK_SHARE = 0.01  # of the ink's mass, left outside the box at each edge
# Bounds on the scale: a speck is not blown up to a digit, a frame-filling scribble not
# shrunk to a dot.
SCALE_RANGE = (0.25, 4.0)


def _extent(profile: tf.Tensor) -> tf.Tensor:
    """Rows (or columns) between the first and the last EDGE_INK_SHARE of a profile of ink
    shares ([N, S], each row summing to 1): how long the box is, in pixels."""
    mass_before = tf.cumsum(profile, axis=1, exclusive=True)
    mass_through = tf.cumsum(profile, axis=1)
    first = tf.reduce_sum(tf.cast(mass_through < EDGE_INK_SHARE, tf.float32), axis=1)
    after = tf.reduce_sum(tf.cast(mass_before > 1.0 - EDGE_INK_SHARE, tf.float32), axis=1)
    side = tf.cast(tf.shape(profile)[1], tf.float32)
    return side - after - first


def _centre(profile: tf.Tensor) -> tf.Tensor:
    positions = tf.range(tf.shape(profile)[1], dtype=tf.float32)
    return tf.reduce_sum(profile * positions, axis=1)


def _sampling_matrix(centre: tf.Tensor, scale: tf.Tensor, side: int) -> tf.Tensor:
    """[N, side, side]: row i holds the weights of the source pixels that output pixel i
    reads; output pixel i sits at source position centre + (i - middle) / scale.

    The weights are normalised over the frame and a border as wide as the widest filter,
    so that each sample's weights sum to 1 (no ripple) and a sample beyond the frame's edge
    reads the dark background beyond it."""
    border = int(2 / SCALE_RANGE[0]) + 1
    positions = tf.range(-border, side + border, dtype=tf.float32)
    outputs = tf.range(side, dtype=tf.float32)
    source = centre[:, None] + (outputs[None, :] - (side - 1) / 2.0) / scale[:, None]
    reach = tf.minimum(scale, 1.0)[:, None, None]  # a shrink averages 1/scale pixels
    weights = tf.nn.relu(1.0 - tf.abs(source[:, :, None] - positions[None, None, :]) * reach)
    weights = weights / tf.maximum(tf.reduce_sum(weights, axis=2, keepdims=True), 1e-6)
    return weights[:, :, border : border + side]


def ink_geometry(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per image of [N, S, S] (light ink, 0..255): the longer side of the ink box, the
    centre of mass (row, column), and whether there is any ink at all."""
    # On a 0..1 scale, so that every sum stays within float16's range (65,504) where the
    # fp16 variant stores the tensors between these float32 ops (export/fp16.py).
    ink = tf.nn.relu(pixels - INK_LEVEL) / 255.0
    row_sums, col_sums = tf.reduce_sum(ink, axis=2), tf.reduce_sum(ink, axis=1)
    mass = tf.reduce_sum(row_sums, axis=1)
    rows = row_sums / tf.maximum(mass, 1e-6)[:, None]
    cols = col_sums / tf.maximum(mass, 1e-6)[:, None]
    longer = tf.maximum(_extent(rows), _extent(cols))
    return longer, _centre(rows), _centre(cols), mass > 0.0


@keras.utils.register_keras_serializable(package="digits")
class DigitFraming(keras.layers.Layer):
    """Scale each digit so its ink box's longer side is FRAMED_SHARE of the frame, and move
    its centre of mass to the centre (module docstring)."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        side, pixels = images.shape[1], images[..., 0]
        longer, row_centre, col_centre, has_ink = ink_geometry(pixels)
        scale = tf.clip_by_value(FRAMED_SHARE * side / tf.maximum(longer, 1.0), *SCALE_RANGE)
        middle = tf.fill(tf.shape(longer), (side - 1) / 2.0)
        scale = tf.where(has_ink, scale, tf.ones_like(scale))
        row_weights = _sampling_matrix(tf.where(has_ink, row_centre, middle), scale, side)
        col_weights = _sampling_matrix(tf.where(has_ink, col_centre, middle), scale, side)
        framed = tf.matmul(tf.matmul(row_weights, pixels), col_weights, transpose_b=True)
        return framed[..., None]
