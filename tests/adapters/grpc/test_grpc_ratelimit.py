"""RateLimitServerInterceptor / AsyncRateLimitServerInterceptor on real servers: the caller's
principal reaches a tiered limiter, RESOURCE_EXHAUSTED with pushback and the IETF RateLimit
fields as trailing metadata, one item per window of the principal's tier."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncRateLimitServerInterceptor,
    AsyncResilienceServerInterceptor,
    RateLimitServerInterceptor,
    ResilienceServerInterceptor,
)

from ...grpc_fixtures import Fail, Script, start_aio_server, start_sync_server
from .grpc_support import SHAPES, call, trailer

FREE = rs.Limit(rate=1, per=60)
PRO = [rs.Limit(rate=3, per=60), rs.Limit(rate=100, per=3600)]


def _user(context: Any) -> str | None:
    return dict(context.invocation_metadata()).get("x-user")


def _served(
    kind: str,
    interceptors: Callable[[], tuple[Any, ...]],
    calls: Any,
    script: Script | None = None,
) -> Any:
    """Run ``calls(channel)`` (sync client) against a real server of ``kind``."""
    script = script or Script()
    if kind == "sync":
        server, port = start_sync_server(script, interceptors())
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                return calls(ch), script
        finally:
            server.stop(None)

    async def main() -> Any:
        server, port = await start_aio_server(script, interceptors())
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                return await asyncio.to_thread(calls, ch), script
        finally:
            await server.stop(None)

    return asyncio.run(main())


def _limiter() -> tuple[rs.RateLimiter, list[str]]:
    seen: list[str] = []

    def tier(key: str) -> rs.Limit | list[rs.Limit]:
        seen.append(key)
        return PRO if key.startswith("pro:") else FREE

    return rs.RateLimiter("plans", limits=tier, clock=rs.testing.FakeClock()), seen


def _interceptor(kind: str, limiter: Any, **kw: Any) -> Any:
    cls = RateLimitServerInterceptor if kind == "sync" else AsyncRateLimitServerInterceptor
    return cls(limiter=limiter, **kw)


def _outcome(ch: Any, user: str) -> tuple[str, dict[str, str]]:
    try:
        _, rpc = ch.unary_unary("/test.Svc/Unary").with_call(b"a", metadata=(("x-user", user),))
    except grpc.RpcError as exc:
        return exc.code().name, trailer(exc)
    return "OK", trailer(rpc)


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_two_principals_get_their_own_tiers_and_policy_trailers(kind: str) -> None:
    limiter, seen = _limiter()

    def calls(ch: Any) -> Any:
        free = [_outcome(ch, "free:alice") for _ in range(2)]
        pro = [_outcome(ch, "pro:bob") for _ in range(4)]
        return free, pro

    (free, pro), script = _served(kind, lambda: (_interceptor(kind, limiter, key=_user),), calls)
    assert [code for code, _ in free] == ["OK", "RESOURCE_EXHAUSTED"]
    assert [code for code, _ in pro] == ["OK", "OK", "OK", "RESOURCE_EXHAUSTED"]
    assert seen == ["free:alice", "pro:bob"]  # the principal reached the tier function
    assert script.calls == 4  # refused calls never reached the handler
    assert free[0][1]["ratelimit-policy"] == '"plans/60s";q=1;w=60'
    assert free[0][1]["ratelimit"] == '"plans/60s";r=0;t=60'
    assert pro[0][1]["ratelimit-policy"] == '"plans/60s";q=3;w=60, "plans/3600s";q=100;w=3600'
    assert pro[0][1]["ratelimit"] == '"plans/60s";r=2;t=20, "plans/3600s";r=99;t=36'
    refused = pro[3][1]
    assert refused["ratelimit-policy"] == pro[0][1]["ratelimit-policy"]
    assert refused["ratelimit"] == '"plans/60s";r=0;t=20, "plans/3600s";r=97;t=108'
    assert refused["grpc-retry-pushback-ms"] == "20000"
    assert free[1][1]["grpc-retry-pushback-ms"] == "60000"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_listeners_hear_each_refusal(kind: str) -> None:
    limiter, _ = _limiter()
    rec = rs.testing.RecordingListener()

    def calls(ch: Any) -> Any:
        return [_outcome(ch, "free:alice")[0] for _ in range(3)]

    codes, _ = _served(
        kind, lambda: (_interceptor(kind, limiter, key=_user, listeners=[rec]),), calls
    )
    assert codes == ["OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    refusals = rec.of(rs.events.CallRejected)
    assert [(e.policy, e.operation, e.reason) for e in refusals] == [
        ("plans", "/test.Svc/Unary", "rate_limited")
    ] * 2
    assert all(e.retry_after == 60 for e in refusals)


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_call_shape_is_limited(kind: str, shape: str) -> None:
    limiter = rs.RateLimiter("one", rate=1, per=60, clock=rs.testing.FakeClock())

    def calls(ch: Any) -> Any:
        first = call(ch, shape, metadata=(("x-user", "u"),))
        with pytest.raises(grpc.RpcError) as info:
            call(ch, shape, metadata=(("x-user", "u"),))
        other = call(ch, shape, metadata=(("x-user", "v"),))  # another principal
        return first, info.value, other

    (first, refused, other), _ = _served(
        kind, lambda: (_interceptor(kind, limiter, key=_user),), calls
    )
    assert first == other
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(refused.trailing_metadata())["ratelimit-policy"] == '"one";q=1;w=60'


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_handlers_own_trailers_are_kept_and_no_principal_is_not_limited(kind: str) -> None:
    limiter = rs.RateLimiter("one", rate=1, per=60, clock=rs.testing.FakeClock())

    def calls(ch: Any) -> Any:
        method = ch.unary_unary("/test.Svc/Unary")
        anonymous = [method(b"a") for _ in range(3)]  # no x-user: the key is None
        with pytest.raises(grpc.RpcError) as info:  # the script's own abort, with its trailer
            method(b"a", metadata=(("x-user", "u"),))
        return anonymous, info.value

    def interceptors() -> tuple[Any, ...]:
        return (_interceptor(kind, limiter, key=_user),)

    script = Script(plan=[None, None, None, Fail(grpc.StatusCode.UNAVAILABLE, pushback="5")])
    (anonymous, failed), _ = _served(kind, interceptors, calls, script)
    assert anonymous == [b"re:a"] * 3
    trailers = dict(failed.trailing_metadata())
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers["grpc-retry-pushback-ms"] == "5"  # the handler's
    assert trailers["ratelimit-policy"] == '"one";q=1;w=60'  # and ours


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_limits_before_the_resilience_pipeline(kind: str) -> None:
    limiter, seen = _limiter()
    inner = ResilienceServerInterceptor if kind == "sync" else AsyncResilienceServerInterceptor

    def calls(ch: Any) -> Any:
        return [_outcome(ch, "free:carol")[0] for _ in range(2)]

    codes, script = _served(
        kind,
        lambda: (_interceptor(kind, limiter, key=_user), inner(pipeline=rs.Timeout(5))),
        calls,
    )
    assert codes == ["OK", "RESOURCE_EXHAUSTED"]
    assert script.calls == 1
    assert seen == ["free:carol"]


def test_default_key_is_the_callers_principal_and_bad_options_are_refused() -> None:
    limiter = rs.RateLimiter("one", rate=1, per=60, clock=rs.testing.FakeClock())
    ic = RateLimitServerInterceptor(limiter=limiter)
    assert ic._key.__name__ == "default_principal"
    with pytest.raises(rs.ConfigurationError, match="try_acquire"):
        RateLimitServerInterceptor(limiter=object())
    with pytest.raises(rs.ConfigurationError, match="atry_acquire"):
        AsyncRateLimitServerInterceptor(limiter=object())
    with pytest.raises(rs.ConfigurationError, match="key must be"):
        RateLimitServerInterceptor(limiter=limiter, key="user")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="cost must be"):
        RateLimitServerInterceptor(limiter=limiter, cost=0)
