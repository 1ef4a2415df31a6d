"""`--workers N`: several server processes on one port behave as one server (issue 16).

Real processes on 127.0.0.1: requests over many connections spread over the workers, the
metrics and the stop counts add up, health says SERVING only while every worker serves, a
worker that dies is restarted, and start-up failures are one line.
"""

import json
import os
import signal
import socket
import urllib.request

import grpc

from common.cpu import cgroup_cpu_limit, cpuinfo_field, usable_cores
from serving.client import OWN_CONNECTION, DigitClient, classify_request
from serving.config import ServerConfig
from serving.healthcheck import SERVICE_NAME, health_status
from serving.workers import auto_workers, worker_config
from tests.serving_support import ServerProcess, digit_pixels, free_port
from tests.test_serving_process import assert_one_line_error, metric_value, run
from tests.test_serving_reload import wait_until

CONNECTIONS = 16  # all on one worker of two: a chance of 2 in 2**16


def status_now(target: str) -> str:
    """Health over a new connection, so that it may land on any worker."""
    with grpc.insecure_channel(target, options=[OWN_CONNECTION]) as channel:
        try:
            return health_status(channel, SERVICE_NAME, timeout=2)
        except grpc.RpcError as error:
            return error.code().name


def test_each_worker_gets_its_share_of_the_cores_and_limits():
    config = ServerConfig(
        max_inflight_requests=256, max_inflight_bytes=64 << 20, max_message_bytes=48 << 20
    )
    share = worker_config(config, 3, port=1234, http_port=0)
    assert (share.port, share.http_port, share.metrics_port, share.workers) == (1234, 0, 0, 1)
    assert share.max_inflight_requests == 86  # 3 x 86 >= 256: the server's limit, rounded up
    assert share.max_inflight_bytes == 48 << 20  # never below one largest message
    assert share.queue_capacity == 342
    assert share.intra_op_threads >= 1
    assert auto_workers(ServerConfig(provider="cpu")) == usable_cores()  # one per core on CPU


def test_workers_share_the_port_and_add_up_as_one_server(serving_repository):
    metrics_port, http_port = free_port(), free_port()
    args = ("--model-repository", str(serving_repository), "--models", "scratch_cnn",
            "--workers", "2", "--port", "0", "--metrics-port", str(metrics_port),
            "--http-port", str(http_port), "--poll-seconds", "0")  # fmt: skip
    with ServerProcess(*args) as server:
        started = server.started
        assert started["workers"] == 2 and len(set(started["pids"])) == 2
        assert started["port"] > 0 and started["http_port"] == http_port
        assert started["models"] == ["scratch_cnn"] and started["process_name"] == "supervisor"
        request = classify_request("scratch_cnn", [digit_pixels(3)])
        for _ in range(CONNECTIONS):
            with DigitClient(server.target, own_connection=True) as client:
                for _ in range(2):
                    assert len(client.stub.Classify(request, timeout=20).predictions) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready") as reply:
            assert reply.status == 200
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        ok = metric_value(text, 'digits_requests_total{model="scratch_cnn",status="OK"}')
        assert ok == 2 * CONNECTIONS  # both workers' counts, added up
        for worker in ("0", "1"):
            assert f'digits_worker_cpu_seconds_total{{worker="{worker}"}}' in text
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    stopped = [r for r in records if r["message"] == "worker stopped"]
    assert sorted(r["process_name"] for r in stopped) == ["worker-0", "worker-1"]
    assert all(r["requests_answered_ok"] > 0 for r in stopped), "a worker got no connection"
    total = records[-1]
    assert total["message"] == "server stopped" and total["worker_exit_codes"] == [0, 0]
    assert total["requests_answered_ok"] == 2 * CONNECTIONS
    assert {r.get("process_name") for r in records} == {"supervisor", "worker-0", "worker-1"}


def test_health_follows_every_worker_and_a_dead_worker_is_restarted(serving_repository):
    args = ("--model-repository", str(serving_repository), "--models", "scratch_cnn",
            "--workers", "2", "--port", "0", "--metrics-port", "0",
            "--poll-seconds", "0")  # fmt: skip
    with ServerProcess(*args) as server:
        target = server.target
        assert status_now(target) == "SERVING"
        server_pid, killed = server.pid, server.started["pids"][0]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: status_now(target) == "NOT_SERVING", 10)  # the other worker says so
        wait_until(lambda: status_now(target) == "SERVING", 60)  # the replacement serves
        assert "worker died; restarting it" in server.messages()
        with DigitClient(target, own_connection=True) as client:
            assert len(client.classify("scratch_cnn", [digit_pixels(1)]).predictions) == 1
        assert server.process.poll() is None and server.pid == server_pid
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0


def test_a_worker_that_cannot_start_stops_the_server_with_one_line(serving_repository, tmp_path):
    broken = tmp_path / "repository" / "scratch_cnn" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not a model")
    (broken / "metadata.json").write_text("{}")
    result = run("-m", "serving", "--model-repository", str(tmp_path / "repository"),
                 "--workers", "2", "--port", "0", "--metrics-port", "0")  # fmt: skip
    assert_one_line_error(result, "worker", "no loadable version of scratch_cnn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("-m", "serving", "--model-repository", str(serving_repository),
                     "--workers", "2", "--port", str(port), "--metrics-port", "0")  # fmt: skip
    assert_one_line_error(result, str(port), "in use")


def test_cpu_limits_of_a_container_narrow_the_usable_cores(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # limits.cpu: 1500m
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 4.0
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def test_cpuinfo_fields_are_read_by_name(tmp_path):
    """/proc/cpuinfo pads names with tabs; the first processor's line answers."""
    cpuinfo = tmp_path / "cpuinfo"
    assert cpuinfo_field("flags", cpuinfo) is None  # no such file
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512_bf16 sse\n\n"
        "processor\t: 1\nmodel name\t: other\n"
    )
    assert cpuinfo_field("model name", cpuinfo) == "AMD EPYC"
    assert cpuinfo_field("flags", cpuinfo).split() == ["fpu", "avx512_bf16", "sse"]
    assert cpuinfo_field("bugs", cpuinfo) is None
