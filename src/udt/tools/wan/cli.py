"""``udt-wan`` / ``python -m udt.tools.wan``: build the link, run a command or wait, print counters.

With ``-- CMD ...`` the command runs in the root namespace with ``WAN_LEFT_NS``, ``WAN_RIGHT_NS``,
``WAN_SENDER_NS`` (space-separated), ``WAN_LEFT_ADDR``, ``WAN_RIGHT_ADDR`` and ``WAN_SENDER_ADDRS``
in its environment (so it can ``ip netns exec "$WAN_RIGHT_NS" iperf3 -s``); without one the tool
prints the namespaces and waits for Ctrl-C.  Either way the counters are printed as JSON at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from udt.tools.wan.link import WanLink, WanUnavailable
from udt.tools.wan.spec import GilbertElliott, LinkSpec, parse_duration_ms, parse_fraction, parse_rate
from udt.units import RATES_HELP


def _schedule(text: str) -> list[tuple[float, str]]:
    """``"10:50Mbit,20:200Mbit"`` → [(10.0, "50Mbit"), (20.0, "200Mbit")]."""
    entries = []
    for item in text.split(","):
        seconds, _, rate = item.partition(":")
        parse_rate(rate)
        entries.append((float(seconds), rate))
    return entries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udt-wan",
        description="Emulated WAN link between network namespaces (TUN forwarder). " + RATES_HELP,
    )
    parser.add_argument("--rate", required=True, help="bottleneck rate, e.g. 200Mbit")
    parser.add_argument("--delay", default="0ms", help="one-way delay, each direction (e.g. 50ms)")
    parser.add_argument("--jitter", default="0ms", help="uniform ± jitter on the delay (no reordering)")
    parser.add_argument("--queue", default="100ms", help="drop-tail queue in time at the rate")
    parser.add_argument("--queue-packets", type=int, default=0, help="drop-tail queue in packets")
    parser.add_argument("--loss", default="0", help="random loss each way, e.g. 1%% or 0.01")
    parser.add_argument("--ge-loss", help="Gilbert-Elliott mean loss (with --ge-burst)")
    parser.add_argument("--ge-burst", type=float, default=5.0, help="Gilbert-Elliott mean burst, packets")
    parser.add_argument("--schedule", type=_schedule, default=[], help="rate changes, e.g. 10:50Mbit,20:200Mbit")
    parser.add_argument("--reverse-rate", help="rate right→left (default: --rate)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--senders", type=int, default=1, help="sender namespaces sharing the bottleneck")
    parser.add_argument("--mtu", type=int, default=1500)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ... run with WAN_* in its environment")
    return parser


def specs(args: argparse.Namespace) -> tuple[LinkSpec, LinkSpec]:
    ge = None if args.ge_loss is None else GilbertElliott.from_mean(parse_fraction(args.ge_loss), args.ge_burst)
    forward = LinkSpec(
        rate=args.rate,
        delay_ms=parse_duration_ms(args.delay),
        jitter_ms=parse_duration_ms(args.jitter),
        queue_ms=parse_duration_ms(args.queue),
        queue_packets=args.queue_packets,
        loss=parse_fraction(args.loss),
        ge=ge,
        seed=args.seed,
        schedule=args.schedule,
    )
    reverse_rate = args.reverse_rate or args.rate
    reverse = dataclasses.replace(forward, rate=reverse_rate, seed=args.seed + 1, schedule=())
    return forward, reverse


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        forward, reverse = specs(args)
    except ValueError as error:
        print(f"udt-wan: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with WanLink(forward, reverse, senders=args.senders, mtu=args.mtu) as wan:
            env = {
                **os.environ,
                "WAN_LEFT_NS": wan.left_ns,
                "WAN_RIGHT_NS": wan.right_ns,
                "WAN_SENDER_NS": " ".join(wan.sender_ns),
                "WAN_LEFT_ADDR": wan.left_addr,
                "WAN_RIGHT_ADDR": wan.right_addr,
                "WAN_SENDER_ADDRS": " ".join(wan.sender_addrs),
            }
            if command:
                code = subprocess.run(command, env=env).returncode
            else:
                print(json.dumps({key: env[key] for key in env if key.startswith("WAN_")}, indent=1), flush=True)
                print("link up; Ctrl-C to stop", file=sys.stderr, flush=True)
                try:
                    stop.wait()
                except KeyboardInterrupt:
                    pass
                code = 0
            print(json.dumps(wan.counters(), indent=1))
            return code
    except WanUnavailable as error:
        print(f"udt-wan: cannot build the link here: {error}", file=sys.stderr)
        return 1
