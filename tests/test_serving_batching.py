"""The dynamic batcher on a real ONNX Runtime session, without gRPC in between."""

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from common.model_runtime import ProviderChoice, server_session_options
from common.repository import version_dir
from serving.batcher import RUN_ALONE_S, Batcher
from serving.errors import ServingError
from serving.metrics import ServerMetrics
from serving.runtime import load_model_version
from tests.serving_support import digit_pixels, direct_probabilities

ATOL = 1e-5


@pytest.fixture(scope="module")
def model(serving_repository):
    folder = version_dir(serving_repository, "scratch_cnn", 1)
    return load_model_version(folder, "scratch_cnn", 1, ProviderChoice("cpu"), 0)


@pytest.fixture(scope="module")
def images(serving_repository):
    pixels = np.stack([digit_pixels(i) for i in range(24)])
    return pixels, direct_probabilities(serving_repository, "scratch_cnn", pixels)


def test_server_sessions_spin_within_a_run_and_stop_when_it_returns(serving_repository, images):
    """Woken for each operator, scratch_cnn's single image took 0.54 ms between requests
    against 0.33 (docs/serving.md); threads spinning after a run would take the loop's core."""
    options = server_session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    folder = version_dir(serving_repository, "scratch_cnn", 1)
    model = load_model_version(folder, "scratch_cnn", 1, ProviderChoice("cpu"), 2)
    pixels, expected = images
    probabilities = model.predict(pixels[:4, ..., None].astype(np.float32))
    np.testing.assert_allclose(probabilities, expected[:4], atol=ATOL)


def run_batcher(model, scenario, **settings):
    """Run `scenario(batcher)` in a fresh event loop; returns (its result, the metrics)."""
    metrics = ServerMetrics()
    options = dict(max_batch_size=8, delay_s=0.05, capacity=64, batching=True) | settings

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(model, executor=executor, metrics=metrics, **options)
            batcher.start()
            try:
                return await scenario(batcher)
            finally:
                await batcher.close()

    return asyncio.run(main()), metrics


def batch_sizes(metrics: ServerMetrics) -> tuple[float, float, dict[float, float]]:
    """(number of runs, images run, cumulative counts by bucket upper bound)."""
    get = metrics.registry.get_sample_value
    count = get("digits_batch_size_count", {"model": "scratch_cnn"}) or 0
    total = get("digits_batch_size_sum", {"model": "scratch_cnn"}) or 0
    buckets = {
        b: get("digits_batch_size_bucket", {"model": "scratch_cnn", "le": str(float(b))})
        for b in (1, 2, 4, 8, 16)
    }
    return count, total, buckets


def test_concurrent_requests_share_batches_up_to_the_maximum(model, images):
    pixels, expected = images
    chunks = [pixels[i : i + 3] for i in range(0, 24, 3)]  # 8 requests of 3 images

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.classify(chunk, None) for chunk in chunks))

    results, metrics = run_batcher(model, scenario)
    np.testing.assert_allclose(np.concatenate(results), expected, atol=ATOL)
    runs, total, buckets = batch_sizes(metrics)
    assert total == 24
    assert runs < 8  # requests were merged
    assert buckets[8] == runs  # and no run exceeded max_batch_size (requests are never split)


def test_a_request_larger_than_the_maximum_runs_alone(model, images):
    pixels, expected = images

    async def scenario(batcher):
        return await batcher.classify(pixels[:20], None)

    result, metrics = run_batcher(model, scenario)
    np.testing.assert_allclose(result, expected[:20], atol=ATOL)
    assert batch_sizes(metrics)[:2] == (1, 20)


def test_no_batching_runs_every_request_alone(model, images):
    pixels, expected = images

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.classify(pixels[i : i + 1], None) for i in range(6)))

    results, metrics = run_batcher(model, scenario, batching=False)
    np.testing.assert_allclose(np.concatenate(results), expected[:6], atol=ATOL)
    assert batch_sizes(metrics)[:2] == (6, 6)


def test_expired_deadline_is_refused_and_not_computed(model, images):
    pixels, expected = images

    async def scenario(batcher):
        now = asyncio.get_running_loop().time()
        expired = batcher.classify(pixels[:2], now - 1)
        alive = batcher.classify(pixels[2:3], now + 60)
        return await asyncio.gather(expired, alive, return_exceptions=True)

    (expired, alive), metrics = run_batcher(model, scenario)
    assert isinstance(expired, ServingError)
    assert expired.code == grpc.StatusCode.DEADLINE_EXCEEDED
    np.testing.assert_allclose(alive, expected[2:3], atol=ATOL)
    assert batch_sizes(metrics)[1] == 1  # only the live image was run


