"""common.native_output: what native code prints is caught for the log."""

import os

from common.native_output import captured_native_stderr


def test_native_output_is_caught_line_by_line(capfd):
    """What C/C++ code writes to descriptor 2 (as ONNX Runtime's import-time warning does)
    is caught for the log, not left on stderr."""
    with captured_native_stderr() as lines:
        os.write(2, b"[W:onnxruntime:Default, device_discovery.cc:164] GPU discovery failed\n\n")
        os.write(2, b"second line\n")
    assert lines == ["[W:onnxruntime:Default, device_discovery.cc:164] GPU discovery failed",
                     "second line"]  # fmt: skip
    assert capfd.readouterr().err == ""
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
