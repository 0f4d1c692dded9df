"""The Redis store: shared state for many processes and hosts, one round trip per decision.

Every operation is one ``EVALSHA`` of a Lua twin of the operation's pure ``apply`` function, run
atomically on the server with the server's clock (``TIME``), so hosts with skewed clocks agree.

* **Scripts** are loaded lazily, cached by SHA, and reloaded transparently on ``NOSCRIPT``
  (restart, failover, ``SCRIPT FLUSH``).
* **Keys**: ``<prefix>:{<sha256(logical key)[:32]>}:<suffix>``. The user-supplied parts of a key
  (user ids, IPs, routes) are hashed, so keys have a fixed length and cannot inject separators
  or hash tags; every key of one entity shares the hash tag, so multi-key scripts work on Redis
  Cluster. Every key a script writes gets a TTL (except a breaker forced open by ``open()``,
  which lasts until ``close()``/``reset()``). No ``KEYS``/``SCAN`` on hot paths.
* **Faults** (the table in ``docs/redis.md``): ``from_url`` sets bounded socket timeouts (0.25 s
  per reply and per connect by default) and turns off redis-py's automatic command retries: a
  script that timed out may still have run on the server, and re-sending it would apply a
  non-idempotent decision (a permit, a failure count) twice and multiply the latency bound; the
  policy's ``on_store_error`` decides instead. Backend errors become
  :class:`resilience.StoreError` at this boundary. An internal breaker fails fast (no network
  wait) after ``failure_threshold`` failures *in a row* (each from a call that began after the
  previous one failed, so one slow moment that times out many concurrent calls counts once);
  then a single probe at a time tries Redis every ``probe_interval`` (50 ms) and the first that
  reaches it ends the fail-fast. A script error or an unparsable reply (a poisoned key, a bug)
  is that key's :class:`~resilience.StoreError` only: it never counts toward the fail-fast. Each
  policy then applies its ``on_store_error`` decision (limiter ``"open"``, idempotency
  ``"closed"``, breaker ``"local"``). The Lua twins treat an undecodable state (NaN, out of
  range, another type) as absent and delete it; the policy emits
  ``StoreFailed(decision="reset")``.
* **Hot path**: the rate limiter's and breaker's states are single string values of packed
  doubles written with ``SET PX`` (a decision is ``TIME``, ``GET``, ``SET`` inside one script;
  no decimal formatting), their parameters and replies are packed the same way, and with a plain
  ``redis.Redis`` client the store sends the pre-packed ``EVALSHA`` on a connection it keeps
  (redis-py's per-command machinery costs more than the round trip), borrowing from the pool
  under contention. Commands sent this way do not appear in redis-py's own instrumentation.
* **Clients**: ``redis.Redis``, ``redis.asyncio.Redis``, ``redis.cluster.RedisCluster`` and
  ``redis.asyncio.cluster.RedisCluster``; ``from_url`` also takes a ``redis+sentinel://`` URL
  (clients of the master Sentinel names, following failovers). The writes of ``DURABLE``
  operations can wait for replica acknowledgements (``wait_replicas``). A store built by
  :meth:`RedisStore.from_url` serves sync and async policies: one sync client, and one async
  client per event loop (asyncio connections belong to the loop that opened them; each is
  closed when its loop shuts down, with its own sentinel connections for a Sentinel URL, and
  past 16 connections per loop, calls queue for one). A store given only a sync client runs
  async operations in a worker thread; one given only an async client cannot serve sync code,
  and from another event loop its calls fail with :class:`~resilience.StoreError`. From async
  code nothing blocks the loop: give-backs (a cancelled call's permit, a waiter's reservation)
  run as tasks (:meth:`RedisStore.apply_soon`).

The package's rooms: ``_ops`` (the :class:`RedisOp` protocol, :data:`LUA_NOW`, reply helpers),
``_faults`` (the fail-fast breaker, key errors), ``_clients`` and ``_sentinel`` (client
construction), ``_loops`` (async clients per event loop), ``_direct`` (the kept-connection fast
path), ``_durable`` (``wait_replicas``) and ``_store`` (:class:`RedisStore`).
"""

from __future__ import annotations

from ._ops import LUA_NOW, RedisOp, text, to_us
from ._sentinel import parse_sentinel_url
from ._store import RedisStore

__all__ = ["LUA_NOW", "RedisOp", "RedisStore", "parse_sentinel_url", "text", "to_us"]
