"""A refused call spends nothing, for callers outside a composition (issue 11 item 2, follow-up).

- ``RateLimiter.refund`` / ``arefund``: give back what one admitted decision took, once, never
  more, to the store it came from (one round trip).
- ``RateLimitMiddleware`` refunds a request a resilience policy inside it refused (an inner
  ``ResilienceMiddleware`` or ``RateLimitMiddleware`` answering 429 / 503, or a stamped refusal
  escaping the app); a 429 / 503 the application chose keeps the permit.
- The gRPC retry's budget view delegates ``refund``: attempts refused by a local policy inside
  the interceptor's retry give back what they took from the budget.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

import resilience as rs
from interceptors import asgi
from interceptors.asgi import RateLimitMiddleware, ResilienceMiddleware
from interceptors.asgi._common import Receive, Scope, Send
from interceptors.grpc import ResilienceClientInterceptor, grpc_retry
from resilience.errors import StoreError
from resilience.events import CallRejected
from resilience.testing import FakeClock

from .._asgi_apps import TestApp, respond
from .._server import serve
from ..conftest import Runner
from ..grpc_fixtures import UU, Code, Fail, Script, start_sync_server
from ..helpers import permits_left, scripts_run

IP = "127.0.0.1"  # the client address uvicorn reports for our loopback requests


def _redis_store(url: str, clock: FakeClock | None = None) -> Any:
    from resilience.stores.redis import RedisStore

    return RedisStore.from_url(url, prefix=f"rf{uuid.uuid4().hex[:8]}", clock=clock)


# -- RateLimiter.refund ------------------------------------------------------------------------
def test_refund_gives_one_decision_back_once(clock: FakeClock) -> None:
    limiter = rs.RateLimiter("ip", rate=2, per=60, clock=clock)
    first, second = limiter.try_acquire(key="a"), limiter.try_acquire(key="a")
    refused = limiter.try_acquire(key="a")
    assert (first.allowed, second.allowed, refused.allowed) == (True, True, False)
    assert refused.permit is None
    assert not limiter.refund(refused)
    assert limiter.refund(second)
    assert second.permit is not None
    assert second.permit.refunded
    assert not limiter.refund(second)  # idempotent: no extra permit
    assert not limiter.refund(second.permit)
    assert permits_left(limiter, "a") == 1
    assert limiter.try_acquire(key="a").allowed
    assert not limiter.try_acquire(key="a").allowed
    assert permits_left(limiter, "b") == 2  # other buckets untouched


def test_refund_never_gives_back_more_than_was_taken(clock: FakeClock) -> None:
    limiter = rs.RateLimiter("api", rate=5, per=10, clock=clock)  # one permit per 2 s
    old = limiter.try_acquire(cost=2)
    clock.advance(3.0)  # 1.5 permits' worth of the backlog has drained since
    newer = limiter.try_acquire()
    assert limiter.refund(old)
    assert permits_left(limiter) == 4  # only `newer` is still spent, time is not given twice
    assert limiter.refund(newer)
    assert permits_left(limiter) == 5
    clock.advance(60)
    assert limiter.try_acquire(cost=5).allowed  # a full bucket, not more
    assert not limiter.try_acquire().allowed


def test_a_refunded_warm_up_limiter_is_left_as_it_was(clock: FakeClock) -> None:
    def make() -> rs.RateLimiter:
        return rs.RateLimiter("w", rate=10, warmup=10, cold_factor=3, clock=clock)

    limiter, twin = make(), make()
    for _ in range(3):
        d = limiter.try_acquire(key="k")
        assert d.allowed
        assert d.permit is not None
        assert d.permit.taken > 0
        assert limiter.refund(d)
    assert [limiter.try_acquire(key="k")[:6] for _ in range(8)] == [
        twin.try_acquire(key="k")[:6] for _ in range(8)
    ]


def test_a_paced_waiter_refund_gives_its_slot_to_the_next(clock: FakeClock) -> None:
    pacer = rs.RateLimiter("pacer", rate=4, burst=1, max_wait=1.0, clock=clock)
    assert pacer.acquire().waited == 0.0
    second = pacer.acquire()
    assert second.waited == 0.25
    assert pacer.refund(second)
    assert pacer.acquire().waited == 0.0  # without the refund: 0.25


async def test_arefund_in_memory(clock: FakeClock) -> None:
    limiter = rs.RateLimiter("ip", rate=1, per=60, clock=clock)
    d = await limiter.atry_acquire(key="a")
    assert await limiter.arefund(d)
    assert not await limiter.arefund(d)
    assert (await limiter.atry_acquire(key="a")).allowed


def test_refund_checks_what_it_is_given(clock: FakeClock) -> None:
    a = rs.RateLimiter("a", rate=1, clock=clock)
    b = rs.RateLimiter("b", rate=1, clock=clock)
    d = a.try_acquire()
    with pytest.raises(rs.ConfigurationError, match="taken from rate limiter 'a'"):
        b.refund(d)
    with pytest.raises(rs.ConfigurationError, match="Decision"):
        a.refund("not a decision")  # type: ignore[arg-type]
    assert d.permit is not None
    assert not d.permit.refunded
    assert a.try_acquire(cost=0).permit is None  # cost 0 takes nothing


class _Flaky(rs.MemoryStore):
    """A store whose operations fail while ``down`` (and that records what it was asked)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.down = False
        self.ops: list[str] = []

    def apply(self, op: Any, /) -> Any:
        self.ops.append(type(op).__name__)
        if self.down:
            raise StoreError("down")
        return super().apply(op)


