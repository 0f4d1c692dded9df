"""An at-least-once Redis Streams consumer whose side effect happens once per message.

A consumer group delivers each message to one consumer (``XREADGROUP``) and keeps it *pending*
until the consumer acknowledges it (``XACK``). A consumer that dies before its ack, even after
doing the work, leaves the message pending; another consumer claims it (``XAUTOCLAIM``) and
gets it again. That redelivery is what makes the queue at-least-once, and it is why the work is
wrapped in :class:`resilience.Idempotent` keyed by the message id, with the records in the
same Redis (:class:`resilience.RedisStore`): the redelivered message finds the completed record
and is *replayed* (the stored result is returned, the side effect does not run again), then
acked.

Records are scoped to ``stream + group`` with :func:`resilience.idempotency.caller_scope`
(stream ids are unique per stream only, and two groups are two independent subscribers), and
the scope says whether the message was replayed.

The window this does not close: a crash *inside* the side effect, after it took effect but
before the record completed. The claim's lease then expires and the next consumer runs the
effect again, so an effect on another system should itself be idempotent or transactional (an
upsert keyed by the message id); see docs/policies/idempotency.md.

Run (a Redis you own; ``--pause-before-ack`` demonstrates the crash window)::

    python -m examples.stream_consumer --redis redis://127.0.0.1:6380/0 --publish 3
    python -m examples.stream_consumer --redis redis://127.0.0.1:6380/0 --once
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

import resilience as rs
from resilience.idempotency import caller_scope

__all__ = ["StreamConsumer", "main"]

Effect = Callable[[str, dict[str, str]], str]


@dataclass
class StreamConsumer:
    """One consumer of a consumer group, deduplicating by message id.

    Args:
        client: a sync redis-py client with ``decode_responses=True`` (the stream's Redis).
        store: where the idempotency records live (shared by every consumer of the group).
        effect: ``effect(message_id, fields) -> str``, the side effect (returns a receipt).
        stream, group, consumer: the stream, the consumer group and this consumer's name.
        claim_idle_ms: a message pending this long on another consumer is presumed abandoned
            (its consumer died) and claimed. Keep it well above the time one message takes.
        lease: seconds an idempotency claim lives without renewal (renewed while running).
        before_ack: called after the effect and before ``XACK`` (for demonstrations/tests).

    Example::

        client = redis.Redis.from_url(url, decode_responses=True)
        consumer = StreamConsumer(
            client=client,
            store=rs.RedisStore.from_url(url, prefix="consumer"),
            effect=ledger_effect(client, "ledger"),
        )
        consumer.run()  # XAUTOCLAIM abandoned messages, XREADGROUP new ones, XACK each
    """

    client: Any
    store: Any
    effect: Effect
    stream: str = "orders"
    group: str = "billing"
    consumer: str = field(default_factory=lambda: f"consumer-{os.getpid()}")
    claim_idle_ms: int = 30_000
    lease: float = 30.0
    before_ack: Callable[[str], None] | None = None
    handled: list[tuple[str, str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._run = rs.Idempotent(
            key=lambda message_id, fields: message_id,
            store=self.store,
            lease=self.lease,
            name=f"stream-{self.group}",
        )(self.effect)

    def ensure_group(self) -> None:
        """Create the group (from the stream's start) unless it exists."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def handle(self, message_id: str, fields: dict[str, str]) -> None:
        """Run the effect at most once for this message, then acknowledge it."""
        with caller_scope(f"{self.stream}/{self.group}") as scope:
            receipt = self._run(message_id, fields)
        self.handled.append((message_id, receipt, scope.replayed))
        if self.before_ack is not None:
            self.before_ack(message_id)
        self.client.xack(self.stream, self.group, message_id)

    def poll(self, block_ms: int | None = 1000) -> int:
        """One round: claim abandoned messages, then read new ones; returns how many ran."""
        batch: list[tuple[str, dict[str, str]]] = []
        # this consumer's own pending messages (it restarted under the same name) ...
        for _, messages in self.client.xreadgroup(
            self.group, self.consumer, {self.stream: "0"}, count=100
        ):
            batch.extend(m for m in messages if m[1])
        # ... then those left pending by a consumer that died (idle over claim_idle_ms)
        reply = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=100
        )
        batch.extend((mid, f) for mid, f in reply[1] if f)
        if not batch:
            for _, messages in (
                self.client.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=100, block=block_ms
                )
                or ()
            ):
                batch.extend(messages)
        for message_id, fields in batch:
            self.handle(message_id, fields)
        return len(batch)

    def run(self, *, once: bool = False) -> None:
        """Consume until interrupted (``once``: until no message is left)."""
        self.ensure_group()
        while True:
            n = self.poll(block_ms=None if once else 1000)
            if once and n == 0:
                return


def ledger_effect(client: Any, ledger: str) -> Effect:
    """The example's side effect: append the order to a ledger list (a charge)."""

    def charge(message_id: str, fields: dict[str, str]) -> str:
        client.rpush(ledger, f"{fields.get('order', '?')}:{message_id}")
        return f"charged {fields.get('order', '?')}"

    return charge


def main(argv: list[str] | None = None) -> int:
    """Command line: publish orders, or consume them (see the module documentation)."""
    ap = argparse.ArgumentParser(prog="python -m examples.stream_consumer")
    ap.add_argument("--redis", required=True, help="redis:// URL of a Redis you own")
    ap.add_argument("--stream", default="orders")
    ap.add_argument("--group", default="billing")
    ap.add_argument("--consumer", default=f"consumer-{os.getpid()}")
    ap.add_argument("--ledger", default="ledger", help="list the side effect appends to")
    ap.add_argument("--claim-idle-ms", type=int, default=30_000)
    ap.add_argument("--publish", type=int, default=0, help="add N orders and exit")
    ap.add_argument("--once", action="store_true", help="exit when no message is left")
    ap.add_argument(
        "--pause-before-ack",
        metavar="LIST",
        help="after each effect, RPUSH the message id to LIST and block before acking "
        "(shows the crash window: kill -9 the consumer now)",
    )
    args = ap.parse_args(argv)
    client = redis.Redis.from_url(args.redis, decode_responses=True)
    if args.publish:
        for i in range(args.publish):
            client.xadd(args.stream, {"order": f"order-{i + 1}"})
        return 0

    def pause(message_id: str) -> None:
        client.rpush(args.pause_before_ack, message_id)
        client.blpop([f"{args.pause_before_ack}:go"], timeout=0)  # until killed (or told)

    consumer = StreamConsumer(
        client=client,
        store=rs.RedisStore.from_url(args.redis, prefix="consumer"),
        effect=ledger_effect(client, args.ledger),
        stream=args.stream,
        group=args.group,
        consumer=args.consumer,
        claim_idle_ms=args.claim_idle_ms,
        before_ack=pause if args.pause_before_ack else None,
    )
    try:
        consumer.run(once=args.once)
    finally:
        for message_id, receipt, replayed in consumer.handled:
            print(f"{message_id} {'replayed' if replayed else 'ran'}: {receipt}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
