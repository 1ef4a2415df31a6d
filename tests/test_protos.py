"""The committed Python code of protos/ is generated from the .proto as it is now."""

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from protos.inference import grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2
from serving.inference_protocol import InferenceService

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


def test_grpc_stubs_cover_every_method():
    service = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"]
    servicer = digits_pb2_grpc.DigitClassifierServicer
    assert all(hasattr(servicer, method.name) for method in service.methods)


def test_the_inference_service_implements_every_call_of_its_proto():
    """Every call is overridden (the generated base class answers UNIMPLEMENTED)."""
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    base = grpc_service_pb2_grpc.GRPCInferenceServiceServicer
    assert len(service.methods) == 9
    for method in service.methods:
        assert getattr(InferenceService, method.name) is not getattr(base, method.name)