def test_a_permit_taken_locally_during_an_outage_goes_back_locally(clock: FakeClock) -> None:
    store = _Flaky(clock)
    limiter = rs.RateLimiter(
        "api", rate=2, per=60, store=store, on_store_error="local", instances=2, clock=clock
    )
    shared = limiter.try_acquire(key="k")
    store.down = True
    local = limiter.try_acquire(key="k")  # the local share: one permit
    assert local.allowed
    assert not limiter.try_acquire(key="k").allowed
    store.down = False
    store.ops.clear()
    assert limiter.refund(local)
    assert store.ops == []  # the store never gave that permit: nothing to give back there
    store.down = True
    assert limiter.try_acquire(key="k").allowed  # the local bucket got it back
    store.down = False
    assert limiter.refund(shared)
    assert store.ops[-1] == "_RefundOp"
    assert permits_left(limiter, "k") == 2


def test_redis_refund_is_one_round_trip_and_idempotent(redis_server: Any) -> None:
    import redis

    clock = FakeClock(start=1000.0)
    store = _redis_store(redis_server.url, clock)
    client = redis.Redis.from_url(redis_server.url)
    limiter = rs.RateLimiter("ip", rate=2, per=3600, warmup=60, store=store, clock=clock)
    warm = limiter.try_acquire(key="a")  # loads the scripts
    assert limiter.refund(warm)
    d = limiter.try_acquire(key="a")
    before = scripts_run(client)
    assert limiter.refund(d)
    assert scripts_run(client) - before == 1
    assert not limiter.refund(d)
    assert scripts_run(client) - before == 1  # a second refund does not even ask
    twin = rs.RateLimiter("ip2", rate=2, per=3600, warmup=60, store=store, clock=clock)
    assert [limiter.try_acquire(key="a")[:6] for _ in range(3)] == [
        twin.try_acquire(key="a")[:6] for _ in range(3)
    ]
    client.close()
    store.close()


async def test_redis_arefund(redis_server: Any) -> None:
    clock = FakeClock(start=1000.0)
    store = _redis_store(redis_server.url, clock)
    limiter = rs.RateLimiter("ip", rate=1, per=3600, store=store, clock=clock)
    d = await limiter.atry_acquire(key="a")
    assert not (await limiter.atry_acquire(key="a")).allowed
    assert await limiter.arefund(d)
    assert not await limiter.arefund(d)
    assert (await limiter.atry_acquire(key="a")).allowed
    assert not (await limiter.atry_acquire(key="a")).allowed
    await store.aclose()
    store.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_a_late_inner_refusal_refunds_only_what_is_left_of_the_permit(
    runner: Runner, clock: FakeClock, keyed: bool
) -> None:
    """Inside a composition too: time passes before the inner policy refuses (a queue wait),
    and another caller takes a permit meanwhile; the refund must not give that one away."""
    key = (lambda: "k") if keyed else None
    outer = rs.RateLimiter("outer", rate=5, per=10, key=key, clock=clock)  # a permit = 2 s
    k = "k" if keyed else None

    def meanwhile(event: object) -> None:
        if isinstance(event, CallRejected):
            clock.advance(3.0)  # the refused call's 2 s of backlog have elapsed
            assert outer.try_acquire(key=k).allowed  # someone else's permit

    inner = rs.RateLimiter("inner", rate=1, per=3600, clock=clock, listeners=[meanwhile])
    inner.try_acquire()
    with pytest.raises(rs.RateLimitedError):
        runner.run(rs.Pipeline(outer, inner), runner.wrap(lambda: "ok"))
    assert permits_left(outer, k) == 4  # the other caller's permit is still spent


