"""``udt-flood``: flood a listener with spoofed handshakes from the shell (root)."""

from __future__ import annotations

import argparse
import json
import sys

from udt.tools.flood import KINDS, Flood, FloodResult, raw_sockets_available


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        mix[kind] = float(weight or 1)
    return mix


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="udt-flood", description=__doc__)
    p.add_argument("target", type=_target, help="the listener, IPv4 HOST:PORT")
    p.add_argument("--rate", type=float, default=50_000, help="datagrams per second (0: as fast as possible)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to flood")
    p.add_argument("--sources", type=int, default=4096, help="distinct spoofed (address, port) pairs in 127/8")
    p.add_argument("--mix", type=_mix, default=None, help="kinds and weights, e.g. induction=3,conclusion=1")
    p.add_argument("--cookie", type=lambda s: int(s, 0), default=0, help="the cookie the replay kind sends")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    reason = raw_sockets_available()
    if reason is not None:
        print(f"udt-flood: {reason}", file=sys.stderr)
        return 2
    flood = Flood(
        args.target,
        args.rate,
        sources=args.sources,
        mix=args.mix,
        seconds=args.seconds,
        seed=args.seed,
        cookie=args.cookie,
    )
    result: FloodResult | None
    try:
        result = flood.run()
    except KeyboardInterrupt:
        result = flood.stop()
    if result is None:
        return 1
    figures = {"sent": result.sent, "errors": result.errors, "seconds": result.seconds, "rate": result.rate}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"sent {result.sent} datagrams in {result.seconds:.2f} s ({result.rate:,.0f}/s), {result.errors} errors")
    return 0
