"""The command line (``udt-impair``, ``python -m udt.tools.impair``): the argument parsers,
the counters' printing and :func:`main`."""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from udt.tools.impair._child import _serve_child
from udt.tools.impair._common import DIRECTIONS, Address
from udt.tools.impair.relay import Relay
from udt.tools.impair.settings import GilbertElliott, Impairment
from udt.tools.impair.stats import RelayStats
from udt.units import parse_rate_bps, parse_size

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_duration(text: str) -> float:
    """'20ms', '1.5s', '500us' -> seconds. A bare number is refused (unit ambiguity), except 0."""
    match = re.fullmatch(_NUMBER + r"\s*(us|µs|ms|s)?", text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 20ms, 1.5s, 500us")
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if value != 0:
            raise ValueError(f"duration {text!r} needs a unit: e.g. {text}ms or {text}s")
        return 0.0
    return value * _DURATION_UNITS[unit]


def parse_interval(text: str) -> float:
    """A reporting interval: a bare number is seconds ('1'), or a duration ('500ms'); > 0."""
    try:
        value = float(text)
    except ValueError:
        value = parse_duration(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"interval {text!r} must be > 0")
    return value


def parse_probability(text: str) -> float:
    """'1%', '0.5%', '0.01' -> a probability in [0, 1]."""
    match = re.fullmatch(_NUMBER + r"\s*(%)?", text.strip())
    if not match:
        raise ValueError(f"bad probability {text!r}: use e.g. 1% or 0.01")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability {text!r} is outside 0..100%")
    return value


def parse_queue(text: str) -> tuple[int | None, int | None]:
    """'256KB', '1MiB', '4000B' -> (bytes, None); '1000p' / '1000pkt' -> (None, packets)."""
    match = re.fullmatch(r"([0-9]+)\s*([a-zA-Z]+)", text.strip())
    if match:
        value, unit = int(match.group(1)), match.group(2).lower()
        if value >= 1 and unit in ("p", "pkt", "pkts", "packets"):
            return None, value
        if value >= 1 and unit.endswith("b"):  # bytes with their unit: B, KB, MiB ... (udt.units)
            try:
                return parse_size(text), None
            except ValueError:
                pass
    raise ValueError(f"bad queue size {text!r}: use e.g. 256KB, 1MiB, 1000p (packets)")


def parse_burst(text: str) -> GilbertElliott:
    """'5%,4' -> mean loss 5 % in bursts of 4 packets on average;
    'ge:P,R[,LOSS_GOOD,LOSS_BAD]' -> explicit Gilbert–Elliott transition/loss probabilities."""
    text = text.strip()
    try:
        if text.startswith("ge:"):
            parts = [parse_probability(p) for p in text[3:].split(",")]
            if len(parts) not in (2, 4):
                raise ValueError("need 2 or 4 values")
            return GilbertElliott(*parts)
        loss, burst = text.split(",")
        return GilbertElliott.from_loss(parse_probability(loss), float(burst))
    except ValueError as exc:
        raise ValueError(
            f"bad burst loss {text!r} ({exc}): use MEAN_LOSS,MEAN_BURST like 5%,4 "
            "or ge:P_GOOD_BAD,P_BAD_GOOD[,LOSS_GOOD,LOSS_BAD]"
        ) from None


def parse_address(text: str) -> Address:
    """'127.0.0.1:9000', '[::1]:9000', 'localhost:9000' -> (host, port)."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"bad address {text!r}: use HOST:PORT or [IPV6]:PORT")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"bad port in {text!r}")
    return (host, port)


_CLI_OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("delay", parse_duration, "fixed one-way delay, e.g. 20ms"),
    ("jitter", parse_duration, "delay varies uniformly by +- this (FIFO kept), e.g. 2ms"),
    ("loss", parse_probability, "random (Bernoulli) loss, e.g. 1%%"),
    ("burst-loss", parse_burst, "bursty loss MEAN_LOSS,MEAN_BURST (e.g. 5%%,4) or ge:P,R[,LG,LB]"),
    ("reorder", parse_probability, "probability a packet is overtaken by the next ones, e.g. 0.5%%"),
    ("reorder-distance", int, "how many packets overtake a reordered one (default 1)"),
    ("reorder-timeout", parse_duration, "longest hold of a reordered packet (default 50ms)"),
    ("duplicate", parse_probability, "duplication probability, e.g. 0.1%%"),
    ("duplicate-delay", parse_duration, "gap before the duplicate (default 0)"),
    ("corrupt", parse_probability, "payload corruption probability, e.g. 0.01%%"),
    ("corrupt-bits", int, "bits flipped per corrupted packet (default 1)"),
    ("rate", parse_rate_bps, "link rate in bits/s, e.g. 100mbit, 1Gbps (or 12.5MB/s in bytes/s)"),
    ("queue", parse_queue, "drop-tail queue, e.g. 256KB or 1000p (default 1000p with --rate)"),
]


def _impairment_from_args(args: argparse.Namespace, prefix: str) -> Impairment:
    fields: dict[str, Any] = {}
    for name, _parser, _help in _CLI_OPTIONS:
        value = getattr(args, (prefix + name).replace("-", "_"))
        if value is None:
            continue
        if name == "burst-loss":
            fields["burst"] = value
        elif name == "queue":
            fields["queue_bytes"], fields["queue_packets"] = value
        else:
            fields[name.replace("-", "_")] = value
    return Impairment(**fields)


def _argument_type(parser: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parser(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parser.__name__.replace("parse_", "")
    return convert


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m udt.tools.impair",
        description="UDP impairment relay: A sends to --listen, the relay forwards to --target (B) "
        "and B's replies back to A, delaying, losing, reordering, duplicating, corrupting "
        "and rate-limiting as told. Plain options shape A->B; --b-to-a-* options shape "
        "B->A (untouched unless given). Ctrl-C stops and prints the counters.",
    )
    parser.add_argument(
        "--listen",
        type=_argument_type(parse_address),
        default=None,
        help="address A sends to, HOST:PORT or [IPV6]:PORT (default: loopback, any port)",
    )
    parser.add_argument(
        "--target", type=_argument_type(parse_address), required=True, help="address of B, HOST:PORT or [IPV6]:PORT"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for every random decision (default 0)")
    parser.add_argument(
        "--stats-interval",
        type=_argument_type(parse_interval),
        default=None,
        metavar="SECONDS",
        help="print counters this often: seconds (1) or a duration (500ms)",
    )
    parser.add_argument("--json", action="store_true", help="print counters as JSON lines")
    parser.add_argument("--max-clients", type=int, default=1024, help="most A-side sources served (default 1024)")
    for prefix, label in (("", "A->B"), ("b-to-a-", "B->A")):
        group = parser.add_argument_group(f"{label} impairment")
        for name, convert, text in _CLI_OPTIONS:
            group.add_argument(
                f"--{prefix}{name}",
                type=_argument_type(convert),
                default=None,
                metavar=convert.__name__.replace("parse_", "").upper(),
                help=text,
            )
    return parser


def _format_stats(stats: RelayStats, as_json: bool) -> str:
    if as_json:
        return json.dumps(_json_safe(stats.as_dict()))
    lines = [f"clients {stats.clients} (rejected {stats.rejected_clients})"]
    for name in DIRECTIONS:
        s = stats[name]
        delay = (
            f"delay min/mean/max {s.delay_min * 1e3:.3f}/{s.delay_mean * 1e3:.3f}/{s.delay_max * 1e3:.3f} ms"
            if s.forwarded
            else "delay -"
        )
        lines.append(
            f"{name}: received {s.received} forwarded {s.forwarded} lost {s.dropped_loss} "
            f"queue-dropped {s.dropped_queue} filtered {s.dropped_filter} send-failed {s.dropped_send} "
            f"duplicated {s.duplicated} reordered {s.reordered} corrupted {s.corrupted} "
            f"bytes {s.bytes_in}->{s.bytes_out} in-flight {s.in_flight} {delay}"
        )
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--serve-fds":  # internal: Relay(process=True)'s child
        command_fd, reply_fd = (int(x) for x in argv[1].split(","))
        return _serve_child(command_fd, reply_fd)
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        a_to_b = _impairment_from_args(args, "")
        b_to_a = _impairment_from_args(args, "b-to-a-")
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            relay = Relay(
                args.target, args.listen, a_to_b=a_to_b, b_to_a=b_to_a, seed=args.seed, max_clients=args.max_clients
            )
        except (ValueError, OSError) as exc:
            print(f"impair: {exc}", file=sys.stderr)
            return 2
        with relay:
            host, port = relay.address[0], relay.address[1]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            print(
                f"impair: relaying {shown} -> {args.target[0]}:{args.target[1]}\n"
                f"  a_to_b: {a_to_b}\n  b_to_a: {b_to_a}",
                file=sys.stderr,
                flush=True,
            )
            interval = args.stats_interval
            next_print = time.monotonic() + interval if interval else math.inf
            while not stop.wait(min(1.0, max(0.0, next_print - time.monotonic()))):
                if time.monotonic() >= next_print:
                    print(_format_stats(relay.stats(), args.json), flush=True)
                    next_print += interval
        print(_format_stats(relay.stats(), args.json), flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
