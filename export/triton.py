"""Triton Inference Server configuration (ONNX Runtime backend) for one model."""

from common.contract import CLASS_LABELS, IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from common.repository import ONNX_FILE
from export.config import TRITON_MAX_BATCH_SIZE, TRITON_MAX_QUEUE_DELAY_US

# First line of every config.pbtxt export writes: a file without it is someone else's
# (a hand-tuned Triton configuration, say) and is never replaced.
GENERATED_HEADER = "# Written by digit-serving (python -m export.run); replaced at each export."


def triton_config(name: str) -> str:
    """config.pbtxt text: dynamic batching, serve the latest version, one instance per device."""
    return f"""{GENERATED_HEADER}
name: "{name}"
platform: "onnxruntime_onnx"
default_model_filename: "{ONNX_FILE}"
max_batch_size: {TRITON_MAX_BATCH_SIZE}
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {IMAGE_SIZE}, {IMAGE_SIZE}, 1 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {len(CLASS_LABELS)} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {TRITON_MAX_QUEUE_DELAY_US}
}}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""
