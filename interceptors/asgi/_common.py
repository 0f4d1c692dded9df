"""Shared ASGI plumbing: problem+json responses (of :mod:`interceptors.errors`), ``Retry-After``,
client addresses behind trusted proxies, route selection and inbound deadlines.

Everything here is private to :mod:`interceptors.asgi`; the middlewares import from it so that
each of these rules exists in exactly one place.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, TypeAlias, cast

from interceptors._ratelimit_fields import format_retry_after
from interceptors.errors import PROBLEM_BASE, ErrorMapping, classify
from resilience.errors import ConfigurationError, ResilienceError

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers: TypeAlias = list[tuple[bytes, bytes]]

__all__ = [
    "PROBLEM_BASE",
    "ASGIApp",
    "Headers",
    "Message",
    "Receive",
    "RouteFilter",
    "Scope",
    "Send",
    "REFUSALS_KEY",
    "TrustedProxies",
    "format_retry_after",
    "header",
    "mark_refused",
    "parse_timeout",
    "refusal_row",
    "send_problem",
    "send_refusal",
]

# -- errors → HTTP --------------------------------------------------------------------------

# The status, title and problem type of every policy error come from the one table shared
# with the gRPC interceptors: :data:`interceptors.errors.ERROR_TABLE`.

# -- refusals reported outwards -------------------------------------------------------------

#: The ASGI scope key through which a middleware learns that a request it let through was
#: refused by a resilience policy further in: a list, put there by :class:`RateLimitMiddleware`
#: (shared by every middleware and by shallow copies of the scope); a refusal appends to it.
REFUSALS_KEY = "resilience.refusals"


def mark_refused(scope: Scope, exc: BaseException | None = None) -> None:
    """Report that a resilience policy refused this request before its work ran.

    Call it when answering a refusal yourself (e.g. a framework exception handler turning a
    :class:`resilience.RejectedError` stamped by a policy into a 429 / 503): an enclosing
    :class:`~interceptors.asgi.RateLimitMiddleware` then refunds the permits the request took
    from it. :class:`~interceptors.asgi.ResilienceMiddleware` and ``RateLimitMiddleware`` call
    it for their own refusals. Without an enclosing limiter it does nothing.

    Example:
        >>> scope = {"type": "http", REFUSALS_KEY: []}
        >>> mark_refused(scope)
        >>> len(scope[REFUSALS_KEY])
        1
    """
    refusals = scope.get(REFUSALS_KEY)
    if refusals is not None:
        refusals.append(exc)


def refusal_row(error: type[ResilienceError]) -> ErrorMapping:
    """The table row of an error class the table maps (a middleware answering it directly)."""
    row = classify(error)
    if row is None:  # pragma: no cover - a programming error caught by the tests
        raise LookupError(f"{error.__name__} is not in interceptors.errors.ERROR_TABLE")
    return row


async def send_problem(
    send: Send,
    status: int,
    title: str,
    *,
    type_: str = "about:blank",
    detail: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Send a complete RFC 9457 ``application/problem+json`` response."""
    doc: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    if extra:
        doc.update(extra)
    body = json.dumps(doc, separators=(",", ":")).encode()
    out: Headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_refusal(
    send: Send,
    row: ErrorMapping,
    *,
    detail: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send the problem+json response of a table row (status, title and problem type)."""
    await send_problem(
        send, row.http_status, row.title, type_=row.problem_type, detail=detail, headers=headers
    )


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the last request header ``name`` (lower-case bytes), or ``None``."""
    found = None
    for k, v in scope.get("headers", ()):
        if k == name:
            found = v
    return found


# -- client address behind trusted proxies -------------------------------------------------

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_ip(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("["):  # "[v6]" or "[v6]:port"
        end = text.find("]")
        text = text[1:end] if end > 0 else text
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """Resolve the client address of a request, trusting ``X-Forwarded-For`` only from proxies.

    The peer address (``scope["client"]``) is the client unless it lies in one of the trusted
    networks; then ``X-Forwarded-For`` is read right to left, skipping trusted hops, and the
    first untrusted address is the client (the rightmost untrusted hop: entries to its left were
    written by the client itself and prove nothing). If every hop is trusted the leftmost one is
    used; if the hop to use is not an IP address the last trusted address is used instead (a
    conservative choice: the limit then applies to that proxy, never to a client-chosen string).

    Args:
        networks: CIDRs (``"10.0.0.0/8"``, ``"::1/128"``) or single addresses.

    Example:
        >>> tp = TrustedProxies(["10.0.0.0/8"])
        >>> scope = {"client": ("10.1.2.3", 5000),
        ...          "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.9.9.9")]}
        >>> tp.client_ip(scope)
        '203.0.113.9'
    """

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[str | Network] = ()) -> None:
        if isinstance(networks, str | bytes):
            raise ConfigurationError(
                f"trusted_proxies must be a sequence of CIDR strings, got the string {networks!r}"
            )
        nets: list[Network] = []
        for n in networks:
            try:
                nets.append(n if isinstance(n, Network) else ipaddress.ip_network(n, strict=False))
            except (ValueError, TypeError):
                raise ConfigurationError(
                    f"trusted_proxies entries must be CIDRs like '10.0.0.0/8' or addresses, "
                    f"got {n!r}"
                ) from None
        self.networks: tuple[Network, ...] = tuple(nets)

    def trusted(self, addr: Address) -> bool:
        """Whether ``addr`` is one of the trusted proxies."""
        return any(addr in net for net in self.networks)

    def client_ip(self, scope: Scope) -> str | None:
        """The client's address as a string, or ``None`` when the server gave none."""
        client = scope.get("client")
        if not client:
            return None
        peer = str(client[0])
        if not self.networks:
            return peer
        peer_ip = _parse_ip(peer)
        if peer_ip is None or not self.trusted(peer_ip):
            return peer
        hops: list[str] = []
        for k, v in scope.get("headers", ()):
            if k == b"x-forwarded-for":
                hops.extend(v.decode("latin-1").split(","))
        last = peer_ip
        for hop in reversed(hops):
            ip = _parse_ip(hop)
            if ip is None:
                return str(last)
            if not self.trusted(ip):
                return str(ip)
            last = ip
        return str(last)


# -- route selection -------------------------------------------------------------------------


class RouteFilter:
    """Which requests a middleware applies to: path prefixes to include / exclude, a predicate.

    A request is selected when its path matches one of ``include`` (or ``include`` is empty),
    matches none of ``exclude``, and ``when(scope)`` (if given) is true. A prefix matches on
    segment boundaries: ``"/api"`` matches ``/api`` and ``/api/users`` but not ``/apis``.

    Example:
        >>> f = RouteFilter(include=["/api"], exclude=["/api/health"])
        >>> [f({"path": p}) for p in ("/api/users", "/apis", "/api/health", "/")]
        [True, False, False, False]
    """

    __slots__ = ("exclude", "include", "when")

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        when: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.include = self._prefixes(include, "include")
        self.exclude = self._prefixes(exclude, "exclude")
        if when is not None and not callable(when):
            raise ConfigurationError(f"when must be a predicate over the ASGI scope, got {when!r}")
        self.when = when

    @staticmethod
    def _prefixes(values: Sequence[str], name: str) -> tuple[str, ...]:
        if isinstance(values, str):
            raise ConfigurationError(f"{name} must be a sequence of path prefixes, not a string")
        out = []
        for v in cast(Sequence[object], values):
            if not isinstance(v, str) or not v.startswith("/"):
                raise ConfigurationError(f"{name} prefixes must start with '/', got {v!r}")
            out.append(v.rstrip("/"))
        return tuple(out)

    @property
    def everything(self) -> bool:
        """Whether every request is selected (the fast path)."""
        return not self.include and not self.exclude and self.when is None

    @staticmethod
    def _match(path: str, prefixes: tuple[str, ...]) -> bool:
        for p in prefixes:
            if path.startswith(p) and (len(path) == len(p) or path[len(p)] == "/"):
                return True
        return False

    def __call__(self, scope: Scope) -> bool:
        """Whether the request is selected."""
        path: str = scope.get("path", "")
        if self.include and not self._match(path, self.include):
            return False
        if self.exclude and self._match(path, self.exclude):
            return False
        return self.when is None or bool(self.when(scope))


# -- inbound deadlines -----------------------------------------------------------------------

_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_TIMEOUT = re.compile(r"\A([0-9]{1,8})([HMSmun])\Z")
_SECONDS = re.compile(r"\A[0-9]{1,12}(?:\.[0-9]{1,9})?\Z")


def parse_timeout(value: bytes | str | None) -> float | None:
    """Seconds from an inbound timeout header, or ``None`` when absent or malformed.

    Accepts decimal seconds (``"2.5"``) and the gRPC ``grpc-timeout`` form (``"250m"``: up to
    8 digits and a unit ``H``, ``M``, ``S``, ``m``, ``u`` or ``n``).

    Example:
        >>> parse_timeout(b"2.5"), parse_timeout("250m"), parse_timeout("-1"), parse_timeout("x")
        (2.5, 0.25, None, None)
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if _SECONDS.match(text):
        return float(text)
    m = _GRPC_TIMEOUT.match(text)
    if m:
        return int(m.group(1)) * _GRPC_UNITS[m.group(2)]
    return None
