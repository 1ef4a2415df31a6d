"""Per-version statistics in Triton's terms (ModelStatistics): counts and nanoseconds.

Kept by each version's batcher and the classification path, read by the Open Inference
Protocol's ModelStatistics call, so perf_analyzer and Triton's clients can show where a
request's time went on the server: queue, input assembly, inference, output.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class VersionStatistics:
    success: Duration = field(default_factory=Duration)  # requests answered, end to end
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # per request, until its batch ran
    totals: BatchDurations = field(default_factory=BatchDurations)  # per request
    batches: dict[int, BatchDurations] = field(default_factory=lambda: defaultdict(BatchDurations))
    inference_count: int = 0  # images answered
    execution_count: int = 0  # model runs
    last_inference_ms: int = 0

    def record_batch(self, jobs: int, images: int, input_ns: int, infer_ns: int, output_ns: int):
        """One model run of `images` images for `jobs` requests."""
        self.execution_count += 1
        by_size = self.batches[images]
        for total, part, ns in (
            (self.totals.compute_input, by_size.compute_input, input_ns),
            (self.totals.compute_infer, by_size.compute_infer, infer_ns),
            (self.totals.compute_output, by_size.compute_output, output_ns),
        ):
            total.add(ns * jobs, jobs)  # Triton counts these per request
            part.add(ns)

    def record_request(self, ok: bool, ns: int, images: int) -> None:
        if ok:
            self.success.add(ns)
            self.inference_count += images
            self.last_inference_ms = int(time.time() * 1000)
        else:
            self.fail.add(ns)
