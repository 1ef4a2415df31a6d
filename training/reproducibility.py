"""Seeding that makes a run repeatable: the same data, seed and code give the same model."""

import tensorflow as tf
import tf_keras as keras


def make_reproducible(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TensorFlow for deterministic kernels.

    Seeds alone are not enough on CPU: multi-threaded reductions and parallel tf.data maps
    with random augmentation reorder floating-point work, so two seeded runs drifted apart
    (99.68 % vs 99.52 % validation accuracy for the same scratch_cnn run).
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
