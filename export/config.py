"""Every setting of the export stage, in one place."""

from dataclasses import dataclass

from common.cli import positive_int
from common.settings import setting

ONNX_OPSET = 17
FP16_ONNX_FILE = "model_fp16.onnx"
TEMP_PREFIX = ".tmp-"

# Equality proof: Keras vs reloaded SavedModel vs ONNX Runtime.
CPU_TOLERANCE = 1e-4
GPU_TOLERANCE = 1e-3  # TF32 is on by default on GPUs in both TensorFlow and ONNX Runtime

# Triton (ONNX Runtime backend).
TRITON_MAX_BATCH_SIZE = 64
TRITON_MAX_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class ExportOptions:
    """How thoroughly a version is checked and measured before it is published."""

    odd_batch_size: int = 7  # every validation image is checked in batches of this size
    batch_one_images: int = 32  # batch size 1 on the first images only (one call per image)
    full_batch_images: int = 128  # one call with this many images (all, if fewer)
    providers: str = setting(
        "auto",
        "ONNX Runtime execution provider for the checks",
        choices=("auto", "cpu", "cuda"),
        flag="--provider",
    )
    speed_batch_sizes: tuple[int, ...] = (1, 32)
    speed_repeats: int = setting(
        10, "timed runs per optimisation level and batch size", parse=positive_int
    )
    fp16: bool = setting(True, "build and check the float16 GPU variant")
    keep_optimized_graph: bool = False  # see docs/export.md: the optimised graph is hardware-bound


# Few images, one timing run, no fp16 variant: for test fixtures that need a tiny repository.
QUICK_OPTIONS = ExportOptions(
    batch_one_images=3, full_batch_images=16, speed_batch_sizes=(1,), speed_repeats=1, fp16=False
)
