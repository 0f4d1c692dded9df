"""A client interceptor's policy refusals reach grpc callers as grpc.RpcError (real servers)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    ResilienceClientInterceptor,
    ResilienceRpcError,
)
from resilience.testing import FakeClock

from ...grpc_fixtures import SS, SU, US, UU, Script, start_aio_server, start_sync_server

SHAPES = {"unary_unary": UU, "unary_stream": US, "stream_unary": SU, "stream_stream": SS}


def _open_breaker(clock: FakeClock) -> tuple[rs.Policy, type[rs.RejectedError], str | None]:
    breaker = rs.CircuitBreaker("billing", failure_count=1, open_for=30, clock=clock)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    return breaker, rs.CircuitOpenError, "30000"


def _rate_limited(clock: FakeClock) -> tuple[rs.Policy, type[rs.RejectedError], str | None]:
    limiter = rs.RateLimiter("quota", rate=1, per=60, burst=1, clock=clock)
    assert limiter.try_acquire().allowed
    return limiter, rs.RateLimitedError, "60000"


def _forced_open(clock: FakeClock) -> tuple[rs.Policy, type[rs.RejectedError], str | None]:
    breaker = rs.CircuitBreaker("billing", failure_count=1, clock=clock)
    breaker.open()  # no timer: no retry delay, no pushback
    return breaker, rs.CircuitOpenError, None


REFUSALS: dict[str, Callable[[FakeClock], tuple[rs.Policy, type[rs.RejectedError], str | None]]]
REFUSALS = {"breaker": _open_breaker, "limiter": _rate_limited, "forced": _forced_open}


def _check(exc: BaseException, kind: type[rs.RejectedError], pushback: str | None) -> None:
    assert isinstance(exc, grpc.RpcError)
    assert isinstance(exc, ResilienceRpcError)
    assert isinstance(exc, kind)  # except rs.CircuitOpenError keeps working
    assert isinstance(exc.resilience_error, kind)
    assert exc.code() is grpc.StatusCode.UNAVAILABLE
    assert exc.details()
    trailing = dict(exc.trailing_metadata())
    assert trailing.get("grpc-retry-pushback-ms") == pushback


def _sync_call(channel: Any, shape: str) -> Any:
    method = getattr(channel, shape)(SHAPES[shape])
    if shape == "unary_unary":
        return method(b"a", timeout=5)
    if shape == "unary_stream":
        return list(method(b"a", timeout=5))
    if shape == "stream_unary":
        return method(iter([b"a", b"b"]), timeout=5)
    return list(method(iter([b"a", b"b"]), timeout=5))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_sync_refusals_are_rpc_errors(shape: str, refusal: str) -> None:
    policy, kind, pushback = REFUSALS[refusal](FakeClock())
    script = Script()
    server, port = start_sync_server(script)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            channel: Any = grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=policy))
            with pytest.raises(grpc.RpcError) as info:
                _sync_call(channel, shape)
            _check(info.value, kind, pushback)
            if shape == "unary_unary":  # the future and with_call forms too
                unary: Any = channel.unary_unary(UU)
                future = unary.future(b"a", timeout=5)
                _check(future.exception(), kind, pushback)
                assert future.code() is grpc.StatusCode.UNAVAILABLE
                with pytest.raises(grpc.RpcError) as again:
                    unary.with_call(b"a", timeout=5)
                _check(again.value, kind, pushback)
            if shape == "unary_stream":  # the call's own status, before iterating
                stream: Any = channel.unary_stream(US)(b"a", timeout=5)
                assert stream.code() is grpc.StatusCode.UNAVAILABLE
                assert dict(stream.trailing_metadata()).get("grpc-retry-pushback-ms") == pushback
    finally:
        server.stop(None)
    assert script.calls == 0  # refused before anything was sent


async def _aio_call(channel: Any, shape: str) -> Any:
    method = channel.__getattribute__(shape)(SHAPES[shape])
    if shape == "unary_unary":
        return await method(b"a", timeout=5)
    if shape == "unary_stream":
        return [m async for m in method(b"a", timeout=5)]

    async def reqs() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    if shape == "stream_unary":
        return await method(reqs(), timeout=5)
    return [m async for m in method(reqs(), timeout=5)]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_aio_refusals_are_rpc_errors(shape: str, refusal: str) -> None:
    policy, kind, pushback = REFUSALS[refusal](FakeClock())
    script = Script()

    async def main() -> None:
        server, port = await start_aio_server(script)
        interceptor = AsyncResilienceClientInterceptor(pipeline=policy)
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=interceptor.channel_interceptors()
            ) as aio_channel:
                channel: Any = aio_channel
                with pytest.raises(grpc.RpcError) as info:
                    await _aio_call(channel, shape)
                _check(info.value, kind, pushback)
                assert isinstance(info.value, grpc.aio.AioRpcError)
                if shape == "unary_unary":  # the call object reports the status
                    call: Any = channel.unary_unary(UU)(b"a", timeout=5)
                    assert await call.code() is grpc.StatusCode.UNAVAILABLE
                    trailing = dict(await call.trailing_metadata())
                    assert trailing.get("grpc-retry-pushback-ms") == pushback
        finally:
            await server.stop(None)

    asyncio.run(main())
    assert script.calls == 0


def test_a_full_bulkhead_is_an_rpc_error() -> None:
    bulkhead = rs.Bulkhead("pool", max_concurrent=1)
    script = Script()
    server, port = start_sync_server(script)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            channel: Any = grpc.intercept_channel(
                raw, ResilienceClientInterceptor(pipeline=bulkhead)
            )

            def nested() -> BaseException:
                with pytest.raises(grpc.RpcError) as info:
                    channel.unary_unary(UU)(b"a", timeout=5)  # the slot is held: refused
                return info.value

            error = bulkhead.call(nested)
            assert channel.unary_unary(UU)(b"a", timeout=5) == b"re:a"
    finally:
        server.stop(None)
    assert isinstance(error, rs.BulkheadFullError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert script.calls == 1


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_native_errors_false_raises_the_refusal(mode: str) -> None:
    policy, kind, _ = _open_breaker(FakeClock())
    script = Script()
    if mode == "sync":
        server, port = start_sync_server(script)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
                interceptor = ResilienceClientInterceptor(pipeline=policy, native_errors=False)
                channel = grpc.intercept_channel(raw, interceptor)
                for shape in SHAPES:
                    with pytest.raises(kind) as info:
                        _sync_call(channel, shape)
                    assert not isinstance(info.value, grpc.RpcError)
        finally:
            server.stop(None)
        return

    async def main() -> None:
        aserver, aport = await start_aio_server(script)
        interceptor = AsyncResilienceClientInterceptor(pipeline=policy, native_errors=False)
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{aport}", interceptors=interceptor.channel_interceptors()
            ) as channel:
                for shape in SHAPES:
                    with pytest.raises(kind) as info:
                        await _aio_call(channel, shape)
                    assert not isinstance(info.value, grpc.RpcError)
        finally:
            await aserver.stop(None)

    asyncio.run(main())


def test_the_error_pickles_and_validates() -> None:
    from interceptors.grpc import native_refusal

    err = native_refusal(rs.RateLimitedError("slow down", policy="quota", retry_after=1.5))
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ResilienceRpcError)
    assert isinstance(back, rs.RateLimitedError)
    assert (back.policy, back.retry_after, back.details()) == ("quota", 1.5, "slow down")
    with pytest.raises(rs.ConfigurationError):
        ResilienceClientInterceptor(pipeline=None, native_errors="yes")  # type: ignore[arg-type]
