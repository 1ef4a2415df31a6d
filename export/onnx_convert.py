"""ONNX conversion with tf2onnx, from the same traced serving function as the SavedModel."""

from pathlib import Path

import onnx
import tf2onnx

from common.contract import INPUT_NAME, OUTPUT_NAME
from export.config import ONNX_OPSET
from export.savedmodel import INPUT_SIGNATURE, ServingModule

BATCH_DIM_NAME = "batch"


def convert_to_onnx(module: ServingModule, opset: int = ONNX_OPSET) -> onnx.ModelProto:
    """Convert the serving function; input `image` and output `probabilities`, dynamic batch."""
    model_proto, _ = tf2onnx.convert.from_function(
        module.serve, input_signature=INPUT_SIGNATURE, opset=opset
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