# -- RateLimitMiddleware on a real uvicorn server ----------------------------------------------
def _get(url: str, paths: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return [client.get(p) for p in paths]


def _detail(response: httpx.Response) -> str:
    detail: str = response.json().get("detail", "")
    return detail


@pytest.mark.parametrize("inner", ["limiter", "breaker"])
def test_inner_refusals_do_not_drain_the_outer_per_ip_budget(clock: FakeClock, inner: str) -> None:
    per_ip = rs.RateLimiter("per-ip", rate=3, per=3600, clock=clock)
    policy: rs.Policy
    if inner == "limiter":
        policy = rs.RateLimiter("inner", rate=1, per=3600, clock=clock)
    else:
        policy = rs.CircuitBreaker("inner", failure_count=1, clock=clock)
    guarded = ResilienceMiddleware(TestApp(), pipeline=policy, include=["/hello"])
    app = RateLimitMiddleware(guarded, limiter=per_ip)
    with serve(app) as url:
        first = _get(url, ["/hello"])[0]
        assert first.status_code == 200
        assert first.headers["ratelimit"] == '"per-ip";r=2;t=1200'
        if isinstance(policy, rs.CircuitBreaker):
            policy.open()
        refused = _get(url, ["/hello"] * 10)
        expected = 429 if inner == "limiter" else 503
        assert [r.status_code for r in refused] == [expected] * 10
        assert all("inner" in _detail(r) for r in refused)  # the inner policy's answers
        assert permits_left(per_ip, IP) == 2  # refunded: only the first request spent
        # a 503 the application chose itself is the request's outcome: its permit stays spent
        assert [r.status_code for r in _get(url, ["/status/503"] * 2)] == [503, 503]
        assert permits_left(per_ip, IP) == 0
        last = _get(url, ["/hello"])[0]
    assert last.status_code == 429
    assert _detail(last) == "the client's request quota is exhausted"  # now the outer limit


def test_nested_rate_limit_middlewares_refund_the_outer_one(clock: FakeClock) -> None:
    per_ip = rs.RateLimiter("per-ip", rate=3, per=3600, clock=clock)
    per_path = rs.RateLimiter("per-path", rate=1, per=3600, clock=clock)
    inner = RateLimitMiddleware(TestApp(), limiter=per_path, key=lambda scope: scope["path"])
    app = RateLimitMiddleware(inner, limiter=per_ip)
    with serve(app) as url:
        statuses = [r.status_code for r in _get(url, ["/hello"] * 8)]
    assert statuses == [200] + [429] * 7
    assert permits_left(per_ip, IP) == 2
    assert permits_left(per_path, "/hello") == 0


def _app_calling(fn: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send, 200, await fn())

    return app


def test_a_stamped_refusal_escaping_the_app_is_refunded(clock: FakeClock) -> None:
    per_ip = rs.RateLimiter("per-ip", rate=3, per=3600, clock=clock)
    dependency = rs.RateLimiter("dependency", rate=1, per=3600, clock=clock)

    @dependency
    async def fetch() -> bytes:
        return b"data"

    with serve(RateLimitMiddleware(_app_calling(fetch), limiter=per_ip)) as url:
        statuses = [r.status_code for r in _get(url, ["/"] * 6)]
    assert statuses == [200] + [500] * 5  # uvicorn answers the escaping refusals
    assert permits_left(per_ip, IP) == 2


def test_a_refusal_the_app_raises_itself_keeps_the_permit(clock: FakeClock) -> None:
    per_ip = rs.RateLimiter("per-ip", rate=3, per=3600, clock=clock)

    async def busy() -> bytes:
        raise rs.BulkheadFullError("made up by the handler", policy="mine")

    guarded = ResilienceMiddleware(_app_calling(busy), pipeline=rs.Timeout(10, clock=clock))
    with serve(RateLimitMiddleware(guarded, limiter=per_ip)) as url:
        statuses = [r.status_code for r in _get(url, ["/"] * 3)]
    assert statuses == [503] * 3  # mapped by ResilienceMiddleware, but not a policy's refusal
    assert permits_left(per_ip, IP) == 0


def test_an_app_handler_can_report_its_refusal(clock: FakeClock) -> None:
    per_ip = rs.RateLimiter("per-ip", rate=2, per=3600, clock=clock)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        asgi.mark_refused(scope)  # e.g. a framework's exception handler for a stamped refusal
        await respond(send, 429, b"refused")

    with serve(RateLimitMiddleware(app, limiter=per_ip)) as url:
        statuses = [r.status_code for r in _get(url, ["/"] * 5)]
    assert statuses == [429] * 5
    assert permits_left(per_ip, IP) == 2


def test_redis_outer_limiter_refunds_in_one_round_trip(redis_server: Any) -> None:
    import redis

    store = _redis_store(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    per_ip = rs.RateLimiter("per-ip", rate=3, per=3600, store=store)
    inner = rs.RateLimiter("inner", rate=1, per=3600)
    app = RateLimitMiddleware(ResilienceMiddleware(TestApp(), pipeline=inner), limiter=per_ip)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/hello").status_code == 200
        assert http.get("/hello").status_code == 429  # loads the refund script
        before = scripts_run(client)
        assert [http.get("/hello").status_code for _ in range(10)] == [429] * 10
        assert scripts_run(client) - before == 20  # per refused request: take + refund
        assert http.get("/status/503").status_code == 429  # inner limit first: refunded
    assert permits_left(per_ip, IP) == 2
    client.close()
    store.close()


def test_a_duck_typed_limiter_with_a_sync_refund(clock: FakeClock) -> None:
    real = rs.RateLimiter("per-ip", rate=2, per=3600, clock=clock)

    class SyncOnly:
        name = "per-ip"

        def try_acquire(self, *, key: str, cost: int = 1) -> rs.Decision:
            return real.try_acquire(key=key, cost=cost)

        def refund(self, decision: rs.Decision) -> bool:
            return real.refund(decision)

    guarded = ResilienceMiddleware(
        TestApp(), pipeline=rs.RateLimiter("inner", rate=1, per=3600, clock=clock)
    )
    with serve(RateLimitMiddleware(guarded, limiter=SyncOnly())) as url:
        statuses = [r.status_code for r in _get(url, ["/hello"] * 5)]
    assert statuses == [200] + [429] * 4
    assert permits_left(real, IP) == 1


def test_a_limiter_without_refund_still_works(clock: FakeClock) -> None:
    from .._asgi_apps import FakeLimiter

    limiter = FakeLimiter(rate=2)
    guarded = ResilienceMiddleware(
        TestApp(), pipeline=rs.RateLimiter("inner", rate=1, per=3600, clock=clock)
    )
    with serve(RateLimitMiddleware(guarded, limiter=limiter)) as url:
        statuses = [r.status_code for r in _get(url, ["/hello"] * 3)]
    assert statuses == [200, 429, 429]
    assert limiter.used == {IP: 2}  # nothing to refund with: the permits stay spent


# -- gRPC: the retry's budget view refunds refused attempts ------------------------------------
@pytest.fixture
def grpc_port() -> Iterator[tuple[Script, int]]:
    script = Script()
    server, port = start_sync_server(script)
    yield script, port
    server.stop(None)


def _unary(port: int, pipeline: rs.Policy) -> Any:
    interceptor = ResilienceClientInterceptor(pipeline=pipeline)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        channel: Any = grpc.intercept_channel(raw, interceptor)
        return channel.unary_unary(UU)(b"a", timeout=10)


def _aio_unary(port: int, pipeline: rs.Policy) -> Any:
    from interceptors.grpc import AsyncResilienceClientInterceptor

    async def main() -> Any:
        interceptor = AsyncResilienceClientInterceptor(pipeline=pipeline)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=interceptor.channel_interceptors()
        ) as channel:
            method: Any = channel.unary_unary(UU)  # type: ignore[call-arg]
            return await method(b"a", timeout=10)

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_grpc_retry_budget_is_refunded_by_local_refusals(
    grpc_port: tuple[Script, int], clock: FakeClock, mode: str
) -> None:
    script, port = grpc_port
    run = _unary if mode == "sync" else _aio_unary
    budget = rs.RetryBudget(ratio=1, min_per_second=0, clock=clock)
    limiter = rs.RateLimiter("local", rate=1, per=3600, clock=clock)
    retry = grpc_retry(attempts=3, throttle=budget, backoff=rs.backoff.constant(0.1), clock=clock)
    pipeline = rs.Pipeline(retry, limiter)
    # attempt 1 reaches the server (UNAVAILABLE); the retry it withdrew is refused locally
    script.plan = [Fail(Code.UNAVAILABLE)]
    with pytest.raises(rs.RateLimitedError):
        run(port, pipeline)
    assert script.calls == 1
    assert budget.snapshot() == {"calls": 1, "retries": 0, "ratio": 1}  # the retry came back
    # every attempt refused: the calls never reached the server and deposit nothing
    for _ in range(5):
        with pytest.raises(rs.RateLimitedError):
            run(port, pipeline)
    assert script.calls == 1
    assert budget.snapshot()["calls"] == 1
