"""Faults under load, in one bounded run of a real server process (issue 11), with one
worker and with two (issue 16).

Eight clients (each on its own connection) call Classify in a loop while the repository
changes under the server: a new version, a corrupt one, stray folders and files, another
good one; then SIGTERM with calls in flight. Every call the server admitted must be answered
OK, and the client must have received each of those answers (the server's own count equals
the client's); calls the server refuses once told to stop end UNAVAILABLE (or, in the
instant gRPC itself stops, CANCELLED before reaching the service); the corrupt version never
answers; the server exits 0."""

import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass

import grpc
import pytest

from serving.client import DigitClient, classify_request
from tests.serving_support import ServerProcess, add_version, digit_pixels, encode, free_port
from tests.test_serving_reload import wait_until
from tests.test_serving_repository_faults import fewer_classes, publish_broken

CLIENTS = 8
LIMIT_S = 60  # the load stops by itself after this, whatever happens


@dataclass(frozen=True)
class Outcome:
    sent: float
    code: grpc.StatusCode
    version: int


class Load:
    """CLIENTS threads calling Classify back to back until stopped (or LIMIT_S)."""

    def __init__(self, target: str):
        self.target = target
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]
        self.request = classify_request("scratch_cnn", [encode(digit_pixels(7))])

    def _run(self) -> None:
        limit = time.monotonic() + LIMIT_S
        with DigitClient(self.target, timeout=20, own_connection=True) as client:
            while not self._stop.is_set() and time.monotonic() < limit:
                sent = time.monotonic()
                try:
                    reply = client.stub.Classify(self.request, timeout=20)
                    self.outcomes.append(Outcome(sent, grpc.StatusCode.OK, reply.version))
                except grpc.RpcError as error:
                    self.outcomes.append(Outcome(sent, error.code(), 0))
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        time.sleep(0.05)

    def versions_since(self, count: int) -> set[int]:
        return {o.version for o in self.outcomes[count:] if o.code == grpc.StatusCode.OK}

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize("workers", [1, 2])
def test_reloads_bad_publishes_and_sigterm_under_load(serving_repository, tmp_path, workers):
    """With 2 workers, the clients' 8 connections spread over both; every count is the
    server's as a whole (the supervisor adds up its workers')."""
    repository = shutil.copytree(serving_repository, tmp_path / "model_repository")
    port = free_port()
    args = ("--model-repository", str(repository), "--port", str(port), "--metrics-port", "0",
            "--poll-seconds", "0.1", "--grace-seconds", "20",
            "--batch-delay-us", "20000", "--workers", str(workers))  # fmt: skip
    with ServerProcess(*args) as server, Load(f"127.0.0.1:{port}") as load:
        wait_until(lambda: len(load.outcomes) >= 50, 30)
        seen = len(load.outcomes)
        assert add_version(repository, "scratch_cnn") == 2
        wait_until(lambda: 2 in load.versions_since(seen), 30)
        publish_broken(repository, "scratch_cnn", fewer_classes)  # version 3: refused
        (repository / "scratch_cnn" / "²").mkdir()
        (repository / "stray-folder").mkdir()
        (repository / "second_cnn" / "notes.txt").write_text("not a version")
        assert add_version(repository, "scratch_cnn", source=1) == 4
        partial = repository / "scratch_cnn" / "5"  # a copy still under way: no metadata yet
        partial.mkdir()
        shutil.copy(repository / "scratch_cnn" / "1" / "model.onnx", partial)
        seen = len(load.outcomes)
        wait_until(lambda: 4 in load.versions_since(seen), 30)
        in_flight_at_stop = len(load.outcomes)
        stop_sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0

    outcomes = load.outcomes
    failures = [o for o in outcomes if o.code != grpc.StatusCode.OK]
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert all(o.code in refused for o in failures), (stop_sent, failures[:5])
    assert all(o.sent >= stop_sent - 0.5 for o in failures), "refused before the stop"
    stopped = json.loads(next(line for line in server.lines if "server stopped" in line))
    client_ok = len(outcomes) - len(failures)
    assert stopped["requests_unanswered"] == 0
    assert stopped["requests_admitted"] == stopped["requests_answered_ok"] == client_ok
    refused_codes = {o.code.name for o in failures}
    print(f"fault and load: {len(outcomes)} calls, {client_ok} answered OK (all admitted), "
          f"{len(failures)} refused at the stop {sorted(refused_codes)}, 0 lost")  # fmt: skip
    versions = {o.version for o in outcomes if o.code == grpc.StatusCode.OK}
    assert versions == {1, 2, 4}  # never the corrupt 3, never the partial 5
    drained = [o for o in outcomes[in_flight_at_stop:] if o.code == grpc.StatusCode.OK]
    assert len(outcomes) > 100 and drained, "calls in flight at SIGTERM were answered"
    messages = server.messages()
    assert "model version refused; tried again when its files change" in messages
    assert "shutting down" in messages and messages[-1] == "server stopped"
    assert not any("Traceback" in line for line in server.lines)


def test_memory_settles_after_floods_of_large_requests(serving_repository, tmp_path):
    """30 concurrent 12.6 MB requests, twice: refused beyond the byte bound at once, every call
    answered, and the server's resident size back near where it was (trimmed when idle)."""
    from benchmarks.flood import FloodConfig, flood_server
    from benchmarks.server import benchmark_server

    extra = ("--max-inflight-bytes", str(32 * 1024 * 1024))
    server = benchmark_server(serving_repository, True, tmp_path / "server.log", *extra)
    result = flood_server("this checkout", server, FloodConfig(requests=30, rounds=2))
    assert result["serving_after"]
    for round_ in result["rounds"]:
        assert set(round_["answers"]) == {"OK", "RESOURCE_EXHAUSTED"}, round_
        assert sum(round_["answers"].values()) == 30
        assert round_["rss_peak_mb"] - round_["rss_before_mb"] < 800
    first, second = result["rounds"]
    assert second["rss_after_mb"] - first["rss_before_mb"] < 150, result["rounds"]
