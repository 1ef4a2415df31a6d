"""A float16 ONNX variant for GPU serving (float32 in and out), with its accuracy change."""

import numpy as np
import onnx
from onnxconverter_common import float16

from common.model_runtime import ProviderChoice, predict_in_batches, session_predict
from export.config import ExportOptions
from export.speed import latencies_ms

FP16_BATCH_SIZE = 64
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def retype_float_casts(graph: onnx.GraphProto) -> None:
    """Cast(to=float32) nodes whose output is typed float16 now cast to float16."""
    float16_tensors = {
        info.name for info in graph.value_info if info.type.tensor_type.elem_type == FLOAT16
    }
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in float16_tensors:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == FLOAT:
                    attribute.i = FLOAT16


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and activations in float16; input and output stay float32 (keep_io_types).

    The converter retypes the outputs of the graph's own Cast-to-float32 nodes (tf2onnx
    turns Select into Cast + Mul) but not their `to` attribute, which is fixed here.
    """
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    retype_float_casts(converted.graph)
    onnx.checker.check_model(converted, full_check=True)
    return converted


def compare_fp16(
    fp32_probabilities: np.ndarray,
    fp16_model: onnx.ModelProto,
    choice: ProviderChoice,
    images: np.ndarray,
    labels: np.ndarray | None,
    options: ExportOptions,
) -> dict:
    """fp16 vs fp32 ONNX Runtime on the validation images: class agreement, accuracy change."""
    session = choice.create_session(fp16_model.SerializeToString())
    fp16 = predict_in_batches(session_predict(session), images, FP16_BATCH_SIZE)
    batch_sizes, repeats = options.speed_batch_sizes, options.speed_repeats
    speed = latencies_ms({"fp16": session}, images, batch_sizes, repeats)["fp16"]
    report = {
        "provider": session.get_providers()[0],
        "latency_level_all": speed,
        "images": len(images),
        "max_abs_diff_vs_fp32": float(np.max(np.abs(fp16 - fp32_probabilities))),
        "class_mismatches_vs_fp32": int(np.sum(fp16.argmax(1) != fp32_probabilities.argmax(1))),
    }
    if labels is not None:
        fp32_accuracy = float(np.mean(fp32_probabilities.argmax(1) == labels))
        fp16_accuracy = float(np.mean(fp16.argmax(1) == labels))
        report |= {
            "fp32_accuracy": fp32_accuracy,
            "fp16_accuracy": fp16_accuracy,
            "accuracy_change": fp16_accuracy - fp32_accuracy,
        }
    return report
