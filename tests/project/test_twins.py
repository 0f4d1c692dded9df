"""The sync twins are generated from their async source (scripts/twins.py) and never stale."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .twins_tool import twins

ROOT = Path(__file__).resolve().parent.parent.parent


#: Sync/async pairs that are deliberately not twins: the sync side does something else, not the
#: same thing without ``await`` ("module:Class.method" -> why).
HAND_WRITTEN: dict[str, str] = {
    # idempotency and stores
    "resilience/idempotency/_claim.py:apply_op": (
        "the async side also drives a sync-only store (its apply() when there is no aapply()); "
        "the error translation is shared (_store_failed)"
    ),
    "resilience/idempotency/_renewer.py:start": (
        "sync claims are renewed by the shared daemon thread (or a fake clock's timers), async "
        "ones by timers of the running event loop; the beat is built once (_new_beat)"
    ),
    "resilience/lock/_beat.py:start": (
        "sync holds are renewed by the lock's shared daemon thread (or a fake clock's timers), "
        "async ones by timers and tasks of the running event loop; the renewal itself is a twin"
    ),
    "resilience/stores/memory.py:MemoryStore.apply": (
        "aapply() calls apply() (no I/O to await), so a subclass overriding apply() changes both"
    ),
    "resilience/stores/redis/_store.py:RedisStore.apply": (
        "sync: the store's one sync client and the direct path of a plain redis.Redis; async: the "
        "running loop's client (a thread for a sync-only store); the decisions are shared "
        "(_call, Breaker, parse_reply, Durable)"
    ),
    "resilience/stores/redis/_store.py:RedisStore.close": (
        "closes the one sync client, its kept direct connection and its sentinels; aclose() "
        "closes the running event loop's async client"
    ),
    "resilience/stores/redis/_store.py:RedisStore.sync_client": (
        "not the twin of async_client(): one sync client per store (made under a lock) versus "
        "one async client per event loop (LoopClients)"
    ),
    # adapters
    "interceptors/grpc/_common.py:ReplayBuffer.messages": (
        "sync grpc pulls each attempt's request stream on a thread of its own, so reads of the "
        "shared source hold a lock; amessages runs on one loop and accepts sync or async sources"
    ),
    # -- clocks: the sleeps are the primitives the twins rename to each other
    "resilience/_clock.py:Clock.sleep": "protocol primitive: blocking the thread is not "
    "suspending the task",
    "resilience/_clock.py:SystemClock.sleep": "time.sleep (nothing for <= 0) vs asyncio.sleep "
    "(always yields to the loop, the scheduling point a task relies on)",
    "resilience/testing.py:FakeClock.sleep": "advances fake time at once; the async sleep steps "
    "through armed deadlines and yields so a deadline that fires cancels the sleeping task",
    # -- timeout: Python cannot cancel running sync code
    "resilience/_timeout.py:Timeout.wrap_sync": "a published deadline checked after the call "
    "(or a worker thread waited for) instead of the async side's task cancellation at the "
    "deadline (a deadline wheel entry or the clock's deadline scope)",
    # -- hedge: concurrent attempts need cancellable tasks
    "resilience/_hedge/_policy.py:Hedge.wrap_sync": "refuses sync functions "
    "(ConfigurationError): a sync attempt that lost the race could not be cancelled",
}

#: A sync method and its async counterpart, by name.
_PAIRS = [("wrap_sync", "wrap_async")]


def test_no_twin_is_stale() -> None:
    stale = twins.run(check=True)
    assert stale == [], f"stale twins (run `python scripts/twins.py`): {stale}"


def _generated_lines(lines: list[str]) -> set[int]:
    inside: set[int] = set()
    for block in twins.find_blocks(lines, "?"):
        inside.update(range(block.twin_start + 1, block.twin_end + 1))  # 1-based line numbers
    return inside


def _mirrored_methods() -> list[tuple[str, int, set[int]]]:
    """(``module:Class.method``, line, generated lines of its module) of every sync method
    whose class also defines the async counterpart (``x``/``ax``, ``wrap_sync``/``wrap_async``)."""
    found: list[tuple[str, int, set[int]]] = []
    for package in twins.PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            generated = _generated_lines(text.splitlines(keepends=True))
            module = str(path.relative_to(ROOT))
            tree = ast.parse(text)
            scopes: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
            scopes += [
                (f"{node.name}.", node.body)
                for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef)
            ]
            for prefix, body in scopes:
                defs = {
                    item.name: item
                    for item in body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                pairs = list(_PAIRS) + [(n, "a" + n) for n in defs if not n.startswith("_")]
                for sync, asyn in pairs:
                    if sync in defs and asyn in defs:
                        item = defs[sync]
                        found.append((f"{module}:{prefix}{sync}", item.lineno, generated))
    return found


def test_every_mirrored_method_is_a_generated_twin_or_says_why() -> None:
    mirrored = _mirrored_methods()
    assert mirrored, "the scan found no sync/async pair at all"
    hand = [name for name, line, generated in mirrored if line not in generated]
    unexplained = sorted(set(hand) - set(HAND_WRITTEN))
    assert unexplained == [], (
        "sync methods mirroring an async one by hand; write the async one between "
        "'# twin: async' / '# twin: end' and generate the twin, or explain in HAND_WRITTEN: "
        f"{unexplained}"
    )
    assert not set(HAND_WRITTEN) - set(hand), "HAND_WRITTEN lists a method that is generated now"


# -- the transformation -------------------------------------------------------------------------
def test_unasync_drops_async_and_await_and_renames_names_comments_and_strings() -> None:
    source = (
        "    async def wrap_async(self, fn: AsyncFn) -> AsyncFn:\n"
        '        """Await fn; asleep between attempts."""\n'
        "        async with self.lock:  # asleep here\n"
        "            async for x in self.items():\n"
        "                await asleep(1)\n"
        "        return await fn(await other(), 'acall')\n"
    )
    assert twins.unasync(source, twins.NAMES) == (
        "    def wrap_sync(self, fn: SyncFn) -> SyncFn:\n"
        '        """Await fn; sleep between attempts."""\n'
        "        with self.lock:  # sleep here\n"
        "            for x in self.items():\n"
        "                sleep(1)\n"
        "        return fn(other(), 'call')\n"
    )


def test_unasync_keeps_names_that_merely_contain_a_mapped_name() -> None:
    source = "x = asleeper + my_acall + acall_count\n"
    assert twins.unasync(source, twins.NAMES) == source


def test_await_on_its_own_line_is_refused() -> None:
    with pytest.raises(twins.TwinError, match="share a line"):
        twins.unasync("x = (await\n    f())\n", twins.NAMES)


def test_extra_replacements_of_a_block() -> None:
    text = (
        "class A:\n"
        "    # twin: async acomplete=complete, AsyncClient=Client\n"
        "    async def acomplete(self, c: AsyncClient) -> None:\n"
        "        await c.aclose()\n"
        "\n"
        "    # twin: end\n"
    )
    out = twins.generate(text, "t.py")
    assert "    def complete(self, c: Client) -> None:\n        c.close()\n" in out
    # more replacements on continuation lines
    longer = text.replace(", AsyncClient=Client\n", "\n    # twin: + AsyncClient=Client\n")
    assert "    def complete(self, c: Client) -> None:\n" in twins.generate(longer, "t.py")
    assert out.count("# twin: end") == 2
    # regenerating is idempotent
    assert twins.generate(out, "t.py") == out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# twin: async\nasync def f() -> None: ...\n", "without '# twin: end'"),
        ("# twin: async\n# twin: async\n# twin: end\n", "inside another block"),
        ("# twin: async bad-name\n# twin: end\n", "bad replacement"),
        (
            "# twin: async\nasync def f() -> None: ...\n# twin: end\n# twin: sync (x)\n",
            "generated twin without",
        ),
    ],
)
def test_malformed_blocks_are_named(text: str, message: str) -> None:
    with pytest.raises(twins.TwinError, match=message):
        twins.generate(text, "t.py")


def test_check_reports_a_stale_twin_and_the_rewrite_fixes_it(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "# twin: async\n"
        "async def f(fn: AsyncFn) -> None:\n"
        "    await fn()\n"
        "\n"
        "\n"
        "# twin: end\n"
        "# twin: sync (generated from the block above by scripts/twins.py; do not edit)\n"
        "def f_drifted(fn: SyncFn) -> None:\n"
        "    fn(1)\n"
        "\n"
        "\n"
        "# twin: end\n",
        encoding="utf-8",
    )
    assert twins.run(check=True, paths=[tmp_path]) == [module]
    assert "f_drifted" in module.read_text(encoding="utf-8")  # --check writes nothing
    assert twins.run(check=False, paths=[tmp_path]) == [module]
    fixed = module.read_text(encoding="utf-8")
    assert "def f(fn: SyncFn) -> None:\n    fn()\n" in fixed
    assert twins.run(check=True, paths=[tmp_path]) == []
