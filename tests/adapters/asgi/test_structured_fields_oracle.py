"""Our hand-written structured fields against the ``http-sf`` library as an oracle.

``benchmarks/bench_sf.py`` shows ours faster on the hot path, so we keep it; these tests check
it against http-sf (RFC 9651) on generated inputs, valid and invalid:

* ``Idempotency-Key`` in the sf-string form: ours accepts exactly the values http-sf parses as
  a String item without parameters that is also a key (1-255 characters, none of them a space),
  and returns the same string. A String *with* parameters is refused (we use none).
* the bare form is our leniency for clients that do not quote: every bare value http-sf parses
  as a Token without parameters gives the same key; other bare values (``8e03…`` is no token)
  are accepted as they are when they are 1-255 visible ASCII characters without a comma.
* ``RateLimit`` / ``RateLimit-Policy``: what ``RateLimitMiddleware`` sends parses with http-sf
  as a List of one Item (the limiter's name with its integer parameters), with the values we
  meant, and serializing that parse again with http-sf gives back our bytes.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import http_sf
import pytest
from http_sf.types import ParamsType, Token
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import resilience as rs
from interceptors.asgi import RateLimitMiddleware
from interceptors.asgi._common import Message
from interceptors.asgi._idempotency_request import parse_idempotency_key

#: The largest sf-integer (RFC 9651 §3.3.1: at most 15 digits).
SF_MAX = 999_999_999_999_999
FAST = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


def http_sf_item(field: bytes) -> tuple[Any, dict[str, Any]] | None:
    """http-sf's parse of an Item (value, parameters), or ``None`` when it is invalid."""
    try:
        item: Any = http_sf.parse(field, tltype="item")
    except ValueError:  # StructuredFieldError
        return None
    return item[0], item[1]


def expected_key(raw: bytes) -> str | None:
    """The key per the oracle (for quoted values) and the documented bare-form rule."""
    if len(raw) > 8192:
        return None
    field = raw.strip(b" \t")  # the field value's OWS, which the HTTP layer drops
    item = http_sf_item(field)
    if field[:1] == b'"':
        if item is None:
            return None
        value, params = item
        assert type(value) is str  # a quoted field parses as a String or not at all
        if params or not 0 < len(value) <= 255 or " " in value:
            return None
        return value
    if item is not None and isinstance(item[0], Token) and not item[1]:
        return str(item[0])  # a token is always 1+ visible characters, never a comma
    if b"," in field or not 0 < len(field) <= 255 or any(not 0x21 <= c <= 0x7E for c in field):
        return None
    return field.decode("ascii")


# bytes that matter to the grammar, plus ordinary ones
STRUCTURAL = b'"\\ \t,;=:*?%@()<>/\x00\x1f\x7f\x80\xff'
ORDINARY = b"aZ09-_.~!#$&'+^`|"
raw_bytes = st.binary(max_size=24) | st.lists(
    st.sampled_from(list(STRUCTURAL + ORDINARY)), max_size=24
).map(bytes)
quoted_raw = raw_bytes.map(lambda b: b'"' + b + b'"')
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
tokens = st.from_regex(rb"\A[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]{0,40}\Z")
param_values = st.integers(-(10**15) + 1, 10**15 - 1) | st.booleans() | printable


@st.composite
def serialized_items(draw: st.DrawFn) -> bytes:
    """A valid sf Item: a String or a Token, sometimes with parameters, as http-sf writes it."""
    bare: Any = draw(printable) if draw(st.booleans()) else Token(draw(tokens).decode())
    params: ParamsType = draw(
        st.dictionaries(st.from_regex(r"\A[a-z*][a-z0-9_.*-]{0,5}\Z"), param_values)
    )
    text: str = http_sf.ser((bare, params))
    return text.encode("ascii")


