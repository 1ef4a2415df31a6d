"""`python -m benchmarks.grpc_floor --processes N`: the least a digits.v1 server can do in
grpc.aio, so that benchmarks.throughput can show what a request costs gRPC itself.

Every Classify is answered with a ready-made reply of one uniform prediction per image (the
no-op model's answer, not computed): no decoding, no model, no batching, no metrics, no
logs. N processes (each its own uvloop event loop, like the server's workers) listen on one
port with SO_REUSEPORT. Its request rate with the benchmark's client is the ceiling of any
Python gRPC server on the machine; the no-op model's rate is read against it.
"""

import json
import multiprocessing
import queue
import signal
from dataclasses import dataclass

import grpc
import uvloop

from common.cli import UserError, positive_int, run_cli
from common.contract import CLASS_LABELS
from common.settings import parse_settings, setting
from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from serving.workers import reserve_port

START_TIMEOUT_S = 60


@dataclass(frozen=True)
class FloorCommand:
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(0, "port (0: any free one)", parse=int)
    processes: int = setting(1, "server processes sharing the port", parse=positive_int)


class ReadyMadeAnswers(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(self):
        self.replies: dict[int, digits_pb2.ClassifyResponse] = {}  # by number of images

    async def Classify(self, request, context):
        count = len(request.images)
        if (reply := self.replies.get(count)) is None:
            reply = self.replies[count] = uniform_reply(count)
        return reply


def uniform_reply(count: int) -> digits_pb2.ClassifyResponse:
    share = 1 / len(CLASS_LABELS)
    prediction = digits_pb2.Prediction(
        class_index=0, label=CLASS_LABELS[0], probability=share,
        probabilities=[share] * len(CLASS_LABELS),
    )  # fmt: skip
    return digits_pb2.ClassifyResponse(predictions=[prediction] * count)


async def serve(host: str, port: int, ready) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    digits_pb2_grpc.add_DigitClassifierServicer_to_server(ReadyMadeAnswers(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    ready.put(True)
    await server.wait_for_termination()


def run_process(host: str, port: int, ready) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(serve(host, port, ready))


def main(argv: list[str] | None = None) -> int:
    command = parse_settings(
        FloorCommand(), "python -m benchmarks.grpc_floor", __doc__.splitlines()[0], argv
    )
    holder = reserve_port(command.host, command.port)
    port = holder.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    processes = [
        spawn.Process(target=run_process, args=(command.host, port, ready), daemon=True)
        for _ in range(command.processes)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        message = f"the floor server's processes did not start in {START_TIMEOUT_S} s"
        raise UserError(message) from None
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the spawns: not inherited
    # the start line benchmarks.server.ServerProcess waits for
    print(json.dumps({"message": "server started", "port": port}), flush=True)
    signal.sigwait(stop_signals)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
    holder.close()
    return 0


if __name__ == "__main__":
    run_cli(main)
