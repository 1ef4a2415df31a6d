"""ONNX conversion with tf2onnx, from the SavedModel just written (so both are one graph)."""

from pathlib import Path

import onnx
from tf2onnx import convert, tf_loader

from common.contract import INPUT_NAME, OUTPUT_NAME
from common.model_runtime import SAVED_MODEL_SIGNATURE
from export.config import ONNX_OPSET

SAVED_MODEL_TAG = "serve"
BATCH_DIM_NAME = "batch"


def convert_saved_model(folder: Path, name: str, opset: int = ONNX_OPSET) -> onnx.ModelProto:
    """What `python -m tf2onnx.convert --saved-model` does, in process; dynamic batch named.

    Converting the SavedModel (rather than tracing the Keras model again) freezes every
    captured constant, such as the VGG16 normalisation's means, into the graph.
    """
    graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
        str(folder),
        None,
        None,
        SAVED_MODEL_TAG,
        [SAVED_MODEL_SIGNATURE],
        None,
        False,
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    model_proto, _ = convert.from_graph_def(
        graph_def,
        name=name,
        input_names=inputs,
        output_names=outputs,
        opset=opset,
        tensors_to_rename=renames,
    )
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM_NAME
    return model_proto


def check_onnx_contract(model_proto: onnx.ModelProto) -> None:
    """onnx.checker with full checking (shape inference included), then the contract's names."""
    onnx.checker.check_model(model_proto, full_check=True)
    inputs = [value.name for value in model_proto.graph.input]
    outputs = [value.name for value in model_proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ValueError(f"ONNX graph has inputs {inputs} and outputs {outputs}")


def save_onnx(model_proto: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(model_proto, str(path))
