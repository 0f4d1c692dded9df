"""``python -m resilience dashboard``: serve :class:`interceptors.asgi.Dashboard` with uvicorn."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

__all__ = ["is_loopback", "serve"]

#: The Host headers a loopback-bound dashboard answers (others: DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is a loopback one.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(redis: str | None, prefix: str, host: str, port: int, allow_remote: bool) -> int:
    """Run the dashboard until interrupted; returns the exit status."""
    err = sys.stderr
    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        print(
            f"resilience dashboard: refusing to bind {host!r}, not a loopback address: the "
            "dashboard exposes internals and has no authentication (--allow-remote to insist)",
            file=err,
        )
        return 2
    try:
        import uvicorn
    except ImportError:
        print("resilience dashboard: needs uvicorn (pip install uvicorn)", file=err)
        return 2
    from interceptors.asgi import Dashboard

    from .instrumentation import Fleet, default_live

    source: Any
    if redis:
        from .stores.redis import RedisStore

        source = Fleet(RedisStore.from_url(redis, prefix=prefix))
        what = f"the fleet publishing to {redis} (prefix {prefix!r})"
    else:
        source = default_live()
        what = "this process only (no --redis: nothing reports here)"
    app = Dashboard(source, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        print(f"resilience dashboard: cannot bind {host}:{port}: {exc}", file=err)
        sock.close()
        return 2
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    print(f"resilience dashboard: http://{shown}:{bound}/  showing {what}", flush=True)
    if not loopback:
        print("warning: the dashboard is reachable from the network, unauthenticated", file=err)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
    return 0
