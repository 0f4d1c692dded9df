"""Durable writes (``wait_replicas``): the script and a ``WAIT`` pipelined in one round trip.

``WAIT`` counts the replicas that have this connection's writes (it cannot run inside a script),
so both go on one connection. On a cluster the ``WAIT`` is sent to the node that owns the key;
if the topology changed meanwhile (the script was redirected), the write counts as
unacknowledged. An unacknowledged write raises :class:`~resilience.StoreError`, but the server
answered: it never makes the store fail fast.
"""

from __future__ import annotations

from typing import Any

from ...errors import StoreError
from ._faults import NO_LOOP, WRONG_LOOP, Breaker, parse_reply
from ._ops import redis_errors

__all__ = ["Durable"]

_UNACKED = object()  # a durable write's reply when too few replicas acknowledged it


class Durable:
    """Runs ``DURABLE`` operations with :meth:`RedisStore.apply`'s fault model, then waits for
    ``wait_replicas`` acknowledgements (at most ``wait_ms`` milliseconds)."""

    __slots__ = ("breaker", "wait_ms", "wait_replicas")

    def __init__(self, wait_replicas: int, wait_ms: int, breaker: Breaker) -> None:
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self.breaker = breaker

    def _pipeline(
        self, client: Any, command: str, args: list[Any], options: dict[str, Any]
    ) -> tuple[Any, Any]:
        node = None
        if callable(getattr(client, "get_node_from_key", None)):  # a cluster client
            node = client.get_node_from_key(args[2])
            pipe = client.pipeline()
            pipe.execute_command(command, *args, **options)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms, target_nodes=node)
        else:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(command, *args, **options)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
        return pipe, node

    def _reply(self, client: Any, args: list[Any], node: Any, replies: list[Any]) -> Any:
        """The script's reply, or :data:`_UNACKED` when too few replicas acknowledged it."""
        reply, acked = replies
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise acked
        if node is not None and client.get_node_from_key(args[2]).name != node.name:
            acked = -1  # redirected: the WAIT went to the previous owner of the key
        return reply if int(acked) >= self.wait_replicas else _UNACKED

    def _result(self, op: Any, reply: Any) -> Any:
        if self.breaker.failures:
            self.breaker.success()
        if reply is _UNACKED:
            raise StoreError(
                f"redis store: the write of {op.key!r} was not acknowledged by "
                f"{self.wait_replicas} replica(s) within {self.wait_ms} ms (a failover could "
                "lose it)"
            )
        return parse_reply(op, reply)

    # twin: async arun=run, WRONG_LOOP=NO_LOOP
    async def arun(
        self,
        op: Any,
        client: Any,
        args: list[Any],
        src: str,
        options: dict[str, Any],
        epoch: int,
        probe: bool,
    ) -> Any:
        """Run the script, then WAIT for ``wait_replicas`` replicas (pipelined: one round trip),
        with :meth:`RedisStore.apply`'s fault model."""
        try:
            pipe, node = self._pipeline(client, "EVALSHA", args, options)
            replies = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], redis_errors().NoScriptError):
                args[0] = src
                pipe, node = self._pipeline(client, "EVAL", args, options)
                replies = await pipe.execute(raise_on_error=False)
            reply = self._reply(client, args, node, replies)
        except (redis_errors().RedisError, OSError) as exc:
            raise self.breaker.failed(op, exc, epoch, probe) from exc
        except WRONG_LOOP as exc:  # a client used from another event loop (async only)
            raise self.breaker.wrong_loop(exc, probe) from exc
        except BaseException:
            if probe:
                self.breaker.abandon()
            raise
        return self._result(op, reply)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def run(
        self,
        op: Any,
        client: Any,
        args: list[Any],
        src: str,
        options: dict[str, Any],
        epoch: int,
        probe: bool,
    ) -> Any:
        """Run the script, then WAIT for ``wait_replicas`` replicas (pipelined: one round trip),
        with :meth:`RedisStore.apply`'s fault model."""
        try:
            pipe, node = self._pipeline(client, "EVALSHA", args, options)
            replies = pipe.execute(raise_on_error=False)
            if isinstance(replies[0], redis_errors().NoScriptError):
                args[0] = src
                pipe, node = self._pipeline(client, "EVAL", args, options)
                replies = pipe.execute(raise_on_error=False)
            reply = self._reply(client, args, node, replies)
        except (redis_errors().RedisError, OSError) as exc:
            raise self.breaker.failed(op, exc, epoch, probe) from exc
        except NO_LOOP as exc:  # a client used from another event loop (async only)
            raise self.breaker.wrong_loop(exc, probe) from exc
        except BaseException:
            if probe:
                self.breaker.abandon()
            raise
        return self._result(op, reply)

    # twin: end
