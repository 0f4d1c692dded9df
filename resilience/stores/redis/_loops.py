"""Async clients per event loop: asyncio connections belong to the loop that opened them, so a
store built from a URL makes one async client per loop, initialises it once, and closes it (with
its own sentinel connections) when that loop shuts down."""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ...errors import StoreError
from ._faults import Breaker

__all__ = ["LoopClient", "LoopClients"]


class LoopClient:
    """The async client of one event loop, and with a Sentinel URL the clients of its sentinels
    (closed with it)."""

    __slots__ = ("client", "closer", "direct", "init_lock", "ready", "sentinels")

    def __init__(self, client: Any, sentinels: Sequence[Any] = ()) -> None:
        self.client = client
        self.sentinels = list(sentinels)
        self.ready = False
        self.init_lock: Any = None
        self.closer: Any = None
        # the loop's direct path (see ._adirect; None: none; False: not decided yet)
        self.direct: Any = False


async def _aclose_all(client: Any, sentinels: Sequence[Any]) -> None:
    """Close an async client, then the sentinel clients it asked for the master."""
    try:
        await client.aclose()
    finally:
        for sentinel in sentinels:
            await sentinel.aclose()


async def _close_at_loop_shutdown(
    client: Any, sentinels: Sequence[Any], forget: Callable[[], object]
) -> AsyncIterator[None]:
    """An async generator whose ``finally`` closes ``client`` (and its ``sentinels``):
    ``asyncio.run`` (and pytest's loops) close every live async generator while the loop still
    runs, so the client's connections are closed on their own loop before it is closed;
    ``forget`` then drops the loop's entry (the client's pool refers to its loop)."""
    try:
        yield None
    finally:
        forget()
        try:
            await _aclose_all(client, sentinels)
        except Exception:  # pragma: no cover - best effort at shutdown
            pass


class LoopClients:
    """A store's async clients: the one it was given (usable from its own loop only), or one per
    event loop made by ``new_client`` (``RedisStore.from_url``), or none (a sync client only).

    Args:
        given: the async client the store was given, or ``None``.
        new_client: makes ``(client, sentinel clients)`` for the running loop, or ``None``.
        breaker: the store's fail-fast breaker (a client's first connection is a backend call).
    """

    __slots__ = ("breaker", "given", "lock", "loops", "new_client")

    def __init__(
        self,
        given: Any,
        new_client: Callable[[], tuple[Any, list[Any]]] | None,
        breaker: Breaker,
    ) -> None:
        self.given = None if given is None else LoopClient(given)
        self.new_client = new_client
        self.breaker = breaker
        self.lock = threading.Lock()
        # event loop -> its LoopClient (weak: a finished loop's entry goes with the loop)
        self.loops: weakref.WeakKeyDictionary[Any, LoopClient] = weakref.WeakKeyDictionary()

    def entry(self) -> LoopClient | None:
        """The running loop's client state: the given async client's, or (``from_url``) a
        client of this loop's own (asyncio connections belong to the loop that opened them)."""
        if self.given is not None:
            return self.given
        if self.new_client is None:
            return None
        import asyncio

        loop = asyncio.get_running_loop()
        entry = self.loops.get(loop)
        if entry is None:
            with self.lock:
                entry = self.loops.get(loop)
                if entry is None:
                    for old in [lp for lp in self.loops if lp.is_closed()]:
                        del self.loops[old]  # a loop closed without shutdown_asyncgens
                    entry = self.loops[loop] = LoopClient(*self.new_client())
        return entry

    async def ready(self) -> Any:
        """The running loop's async client (``None``: there is none), initialized once per loop
        (redis-py's async cluster client races when many coroutines make its first request
        concurrently), and closed when its loop shuts down (asyncio.run, pytest)."""
        entry = await self.ready_entry()
        return None if entry is None else entry.client

    async def ready_entry(self) -> LoopClient | None:
        """:meth:`ready`'s client state (with the loop's direct path decided: a plain client
        of the store's own, see :mod:`._adirect`)."""
        entry = self.entry()
        if entry is None:
            return None
        if entry.ready:
            return entry
        client = entry.client
        if entry.direct is False:
            if entry is self.given:
                entry.direct = None  # a given client may be shared with other code
            else:
                from ._adirect import async_direct_path

                entry.direct = async_direct_path(client)
        if entry.closer is None and entry is not self.given:
            import asyncio

            loop = asyncio.get_running_loop()
            entry.closer = _close_at_loop_shutdown(
                client, entry.sentinels, lambda: self.loops.pop(loop, None)
            )
            await entry.closer.__anext__()
        if not callable(getattr(client, "initialize", None)):
            entry.ready = True
            return entry
        import asyncio

        if entry.init_lock is None:
            entry.init_lock = asyncio.Lock()
        async with entry.init_lock:
            if not entry.ready:
                breaker = self.breaker
                epoch = breaker.epoch
                probe = breaker.check() if breaker.failures else False
                try:
                    await client.initialize()
                except Exception as exc:
                    breaker.failure(epoch, probe)
                    raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
                except BaseException:
                    if probe:
                        breaker.abandon()
                    raise
                entry.ready = True
        return entry

    async def aclose(self) -> None:
        """Close the running loop's own client (not a given one) and its sentinel clients."""
        if self.new_client is None:
            return
        import asyncio

        entry = self.loops.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            closer, entry.closer = entry.closer, None
            if closer is not None:
                await closer.aclose()  # its finally closes the client and its sentinels
            else:
                await _aclose_all(entry.client, entry.sentinels)
