"""Serve the fake Paygentic in this process, every answer delayed by ``--delay`` seconds; prints the URL and stops
when stdin closes. ``GET /_ledger`` returns what it stored."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load_fake


def main(argv: list[str]) -> None:
    options = dict(arg.lstrip("-").split("=", 1) for arg in argv)
    fp = load_fake()
    delay = float(options.get("delay", "0"))

    def script(info: Any) -> Any:
        return fp.respond(202, delay=delay) if info.body is not None and delay > 0 else None

    with fp.FakePaygentic(token=options.get("token") or None, script=script) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