def test_cancelled_caller_is_not_computed(model, images):
    pixels, _ = images

    async def scenario(batcher):
        gone = asyncio.ensure_future(batcher.classify(pixels[:4], None))
        await asyncio.sleep(0)  # queued
        gone.cancel()
        return await batcher.classify(pixels[4:5], None)

    _, metrics = run_batcher(model, scenario)
    assert batch_sizes(metrics)[1] == 1


def test_full_queue_is_resource_exhausted(model, images):
    pixels, expected = images

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.classify(pixels[:3], None))
        await asyncio.sleep(0)
        with pytest.raises(ServingError) as failure:
            await batcher.classify(pixels[3:5], None)
        assert failure.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        return await first

    result, metrics = run_batcher(model, scenario, capacity=4, delay_s=0.2)
    np.testing.assert_allclose(result, expected[:3], atol=ATOL)
    get = metrics.registry.get_sample_value
    assert get("digits_queue_depth", {"model": "scratch_cnn"}) == 0


def test_close_answers_everything_queued_first(model, images):
    pixels, expected = images

    async def scenario(batcher):
        queued = [
            asyncio.ensure_future(batcher.classify(pixels[i : i + 1], None)) for i in range(5)
        ]
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(ServingError) as failure:
            await batcher.classify(pixels[:1], None)
        assert failure.value.code == grpc.StatusCode.UNAVAILABLE
        return [q.result() for q in queued]

    results, _ = run_batcher(model, scenario, delay_s=5)
    np.testing.assert_allclose(np.concatenate(results), expected[:5], atol=ATOL)


def single_images(batcher, pixels, count):
    return asyncio.gather(*(batcher.classify(pixels[i : i + 1], None) for i in range(count)))


def test_a_lone_request_for_a_cheap_model_skips_the_queue(model, images):
    """A model measured faster than the queue trip (RUN_ALONE_S) runs each request that finds
    nothing to batch with at once, on the loop: the batcher's task never sees it."""
    pixels, expected = images
    cheap = dataclasses.replace(model, image_seconds=RUN_ALONE_S / 10)
    batchers = []

    async def scenario(batcher):
        batchers.append(batcher)
        return await single_images(batcher, pixels, 6)

    results, metrics = run_batcher(cheap, scenario, delay_s=0)
    np.testing.assert_allclose(np.concatenate(results), expected[:6], atol=ATOL)
    assert batch_sizes(metrics)[:2] == (6, 6)
    assert batchers[0].stats.queue.count == 6 and batchers[0].stats.queue.ns == 0


@pytest.mark.parametrize(
    "image_seconds, delay_s",
    [(None, 0), (RUN_ALONE_S / 10, 0.05)],
    ids=["model-slower-than-the-queue", "batch-delay-set"],
)
def test_requests_still_share_batches_unless_both_cheap_and_undelayed(
    model, images, image_seconds, delay_s
):
    pixels, expected = images
    measured = (
        model if image_seconds is None else dataclasses.replace(model, image_seconds=image_seconds)
    )
    assert image_seconds is not None or measured.image_seconds > RUN_ALONE_S

    async def scenario(batcher):
        return await single_images(batcher, pixels, 6)

    results, metrics = run_batcher(measured, scenario, delay_s=delay_s)
    np.testing.assert_allclose(np.concatenate(results), expected[:6], atol=ATOL)
    runs, total, _ = batch_sizes(metrics)
    assert total == 6 and runs < 6


@pytest.mark.parametrize("image_seconds", [None, RUN_ALONE_S / 10], ids=["queued", "alone"])
def test_a_failed_run_answers_its_callers_internal(model, images, image_seconds):
    """ONNX Runtime refusing the run (here: an input name the graph lacks) fails the request
    with INTERNAL, on the queued path and the lone one alike; the batcher goes on."""
    pixels, _ = images
    broken = dataclasses.replace(model, input_name="not_an_input")
    if image_seconds is not None:
        broken = dataclasses.replace(broken, image_seconds=image_seconds)

    async def scenario(batcher):
        return await asyncio.gather(
            *(batcher.classify(pixels[i : i + 1], None) for i in range(3)),
            return_exceptions=True,
        )

    results, _ = run_batcher(broken, scenario, delay_s=0)
    for result in results:
        assert isinstance(result, ServingError) and result.code == grpc.StatusCode.INTERNAL
        assert result.message.startswith("inference failed: ")
