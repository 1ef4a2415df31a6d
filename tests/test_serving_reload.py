"""Hot reload: versions published while requests are in flight; none of them fails."""

import shutil
import threading
import time

import grpc
import numpy as np
import pytest

from common.repository import ONNX_FILE
from serving.client import DigitClient, classify_request
from tests.serving_support import (
    ServerThread,
    add_version,
    digit_pixels,
    direct_probabilities,
    encode,
    server_config,
)


class Traffic:
    """Rounds of 8 concurrent default-version calls until stopped; keeps every outcome."""

    def __init__(self, client: DigitClient):
        self.client = client
        self.replies = []
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.request = classify_request("scratch_cnn", [encode(digit_pixels(9))])

    def _run(self) -> None:
        limit = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < limit:
            futures = [self.client.stub.Classify.future(self.request, timeout=20) for _ in range(8)]
            for future in futures:
                try:
                    self.replies.append(future.result())
                except grpc.RpcError as error:
                    self.failures.append(error)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def wait_until(condition, seconds: float = 15) -> None:
    limit = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < limit, "condition never met"
        time.sleep(0.05)


@pytest.fixture
def repository(serving_repository, tmp_path):
    return shutil.copytree(serving_repository, tmp_path / "model_repository")


@pytest.mark.parametrize("keep", [1, 2])
def test_new_versions_load_under_traffic_and_old_ones_drain(repository, keep):
    """Batches wait 100 ms, so a retired version almost always still has calls queued."""
    config = server_config(repository, poll_seconds=0.2, batch_delay_us=100_000, keep_versions=keep)
    with ServerThread(config) as server, DigitClient(server.target) as client:
        with Traffic(client) as traffic:
            wait_until(lambda: len(traffic.replies) >= 16)
            assert add_version(repository, "scratch_cnn") == 2
            wait_until(lambda: client.get_model_metadata("scratch_cnn").version == 2)
            wait_until(lambda: traffic.replies[-1].version == 2)
            assert add_version(repository, "scratch_cnn") == 3
            kept = [2, 3][-keep:]
            wait_until(lambda: list(client.get_model_metadata("scratch_cnn").versions) == kept)
            wait_until(lambda: traffic.replies[-1].version == 3)

        assert traffic.failures == []
        assert {reply.version for reply in traffic.replies} == {1, 2, 3}
        expected = direct_probabilities(repository, "scratch_cnn", digit_pixels(9))
        for reply in traffic.replies:
            np.testing.assert_allclose(reply.predictions[0].probabilities, expected[0], atol=1e-5)

        retired = 3 - keep
        with pytest.raises(grpc.RpcError) as failure:
            client.classify("scratch_cnn", [digit_pixels(0)], version=retired)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.classify("scratch_cnn", [digit_pixels(0)], version=kept[0]).version == kept[0]
        versions = {m.name: m.version for m in client.list_models()}
        assert versions == {"scratch_cnn": 3, "second_cnn": 1}


def test_a_broken_new_version_is_skipped_and_the_old_one_keeps_serving(repository):
    config = server_config(repository, poll_seconds=0.2)
    with ServerThread(config) as server, DigitClient(server.target) as client:
        broken = repository / "scratch_cnn" / ".tmp-broken"
        broken.mkdir()
        (broken / ONNX_FILE).write_bytes(b"not an onnx graph")
        broken.rename(repository / "scratch_cnn" / "2")
        server.call(server.server.registry.refresh())  # what the next poll does
        reply = client.classify("scratch_cnn", [digit_pixels(0)])
        assert reply.version == 1
        assert list(client.get_model_metadata("scratch_cnn").versions) == [1]
