"""``python -m resilience`` (and the ``resilience`` console script).

Options:
    --version: print the distribution name and its installed version, e.g.
        ``resilience-policies 0.1.0``.

Commands:
    simulate SCENARIO [--plot out.png] [--every N] [--only NAME ...]: run a scenario's policy
        pipelines on a virtual clock, print a per-second table per pipeline and the runs side by
        side, and draw a plot (needs matplotlib: ``pip install "resilience-policies[plot]"``).
    dashboard [--redis URL] [--prefix P] [--host 127.0.0.1] [--port 8765]: serve the live
        dashboard (needs uvicorn) of every process publishing its policies' state to the Redis
        store at URL (``Live.publish``); binds to loopback unless ``--allow-remote`` is given.

Example:
    >>> main(["--help"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["DISTRIBUTION", "main", "version_line"]

DISTRIBUTION = "resilience-policies"
"""The name this library is published and installed under (its import names are ``resilience``
and ``interceptors``)."""


def version_line() -> str:
    """What ``--version`` prints: the distribution name and its installed version.

    The version comes from the installed metadata; ``0+unknown`` when the distribution is not
    installed (the sources imported from a checkout).

    Example:
        >>> version_line().startswith("resilience-policies ")
        True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:
        installed = "0+unknown"
    return f"{DISTRIBUTION} {installed}"


class _VersionAction(argparse.Action):
    # like action="version", but the metadata is read only when --version is given
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="print the distribution name and version, then exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_line())
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the command line; returns the exit status.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.json"
        >>> _ = p.write_text('{"duration": 2, "load": {"rate": 5}, "pipelines": {"none": []}}')
        >>> main(["simulate", str(p), "--quiet"])  # doctest: +ELLIPSIS
        scenario: s (2 s simulated ...
        0
    """
    from .simulate import DESCRIPTION, HELP

    parser = argparse.ArgumentParser(
        prog="resilience",
        description="Command line of the resilience library (python -m resilience, or the "
        "resilience console script).",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help=HELP, description=DESCRIPTION)
    sim.add_argument("scenario", help="a .toml or .json scenario file")
    sim.add_argument("--plot", metavar="PNG", help="draw the runs into this PNG (matplotlib)")
    sim.add_argument("--every", type=int, default=1, help="table rows aggregate N seconds")
    sim.add_argument("--only", nargs="+", metavar="NAME", help="run only these pipelines")
    sim.add_argument("--quiet", action="store_true", help="print only the side-by-side summary")
    dash = sub.add_parser(
        "dashboard",
        help="serve the live dashboard of the policies (loopback only by default)",
        description="Serve the live dashboard: every process publishing its policies' state "
        "to the Redis store (resilience.instrumentation.Live.publish), merged. It exposes "
        "internals: keep it on loopback or behind an authenticating proxy.",
    )
    dash.add_argument("--redis", metavar="URL", help="read the fleet's snapshots from this Redis")
    dash.add_argument("--prefix", default="resilience", help="the RedisStore key prefix")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    dash.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    dash.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (the page has no authentication)",
    )
    args = parser.parse_args(argv)
    if args.command == "dashboard":
        from ._dashboard_cli import serve

        return serve(args.redis, args.prefix, args.host, args.port, args.allow_remote)

    import time

    from .errors import ConfigurationError
    from .simulate import format_summary, format_table, load_scenario, plot, simulate

    try:
        scenario = load_scenario(args.scenario)
        started = time.perf_counter()
        result = simulate(scenario, only=args.only)
    except (ConfigurationError, OSError) as exc:
        print(f"resilience simulate: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        f"scenario: {scenario.name} ({scenario.duration:g} s simulated per pipeline, "
        f"{len(result.runs)} pipeline(s), {elapsed:.1f} s real)"
    )
    for start, end, label in scenario.fault_windows():
        print(f"  fault {start:>5g}-{end:<5g} s  {label}")
    if not args.quiet:
        for run in result.runs:
            print(f"\n== {run.name} ==")
            print(format_table(run, every=max(1, args.every)))
            for t, name, frm, to, reason in run.transitions:
                print(f"  {t:8.2f} s  breaker {name}: {frm} -> {to} ({reason})")
    print()
    print(format_summary(result))
    if args.plot:
        try:
            out = plot(result, args.plot)
        except ImportError:
            print(
                "--plot needs matplotlib: pip install 'resilience-policies[plot]'", file=sys.stderr
            )
            return 2
        print(f"\nplot written to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
