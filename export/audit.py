"""Op audit: no random, augmentation or image-transform op may reach a served graph.

Lists the op types of a SavedModel's serving signature (following every function it
calls, however deeply nested) and of an ONNX graph (subgraphs and local functions
included), and names any op that would make inference random or distort the image.
"""

from collections.abc import Iterable
from pathlib import Path

import onnx
from tensorflow.core.framework import function_pb2, graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from common.model_runtime import SAVED_MODEL_SIGNATURE
from export.errors import ForbiddenOpError

# TensorFlow ops whose name contains one of these: random sampling, stateful and stateless
# (RandomUniform*, RandomStandardNormal, StatelessRandom*, RandomShuffle, RngReadAndSkip,
# Multinomial...) and the image transforms behind Keras' augmentation layers.
FORBIDDEN_TF_OP_PARTS = (
    "Random",
    "Rng",
    "Multinomial",
    "TruncatedNormal",
    "ImageProjectiveTransform",
    "SampleDistortedBoundingBox",
    "AdjustContrast",
    "AdjustHue",
    "AdjustSaturation",
    "CropAndResize",
)
FORBIDDEN_ONNX_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "GridSample",
        "AffineGrid",
    }
)


def _tensor_node(tensor_name: str) -> str:
    """'^name', 'name:0' and 'name:out:0' all refer to node 'name'."""
    return tensor_name.lstrip("^").split(":")[0]


def _called_functions(node) -> list[str]:
    """Names of the library functions a node calls (its op itself, or func attributes)."""
    names = [node.op]
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(func.name for func in value.list.func)
    return names


def _reachable_nodes(graph: graph_pb2.GraphDef, outputs: Iterable[str]) -> list:
    """Nodes of the top-level graph that the given output tensors depend on."""
    nodes = {node.name: node for node in graph.node}
    pending, seen = [_tensor_node(name) for name in outputs], set()
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        pending.extend(_tensor_node(inp) for inp in nodes[name].input)
    return [nodes[name] for name in seen]


def _read_saved_model(folder: Path) -> saved_model_pb2.SavedModel:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(folder) / "saved_model.pb").read_bytes())
    return saved_model


def saved_model_op_types(folder: Path, signature: str = SAVED_MODEL_SIGNATURE) -> set[str]:
    """Op types the signature's outputs depend on, including nested function bodies."""
    meta_graph = next(
        graph for graph in _read_saved_model(folder).meta_graphs if signature in graph.signature_def
    )
    outputs = [tensor.name for tensor in meta_graph.signature_def[signature].outputs.values()]
    library: dict[str, function_pb2.FunctionDef] = {
        function.signature.name: function for function in meta_graph.graph_def.library.function
    }
    op_types: set[str] = set()
    visited: set[str] = set()
    pending = _reachable_nodes(meta_graph.graph_def, outputs)
    while pending:
        node = pending.pop()
        op_types.add(node.op)
        for name in _called_functions(node):
            if name in library and name not in visited:
                visited.add(name)
                pending.extend(library[name].node_def)
    return {op for op in op_types if op not in library}


def _onnx_graph_op_types(graph: onnx.GraphProto) -> set[str]:
    op_types = set()
    for node in graph.node:
        op_types.add(node.op_type)
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in (*subgraphs, *attribute.graphs):
                op_types |= _onnx_graph_op_types(subgraph)
    return op_types


def onnx_op_types(model: onnx.ModelProto) -> set[str]:
    """Op types of the ONNX graph, its subgraphs (If/Loop/Scan) and local functions."""
    op_types = _onnx_graph_op_types(model.graph)
    for function in model.functions:
        op_types |= {node.op_type for node in function.node}
    return op_types


def _dropout_in_training_mode(model: onnx.ModelProto) -> bool:
    """An ONNX Dropout is random only when its training_mode input is given and not False."""
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        mode = node.input[2] if node.op_type == "Dropout" and len(node.input) > 2 else ""
        if mode and (mode not in constants or bool(constants[mode])):
            return True
    return False


def forbidden_tf_ops(op_types: Iterable[str]) -> list[str]:
    return sorted(op for op in op_types if any(part in op for part in FORBIDDEN_TF_OP_PARTS))


def forbidden_onnx_ops(model: onnx.ModelProto) -> list[str]:
    found = sorted(FORBIDDEN_ONNX_OPS & onnx_op_types(model))
    return [*found, "Dropout(training_mode)"] if _dropout_in_training_mode(model) else found


def audit_graphs(saved_model_folder: Path, onnx_model: onnx.ModelProto) -> dict[str, list[str]]:
    """Raise ForbiddenOpError if either graph has a random/augmentation op; else list op types."""
    tf_ops = saved_model_op_types(saved_model_folder)
    bad = {"SavedModel": forbidden_tf_ops(tf_ops), "ONNX": forbidden_onnx_ops(onnx_model)}
    if any(bad.values()):
        found = "; ".join(f"{fmt}: {', '.join(ops)}" for fmt, ops in bad.items() if ops)
        raise ForbiddenOpError(f"random or augmentation ops in the served graph ({found})")
    return {"saved_model": sorted(tf_ops), "onnx": sorted(onnx_op_types(onnx_model))}
