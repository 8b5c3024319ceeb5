"""What every servicer shares: decoding, metrics, token auth and INVALID_ARGUMENT helpers.

A servicer of any model family plugs into `serving/server.py` and gets,
without code of its own: requests decoded after the token check (bad bytes
and over-long strings answered INVALID_ARGUMENT), Prometheus figures per
method (latency histogram, requests by status code), token authentication,
and (with `serving.holder.ModelHolder`) a checked model swapped in when the
registry has a new version.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Histogram

from streamrec.settings import Settings

log = logging.getLogger(__name__)

LATENCY = Histogram(
    "streamrec_grpc_latency_seconds",
    "Server-side latency of gRPC calls",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
)
REQUESTS = Counter("streamrec_grpc_requests_total", "gRPC calls by status code", ["method", "code"])
ERRORS = Counter("streamrec_grpc_errors_total", "gRPC calls not answered OK", ["method", "code"])
INVALID = Counter("streamrec_grpc_invalid_total", "INVALID_ARGUMENT answers by method", ["method"])
BATCH_SIZE = Histogram(
    "streamrec_serving_batch_size",
    "Requests per micro-batch",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

AUTH_HEADER = "authorization"
BEARER = "bearer "


def _method_name(full_method: str) -> str:
    return full_method.rsplit("/", 1)[-1] if full_method else "unknown"


def _wrap_unary(handler: grpc.RpcMethodHandler, wrap) -> grpc.RpcMethodHandler:
    """The same handler with its unary-unary behaviour wrapped (others are left as they are).

    The wrapped behaviour gets the raw request bytes (`wrap(behaviour, decode)` decodes
    them): gRPC itself then never decodes, so a call refused by the token check is refused
    before its bytes are read, and undecodable bytes are answered by our code.
    """
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary, handler.request_deserializer),
        request_deserializer=None,
        response_serializer=handler.response_serializer,
    )


_STRING_FIELDS: dict[str, tuple[str, ...]] = {}


def decode_request(raw: bytes, decode, max_string: int):
    """The request message of `raw`, or InvalidRequest naming what is wrong with it:
    bytes that are no such message (truncated, invalid UTF-8) or a string field longer
    than `max_string` characters."""
    if decode is None:
        return raw
    try:
        request = decode(raw)
    except DecodeError as error:
        raise InvalidRequest(f"the request could not be decoded: {error}") from None
    descriptor = request.DESCRIPTOR
    names = _STRING_FIELDS.get(descriptor.full_name)
    if names is None:
        names = tuple(f.name for f in descriptor.fields if f.type == f.TYPE_STRING)
        _STRING_FIELDS[descriptor.full_name] = names
    for name in names:
        value = getattr(request, name)
        values = [value] if isinstance(value, str) else value
        for text in values:
            if len(text) > max_string:
                raise InvalidRequest(
                    f"{name} is {len(text)} characters long; at most {max_string} are accepted"
                )
    return request


INTERNAL_MESSAGE = "internal error; the server log has the details"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Decoding, and latency and request/error counters per method, labelled by status code.

    Every call is counted, undecodable ones too (INVALID_ARGUMENT, one debug line). An
    exception no servicer turned into a status is logged here and answered INTERNAL with
    a generic message: its text (a ClickHouse error, a path) never reaches a client.
    """

    def __init__(self, max_string: int):
        self.max_string = max_string

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = _method_name(handler_call_details.method)
        max_string = self.max_string

        def wrap(behaviour, decode):
            async def timed(raw, context):
                started = time.perf_counter()
                code = grpc.StatusCode.OK
                try:
                    try:
                        request = decode_request(raw, decode, max_string)
                    except InvalidRequest as problem:
                        INVALID.labels(method).inc()
                        log.debug("%s: %s", method, problem)
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
                    reply = await behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return reply
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as error:
                    code = context.code()
                    if isinstance(error, grpc.aio.AbortError) or code not in (
                        None,
                        grpc.StatusCode.OK,
                    ):
                        raise
                    code = grpc.StatusCode.INTERNAL
                    log.exception("%s failed", method)
                    await context.abort(code, INTERNAL_MESSAGE)
                finally:
                    if not isinstance(code, grpc.StatusCode):
                        code = grpc.StatusCode.UNKNOWN
                    LATENCY.labels(method).observe(time.perf_counter() - started)
                    REQUESTS.labels(method, code.name).inc()
                    if code != grpc.StatusCode.OK:
                        ERRORS.labels(method, code.name).inc()

            return timed

        return _wrap_unary(handler, wrap)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries `authorization: Bearer <one of the tokens>`."""

    def __init__(self, tokens: Sequence[str], open_services: Sequence[str] = ()):
        self._tokens = [token.encode() for token in tokens if token]
        self._open = tuple(f"/{name}/" for name in open_services)

    def _allowed(self, metadata) -> bool:
        for key, value in metadata or ():
            if key.lower() != AUTH_HEADER:
                continue
            text = value.decode() if isinstance(value, bytes) else value
            if not text.lower().startswith(BEARER):
                return False
            given = text[len(BEARER) :].strip().encode()
            # Compare with every token in constant time, so timing says nothing about them.
            return any([hmac.compare_digest(given, token) for token in self._tokens])
        return False

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(self._open) or self._allowed(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        return _refusal(await continuation(handler_call_details))


def _refusal(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape that answers UNAUTHENTICATED."""
    message = "a valid token is required: send metadata 'authorization: Bearer <token>'"
    if handler is None:
        return None

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    options = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **options)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **options)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **options)
    return grpc.stream_stream_rpc_method_handler(streaming, **options)


def interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """Auth first: a refused call does not reach the metrics of a method it may not call,
    and its bytes are never decoded."""
    chosen: list[grpc.aio.ServerInterceptor] = []
    if settings.serving.auth_tokens:
        chosen.append(
            TokenAuthInterceptor(settings.serving.auth_tokens, settings.serving.auth_open_services)
        )
    chosen.append(MetricsInterceptor(settings.serving.max_string_length))
    return chosen


# --- bad requests ------------------------------------------------------------


class InvalidRequest(ValueError):
    """A request the servicer refuses; the message says what was wrong."""


async def answer(method: str, work, request, context: grpc.aio.ServicerContext):
    """`await work(request, context)`, with an `InvalidRequest` answered INVALID_ARGUMENT
    (counted per method) and a passed deadline DEADLINE_EXCEEDED."""
    try:
        return await work(request, context)
    except InvalidRequest as problem:
        INVALID.labels(method).inc()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
    except DeadlinePassed:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed")


def check_k(k: int, limit: int) -> None:
    if not 1 <= k <= limit:
        raise InvalidRequest(f"k must be between 1 and {limit}, got {k}")


def check_list_size(name: str, values: Sequence, limit: int) -> None:
    if len(values) > limit:
        raise InvalidRequest(f"{name} has {len(values)} entries; at most {limit} are accepted")


def check_known(name: str, ids: Sequence[int], catalog, version: str) -> None:
    """Refuse ids the served version's `catalog` lacks: it could not read or return them."""
    unknown = [i for i in ids if i not in catalog]
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:5])
        raise InvalidRequest(
            f"{len(unknown)} {name} are not in the catalog of model "
            f"{version}: {shown}{' ...' if len(unknown) > 5 else ''}"
        )


def check_user_or_history(user_id: int, history: Sequence[int]) -> None:
    if user_id < 0:
        raise InvalidRequest(f"user_id must not be negative, got {user_id}")
    if user_id == 0 and not history:
        raise InvalidRequest("give a user_id (> 0) or a non-empty history")


def check_deadline(context: grpc.aio.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlinePassed()


class DeadlinePassed(Exception):
    """The caller's deadline passed before the answer was ready."""
