"""The ``paygentic-costs`` command: serve, demo, summary, doctor, rates, reprice.

Each subcommand's help is its function's docstring. ``main(argv)`` returns the exit code, so it is testable
in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the local Paygentic-compatible server (development, tests and demos only; needs the [server] extra)."""
    try:
        from ..server import serve
    except ImportError:
        print("the local server needs its extra: pip install 'paygentic-costs[server]'", file=sys.stderr)
        return 2
    print(f"paygentic-costs local server on http://{args.host}:{args.port} (store: {args.db}); Ctrl-C to stop")
    serve(host=args.host, port=args.port, db_path=args.db)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Start a local server and a simulated provider, run a multi-customer workload through the real SDKs, and
    print the cost per customer, by provider and operation, and per hour."""
    from ._demo import run_demo

    return run_demo(jobs_per_customer=args.jobs, keep_serving=args.keep_serving)


def _cmd_summary(args: argparse.Namespace) -> int:
    """Show each cost metric's total over a period (any Paygentic-compatible server); a table, or --json."""
    from ._summary import run_summary

    return run_summary(args)


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Check the set-up: installed SDKs and integrations, the endpoint, and whether the key works (never shown)."""
    from ._doctor import run_doctor

    return run_doctor(args)


def _cmd_rates_show(args: argparse.Namespace) -> int:
    """Show the price of PROVIDER:MODEL per million tokens of each bucket, and which rate entry supplies it."""
    from ._rates import run_rates_show

    return run_rates_show(args)


def _cmd_reprice(args: argparse.Namespace) -> int:
    """Price held (unpriced) usage with the current rate file and send what now has a price."""
    import paygentic_costs as pc

    pc.configure(rates=args.rates)
    from .. import _runtime

    held = _runtime.get_runtime().unpriced.load()
    print(f"{len(held)} held cost(s) in {_runtime.get_runtime().unpriced.path}")
    sent = pc.reprice()
    delivered = pc.flush(timeout=args.timeout)
    print(
        f"re-priced and sent {sent}; {len(held) - sent} still have no rate; delivered: {'yes' if delivered else 'no'}"
    )
    pc.shutdown()
    return 0 if delivered else 1


def _cmd_rates(args: argparse.Namespace) -> int:
    """Inspect the rate table: rates show PROVIDER:MODEL."""
    build_parser().parse_args(["rates", "--help"])
    return 2


def _cmd_spool(args: argparse.Namespace) -> int:
    """Show pending and set-aside events in the spool (per file); `retry` re-queues set-aside events still inside
    the 23 h dedup horizon; `export [PATH]` writes pending and set-aside events as JSONL (stdout by default)."""
    from ._spool import run_spool

    return run_spool(args)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="API base URL (default: PAYGENTIC_BASE_URL or https://api.paygentic.io)")
    parser.add_argument("--api-key", help="API key (default: PAYGENTIC_API_KEY); prefer the environment variable")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="paygentic-costs",
        description="Record what it costs to serve each customer and ship it to Paygentic cost tracking.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Command) -> argparse.ArgumentParser:
        doc = (handler.__doc__ or "").strip()
        sub = commands.add_parser(name, help=doc.split("\n")[0], description=doc)
        sub.set_defaults(handler=handler)
        return sub

    serve = add("serve", _cmd_serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--db", default="paygentic-local.db", help="SQLite file (default: ./paygentic-local.db)")

    demo = add("demo", _cmd_demo)
    demo.add_argument("--jobs", type=int, default=4, help="jobs per customer (default 4)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the local server running afterwards")

    summary = add("summary", _cmd_summary)
    _add_connection(summary)
    summary.add_argument("--cost", action="append", dest="costs", help="cost id (repeatable; default: all costs)")
    summary.add_argument("--hours", type=float, default=24.0, help="period: the last N hours (default 24)")
    summary.add_argument("--group-by", help="comma-separated dimensions, e.g. provider,model")
    summary.add_argument("--customer", help="only this customer (subject)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")

    doctor = add("doctor", _cmd_doctor)
    _add_connection(doctor)

    rates = add("rates", _cmd_rates)
    rates_cmds = rates.add_subparsers(dest="rates_command", metavar="ACTION")
    show = rates_cmds.add_parser(
        "show", help=(_cmd_rates_show.__doc__ or "").strip(), description=_cmd_rates_show.__doc__
    )
    show.add_argument("model", help="PROVIDER:MODEL, e.g. openai:gpt-4o-mini")
    show.add_argument("--rates", help="rate file (default: PAYGENTIC_COSTS_RATES)")
    show.set_defaults(handler=_cmd_rates_show)

    reprice = add("reprice", _cmd_reprice)
    reprice.add_argument("--rates", help="rate file (default: PAYGENTIC_COSTS_RATES)")
    reprice.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")

    spool = add("spool", _cmd_spool)
    spool.add_argument("action", nargs="?", choices=["show", "retry", "export"], default="show")
    spool.add_argument("target", nargs="?", help="export: the JSONL file to write (default: stdout)")
    spool.add_argument("--spool-dir", help="spool directory (default: PAYGENTIC_COSTS_SPOOL_DIR or <state dir>/spool)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
