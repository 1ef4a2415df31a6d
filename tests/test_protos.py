"""The committed Python code of protos/ is generated from the .proto as it is now."""

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from protos.digits.v1 import digits_pb2, digits_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PROTO = "protos/digits/v1/digits.proto"


def without_json_names(file: descriptor_pb2.FileDescriptorProto):
    """protoc's descriptor sets carry json_name; the generated Python code drops it."""
    messages = list(file.message_type)
    while messages:
        message = messages.pop()
        for field in message.field:
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    return file


def test_generated_code_matches_the_proto(tmp_path):
    """Compile the .proto afresh and compare descriptors (independent of protoc versions)."""
    out = tmp_path / "digits.pb"
    # protoc runs in its own process, as `make protos` runs it: grpc_tools' extension carries
    # its own protobuf runtime and crashes when imported beside TensorFlow's.
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--descriptor_set_out={out}",
    ]
    subprocess.run([*command, str(ROOT / PROTO)], check=True, timeout=60)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(digits_pb2.DESCRIPTOR.serialized_pb)
    assert len(fresh.message_type) == len(committed.message_type) > 0
    assert without_json_names(fresh) == without_json_names(committed), (
        "stale: regenerate with the command in the header of " + PROTO
    )


def test_grpc_stubs_cover_every_method():
    service = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"]
    servicer = digits_pb2_grpc.DigitClassifierServicer
    assert all(hasattr(servicer, method.name) for method in service.methods)
