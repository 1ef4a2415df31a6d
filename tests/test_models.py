"""The model I/O contract: input `image` float32 [N,100,100,1], output [N,3] summing to 1."""

import numpy as np
import pytest
import tf_keras as keras

from common.contract import INPUT_NAME, MODEL_NAMES
from training.models import (
    build_scratch_cnn,
    build_vgg16_backbone,
    build_vgg16_finetuned,
    unfreeze_last_block,
)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model(request) -> keras.Model:
    if request.param == "scratch_cnn":
        return build_scratch_cnn()
    return build_vgg16_finetuned(build_vgg16_backbone(100, None))


def test_input_contract(model):
    assert model.name in MODEL_NAMES
    (tensor,) = model.inputs
    assert tensor.name.split(":")[0] == INPUT_NAME
    assert tuple(tensor.shape) == (None, 100, 100, 1) and tensor.dtype.name == "float32"
    assert tuple(model.outputs[0].shape) == (None, 3)


@pytest.mark.parametrize("batch", [1, 5])
def test_output_is_probabilities_for_any_batch(model, batch):
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, 100, 100, 1))
    probabilities = model(pixels.astype(np.float32), training=False).numpy()
    assert probabilities.shape == (batch, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_fine_tuning_unfreezes_only_vgg16_block5():
    model = build_vgg16_finetuned(build_vgg16_backbone(100, None))
    backbone = model.get_layer("vgg16")
    assert not backbone.trainable_weights
    unfreeze_last_block(model)
    trainable = {w.name.split("/")[0] for w in backbone.trainable_weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3"}
