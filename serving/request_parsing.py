"""Requests are parsed by the server's wrapper of each method: refused early when the server
is full, and a request that is not valid protobuf answers INVALID_ARGUMENT, for every service.

gRPC would answer bad bytes with UNKNOWN and a Python exception name. The wrapper parses
each request itself and hands the method either the message or a RefusedRequest, which the
wrapped method answers with its status before the servicer sees it. A request larger than
what the byte admission has room for is refused before it is parsed, so a flood of large
requests never holds a parsed copy of each (the servicer still admits what it works on).
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from serving.admission import Admission


@dataclass(frozen=True)
class RefusedRequest:
    code: grpc.StatusCode
    reason: str


def tolerant(parse: Callable[[bytes], object], admission: Admission) -> Callable:
    def parse_or_refuse(raw: bytes) -> object:
        admission.received_bytes += len(raw)
        if (busy := admission.refusal(len(raw))) is not None:
            return RefusedRequest(grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
        try:
            return parse(raw)
        except Exception as error:  # protobuf's DecodeError, or anything a bad payload raises
            return RefusedRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid protobuf message ({error})",
            )

    return parse_or_refuse


async def refuse(request: RefusedRequest, context: grpc.aio.ServicerContext) -> None:
    await context.abort(request.code, request.reason)


class RefusedInStream(Exception):
    """A streamed request was refused: raised out of the request iterator, so the method ends
    and its wrapper answers the status. Aborting from the iterator itself could race a reply
    being sent (a method may read its requests in a task of its own): gRPC then refuses the
    abort (TOO_MANY_OPERATIONS) and the caller waits out its deadline."""

    def __init__(self, request: RefusedRequest):
        super().__init__(request.reason)
        self.request = request


async def checked_stream(requests: AsyncIterator) -> AsyncIterator:
    async for request in requests:
        if isinstance(request, RefusedRequest):
            raise RefusedInStream(request)
        yield request


def unary_request(behaviour: Callable) -> Callable:
    async def checked(request, context):
        if isinstance(request, RefusedRequest):
            await refuse(request, context)
        return await behaviour(request, context)

    return checked


def unary_request_streamed_reply(behaviour: Callable) -> Callable:
    async def checked(request, context):
        if isinstance(request, RefusedRequest):
            await refuse(request, context)
        async for reply in behaviour(request, context):
            yield reply

    return checked


def streamed_request(behaviour: Callable) -> Callable:
    async def checked(requests, context):
        try:
            return await behaviour(checked_stream(requests), context)
        except RefusedInStream as refused:
            await refuse(refused.request, context)

    return checked


def streamed_request_streamed_reply(behaviour: Callable) -> Callable:
    async def checked(requests, context):
        try:
            async for reply in behaviour(checked_stream(requests), context):
                yield reply
        except RefusedInStream as refused:
            await refuse(refused.request, context)

    return checked


# gRPC tells streamed replies by the method being an async generator function: so is each
# wrapper of a method that streams its replies.
WRAPPERS = {
    "unary_unary": unary_request,
    "unary_stream": unary_request_streamed_reply,
    "stream_unary": streamed_request,
    "stream_stream": streamed_request_streamed_reply,
}


class RequestParsingServer:
    """Stands in for the grpc.aio.Server in the generated add_*Servicer_to_server functions
    and wraps each method handler once, when it is registered. (A grpc.aio interceptor did
    the same on every call: an extra coroutine and a handler copy per request.)

    The generated functions register every service twice, as a generic handler and as
    registered methods (gRPC's faster lookup); both are built here from the wrapped handlers.
    """

    def __init__(self, server: grpc.aio.Server, admission: Admission):
        self.server = server
        self.admission = admission

    def add_generic_rpc_handlers(self, handlers) -> None:
        """Ignored: the same handlers come again, by name, to add_registered_method_handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        wrapped = {method: self.wrap(handler) for method, handler in handlers.items()}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self.server.add_registered_method_handlers(service, wrapped)

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kind, behaviour = next((k, getattr(handler, k)) for k in WRAPPERS if getattr(handler, k))
        return handler._replace(
            request_deserializer=tolerant(handler.request_deserializer, self.admission),
            **{kind: WRAPPERS[kind](behaviour)},
        )
