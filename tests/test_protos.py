"""The committed Python code of protos/ is generated from the .proto as it is now."""

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from protos.inference import grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2
from serving.inference_protocol import InferenceService
from serving.service import DigitClassifierService

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {
    "protos/digits/v1/digits.proto": digits_pb2,
    "protos/inference/model_config.proto": model_config_pb2,
    "protos/inference/grpc_service.proto": grpc_service_pb2,
}


def without_json_names(file: descriptor_pb2.FileDescriptorProto):
    """protoc's descriptor sets carry json_name; the generated Python code drops it."""
    messages = list(file.message_type)
    while messages:
        message = messages.pop()
        for field in message.field:
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    return file


@pytest.mark.parametrize("proto", sorted(GENERATED))
def test_generated_code_matches_the_proto(tmp_path, proto):
    """Compile the .proto afresh and compare descriptors (independent of protoc versions)."""
    out = tmp_path / "descriptor.pb"
    # protoc runs in its own process, as `make protos` runs it: grpc_tools' extension carries
    # its own protobuf runtime and crashes when imported beside TensorFlow's.
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--descriptor_set_out={out}",
    ]
    subprocess.run([*command, str(ROOT / proto)], check=True, timeout=60)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    generated = GENERATED[proto].DESCRIPTOR.serialized_pb
    committed = descriptor_pb2.FileDescriptorProto.FromString(generated)
    assert len(fresh.message_type) == len(committed.message_type) > 0
    assert without_json_names(fresh) == without_json_names(committed), (
        f"stale: regenerate with `make protos` ({proto})"
    )


@pytest.mark.parametrize(
    ("proto", "service_name", "base", "implementation"),
    [
        (
            digits_pb2,
            "DigitClassifier",
            digits_pb2_grpc.DigitClassifierServicer,
            DigitClassifierService,
        ),
        (
            grpc_service_pb2,
            "GRPCInferenceService",
            grpc_service_pb2_grpc.GRPCInferenceServiceServicer,
            InferenceService,
        ),
    ],
)
def test_every_call_of_each_service_is_implemented(proto, service_name, base, implementation):
    """Overridden in the servicer (the generated base class answers UNIMPLEMENTED)."""
    service = proto.DESCRIPTOR.services_by_name[service_name]
    assert len(service.methods) > 0
    for method in service.methods:
        assert getattr(implementation, method.name) is not getattr(base, method.name), method.name
