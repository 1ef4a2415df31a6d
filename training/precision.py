"""The arithmetic VGG16's training runs in: float32, or Keras' mixed bfloat16 policy
(bfloat16 compute, float32 weights) where the hardware computes bfloat16 natively.

The models that are saved and exported are always built in float32: training runs on a
twin built under the mixed policy, whose float32 weights are copied back at the end, so
no bfloat16 op reaches a SavedModel or an ONNX graph.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import tensorflow as tf
import tf_keras as keras

from common.cpu import cpuinfo_field

# CPU flags of native bfloat16 dot products (AMD Zen 4, Intel Cooper Lake and later)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_GPU_COMPUTE_CAPABILITY = (8, 0)  # Ampere and later


def native_bfloat16() -> bool:
    """Whether the devices training runs on compute bfloat16 natively (every GPU, or the
    CPU when there is none)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [
            tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in gpus
        ]
        return all(tuple(c) >= BF16_GPU_COMPUTE_CAPABILITY for c in capabilities)
    cpu_flags = (cpuinfo_field("flags") or "").split()
    return any(flag in cpu_flags for flag in BF16_CPU_FLAGS)


def resolve_precision(setting: str) -> str:
    """`--precision`: auto is mixed_bfloat16 where the hardware has it, else float32."""
    if setting != "auto":
        return setting
    return "mixed_bfloat16" if native_bfloat16() else "float32"


@contextmanager
def compute_policy(precision: str) -> Iterator[None]:
    """Layers built inside compute in `precision` (a Keras policy name); restored after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in model.layers:
        layers += _leaf_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return layers


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """`source`'s weights into `target`, a model of the same architecture, layer by layer
    (`Model.set_weights` lists trainable weights first, so it needs equal trainable flags)."""
    pairs = zip(_leaf_layers(source), _leaf_layers(target), strict=True)
    for theirs, mine in pairs:
        mine.set_weights(theirs.get_weights())