def mutated(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` with one byte inserted, deleted or replaced (near-misses of valid fields)."""
    if not raw:
        return raw
    i = data.draw(st.integers(0, len(raw) - 1))
    c = bytes([data.draw(st.sampled_from(list(STRUCTURAL + ORDINARY)))])
    kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    if kind == "insert":
        return raw[:i] + c + raw[i:]
    if kind == "delete":
        return raw[:i] + raw[i + 1 :]
    return raw[:i] + c + raw[i + 1 :]


@FAST
@given(raw=raw_bytes | quoted_raw | serialized_items() | tokens)
@example(raw=b'"8e03978e-40d5"')
@example(raw=b'"a b"')  # a String, but no key
@example(raw=b'"abc";x=1')  # a String with a parameter: refused
@example(raw=b'""')
@example(raw=b'"' + b"k" * 255 + b'"')
@example(raw=b'"' + b"k" * 256 + b'"')
@example(raw=b'"\\\\\\""')
@example(raw=b'  "spaced"\t')
@example(raw=b"8e03978e-40d5")  # bare, not a token: our leniency
def test_idempotency_key_agrees_with_http_sf(raw: bytes) -> None:
    assert parse_idempotency_key(raw) == expected_key(raw)


@FAST
@given(data=st.data(), raw=serialized_items() | quoted_raw | tokens)
def test_near_misses_of_valid_fields_agree_too(data: st.DataObject, raw: bytes) -> None:
    near = mutated(data, raw)
    assert parse_idempotency_key(near) == expected_key(near)


@FAST
@given(key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255))
def test_every_key_a_client_quotes_with_http_sf_parses_back(key: str) -> None:
    field = http_sf.ser(key).encode("ascii")
    assert parse_idempotency_key(field) == key


# -- RateLimit / RateLimit-Policy ---------------------------------------------------------


class _Limiter:
    """Only what ``RateLimitMiddleware`` reads from a limiter to write its fields."""

    def __init__(self, name: str, rate: float, per: float) -> None:
        self.name, self.rate, self.per = name, rate, per

    def try_acquire(self, key: str | None = None, cost: float = 1) -> Any:  # pragma: no cover
        raise AssertionError("not called: the tests call _fields directly")


class _Decision:
    def __init__(self, limit: float | None, remaining: float, reset_after: float | None) -> None:
        self.limit, self.remaining, self.reset_after = limit, remaining, reset_after


def parsed(value: bytes) -> tuple[str, dict[str, Any]]:
    """One field value through http-sf: a List of one Item; checks the round trip."""
    members: Any = http_sf.parse(value, tltype="list")
    assert len(members) == 1
    assert http_sf.ser(members).encode("ascii") == value  # serialized as http-sf would
    name, params = members[0]
    assert type(name) is str
    return name, params


def sf_int(x: float) -> int:
    return min(int(x), SF_MAX)


numbers = st.floats(min_value=1e-6, max_value=2.0**53, allow_nan=False)


@FAST
@given(
    name=st.text(max_size=20),
    rate=numbers,
    per=numbers,
    limit=st.none() | st.floats(0, 2.0**53),
    remaining=st.floats(-5, 2.0**53),
    reset=st.none() | st.floats(0, 1e300),
    refused_after=st.none() | st.integers(0, 10**30),
)
def test_ratelimit_fields_round_trip_through_http_sf(
    name: str,
    rate: float,
    per: float,
    limit: float | None,
    remaining: float,
    reset: float | None,
    refused_after: int | None,
) -> None:
    middleware = RateLimitMiddleware(_noop, limiter=_Limiter(name, rate, per))
    after = None if refused_after is None else b"%d" % refused_after
    fields = dict(middleware._fields(_Decision(limit, remaining, reset), after))
    clean = "".join(c for c in name if " " <= c <= "~") if name else "default"
    policy_name, policy = parsed(fields[b"ratelimit-policy"])
    quota = rate if limit is None else limit
    assert (policy_name, policy) == (
        clean,
        {"q": sf_int(math.floor(quota)), "w": sf_int(math.ceil(per * quota / rate))},
    )
    state_name, state = parsed(fields[b"ratelimit"])
    assert state_name == clean
    assert set(state) == {"r", "t"}
    assert state["r"] == sf_int(max(0, math.floor(remaining)))
    if refused_after is not None:
        assert state["t"] == min(refused_after, SF_MAX)
    assert 0 <= state["t"] <= SF_MAX


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("admitted", [True, False])
def test_the_largest_bucket_a_limiter_allows_sends_valid_fields(admitted: bool) -> None:
    """A burst of 10**15 (one permit per µs for 10**9 s) has 16 digits, one more than an
    sf-integer has: it is sent as the largest one (main sent ``q=1000000000000000``)."""
    clock = rs.testing.FakeClock()
    limiter = rs.RateLimiter("huge", rate=10**15, per=10**9, clock=clock)
    if not admitted:
        limiter.try_acquire(key="127.0.0.1", cost=10**15)
    sent: list[Message] = []

    async def receive() -> Message:  # pragma: no cover - the app reads no body
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    app = RateLimitMiddleware(_noop, limiter=limiter)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "client": ("127.0.0.1", 1),
    }
    asyncio.run(app(scope, receive, send))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == (200 if admitted else 429)
    assert parsed(headers[b"ratelimit-policy"]) == ("huge", {"q": SF_MAX, "w": 10**9})
    name, state = parsed(headers[b"ratelimit"])
    assert name == "huge"
    assert set(state) == {"r", "t"}
    assert state["r"] == (SF_MAX if admitted else 0)
