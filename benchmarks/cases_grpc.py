"""gRPC interceptors: the per-call cost of our interceptor code itself, in process.

No network: the client interceptor is called with a stub continuation returning a completed
call, the server interceptor's wrapped handler with a stub ``ServicerContext``. The baseline
subtracted from each case is the same call through a pass-through (no-op) interceptor, so the
overhead is what our interceptor adds over the cheapest possible one. (End-to-end calls/s over
loopback: ``python -m benchmarks.bench_grpc``.)
"""

from __future__ import annotations

from ._harness import Case

_CLIENT = """
import grpc
import resilience as rs
from interceptors.grpc import ResilienceClientInterceptor, grpc_retry

class _Call:
    def result(self, timeout=None):
        return b"ok"

_CALL = _Call()

def cont(details, request):
    return _CALL

class _Details:
    method = "/bench.Svc/Echo"
    timeout = TIMEOUT
    metadata = None
    credentials = None
    wait_for_ready = None
    compression = None

details = _Details()

class _Noop(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(client_call_details, request)

noop = _Noop().intercept_unary_unary
ours = ResilienceClientInterceptor(pipeline=PIPELINE).intercept_unary_unary
"""

_ACLIENT = """
import grpc
from grpc import aio
import resilience as rs
from interceptors.grpc import AsyncResilienceClientInterceptor, grpc_retry

class _Call:
    def __await__(self):
        return b"ok"
        yield

_CALL = _Call()

async def cont(details, request):
    return _CALL

details = aio.ClientCallDetails(b"/bench.Svc/Echo", TIMEOUT, None, None, None)

class _Noop(aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(client_call_details, request)

noop = _Noop().intercept_unary_unary
ours = AsyncResilienceClientInterceptor(pipeline=PIPELINE).intercept_unary_unary
"""

_SERVER = """
import grpc
import resilience as rs
from interceptors.grpc import ResilienceServerInterceptor

def echo(request, context):
    return request

handler = grpc.unary_unary_rpc_method_handler(echo)

class _HCD:
    method = "/bench.Svc/Echo"
    invocation_metadata = ()

class _Ctx:
    def time_remaining(self):
        return None
    def invocation_metadata(self):
        return METADATA
    def peer(self):
        return "ipv4:127.0.0.1:50000"
    def peer_identities(self):
        return None
    def abort(self, code, details=""):
        raise RuntimeError(details)
    def set_trailing_metadata(self, md):
        pass

ctx = _Ctx()
raw = handler.unary_unary  # a no-op server interceptor returns the handler as it is
ours = ResilienceServerInterceptor(KWARGS).intercept_service(lambda d: handler, _HCD()).unary_unary
ours(b"x", ctx)
"""

_ASERVER = """
import asyncio
import grpc
import resilience as rs
from interceptors.grpc import AsyncResilienceServerInterceptor

async def echo(request, context):
    return request

handler = grpc.unary_unary_rpc_method_handler(echo)

class _HCD:
    method = "/bench.Svc/Echo"
    invocation_metadata = ()

class _Ctx:
    def time_remaining(self):
        return None
    def invocation_metadata(self):
        return METADATA
    def peer(self):
        return "ipv4:127.0.0.1:50000"
    def peer_identities(self):
        return None
    async def abort(self, code, details="", trailing_metadata=()):
        raise RuntimeError(details)
    def set_trailing_metadata(self, md):
        pass

ctx = _Ctx()
raw = handler.unary_unary

async def _wrap():
    async def cont(d):
        return handler
    interceptor = AsyncResilienceServerInterceptor(KWARGS)
    return (await interceptor.intercept_service(cont, _HCD())).unary_unary

ours = asyncio.run(_wrap())
asyncio.run(ours(b"x", ctx))
"""

_RETRY = "rs.Pipeline(rs.Timeout(5.0), grpc_retry(attempts=3))"
_BREAKER = "rs.CircuitBreaker('b', failure_ratio=0.5)"


def _client(is_async: bool) -> list[Case]:
    group = f"grpc/client/{'async' if is_async else 'sync'}"
    src = _ACLIENT if is_async else _CLIENT
    stmt = "await ours(cont, details, b'x')" if is_async else "ours(cont, details, b'x')"
    base = "await noop(cont, details, b'x')" if is_async else "noop(cont, details, b'x')"
    configs = [
        ("resilience", _RETRY, "None", "Timeout(5) + grpc_retry(attempts=3)"),
        ("resilience, timeout=5", _RETRY, "5.0", "same, caller passes timeout=5"),
        ("resilience, breaker", _BREAKER, "None", "CircuitBreaker(failure_ratio=0.5)"),
        ("resilience, pipeline=None", "None", "None", "deadline handling only"),
    ]
    return [
        Case(
            group,
            name,
            src.replace("PIPELINE", pipeline).replace("TIMEOUT", timeout),
            stmt,
            is_async,
            baseline=base,
            note=note + "; minus a no-op interceptor",
        )
        for name, pipeline, timeout, note in configs
    ]


def _server(is_async: bool) -> list[Case]:
    group = f"grpc/server/{'async' if is_async else 'sync'}"
    src = _ASERVER if is_async else _SERVER
    stmt = "await ours(b'x', ctx)" if is_async else "ours(b'x', ctx)"
    base = "await raw(b'x', ctx)" if is_async else "raw(b'x', ctx)"
    replay = "pipeline=None, idempotency=rs.IdempotencyRecords()"
    configs = [
        ("resilience", "pipeline=rs.Timeout(5.0)", "()", "Timeout(5)"),
        ("resilience, breaker", f"pipeline={_BREAKER}", "()", "CircuitBreaker"),
        ("resilience, pipeline=None", "pipeline=None", "()", "deadline propagation only"),
        (
            "resilience, idempotent replay",
            replay,
            "(('idempotency-key', 'k-1'),)",
            "IdempotencyRecords (memory store): every call replays the stored response",
        ),
    ]
    return [
        Case(
            group,
            name,
            src.replace("KWARGS", kwargs).replace("METADATA", md),
            stmt,
            is_async,
            baseline=base,
            note=note + "; minus the bare handler",
        )
        for name, kwargs, md, note in configs
    ]


CASES: list[Case] = _client(False) + _client(True) + _server(False) + _server(True)
