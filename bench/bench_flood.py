"""The listener under a spoofed handshake flood: do legitimate clients still connect, and what
does the flood cost the listener?

The listener is the sink (``udt.tools.flood.sink``) in its own process, so its RSS and CPU are
its own.  Each run: N clients connect one after the other (K at a time), send SIZE bytes and
check the sink's sha256 of them, first unloaded, then while ``udt.tools.flood`` sends RATE
datagrams/s of spoofed inductions, forged conclusions and absurd handshakes from SOURCES
addresses in 127/8 (root: a raw socket).  Reported: the flood rate achieved, connect time
median/p99 unloaded and under the flood with their ratio (the goal: <= 3), the listener's RSS
growth and CPU share (of one core) during the flood, and its handshake replies against the
requests (count, bytes: never more bytes out than in).

    sudo python bench/bench_flood.py [--rate 50000] [--clients 40] [--runs 3] [--json out.json]
    sudo python bench/bench_flood.py --quick       # one short run (the CI smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _tables import figure_table
from udt.tools.flood import Flood, raw_sockets_available
from udt.tools.flood.sink import SinkProcess, exchange
from udt.units import parse_size

HERE = Path(__file__).parent


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _clients(address: tuple[str, int], count: int, parallel: int, size: int, failures: list[str]) -> list[float]:
    """Connect times of count clients (each checks its sha256); failures collects the rest."""
    data = os.urandom(size)

    def one(_: int) -> float | None:
        try:
            return exchange(address, data)
        except (OSError, AssertionError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return None

    with ThreadPoolExecutor(parallel) as pool:
        return [t for t in pool.map(one, range(count)) if t is not None]


def one_run(rate: float, clients: int, parallel: int, size: int, sources: int, settle: float) -> dict[str, Any]:
    with SinkProcess() as sink:
        failures: list[str] = []
        _clients(sink.address, 3, 1, size, failures)  # warm up: imports, first multiplexers
        unloaded = _clients(sink.address, clients, parallel, size, failures)
        before = sink.usage()
        started = time.monotonic()
        with Flood(sink.address, rate, sources=sources) as flood:
            time.sleep(settle)
            loaded = _clients(sink.address, clients, parallel, size, failures)
            time.sleep(settle)
            during = sink.usage()
            wall = time.monotonic() - started
        result = flood.result
        stats = sink.stop()
    assert result is not None
    return {
        "flood_rate": result.rate,
        "flood_sent": result.sent,
        "connect_unloaded_s": unloaded,
        "connect_flood_s": loaded,
        "median_unloaded_ms": statistics.median(unloaded) * 1e3,
        "median_flood_ms": statistics.median(loaded) * 1e3,
        "p99_unloaded_ms": _p99(unloaded) * 1e3,
        "p99_flood_ms": _p99(loaded) * 1e3,
        "ratio": statistics.median(loaded) / statistics.median(unloaded),
        "intact": stats.get("served", 0),
        "failures": failures,
        "load_average": os.getloadavg()[0],
        "shed": stats.get("mux_handshake_shed", 0),
        "clients": 3 + 2 * clients,
        "socket_drops": during.socket_drops - before.socket_drops,
        "rss_before": before.rss_bytes,
        "rss_during": during.rss_bytes,
        "rss_delta": during.rss_bytes - before.rss_bytes,
        "cpu_share": (during.cpu_seconds - before.cpu_seconds) / wall,
        "requests": stats.get("mux_handshake_requests", 0),
        "request_bytes": stats.get("mux_handshake_request_bytes", 0),
        "replies": stats.get("mux_handshake_replies", 0),
        "reply_bytes": stats.get("mux_handshake_reply_bytes", 0),
        "invalid_cookie": stats.get("listener_invalid_cookie", 0),
        "accepted": stats.get("listener_accepted", 0),
    }


def table(runs: list[dict[str, Any]], rate: float) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rows = [
        ("flood rate achieved (datagrams/s)", f"{med('flood_rate'):,.0f} (target {rate:,.0f})"),
        ("connect median unloaded (ms)", f"{med('median_unloaded_ms'):.2f}"),
        ("connect median under flood (ms)", f"{med('median_flood_ms'):.2f}"),
        ("ratio flood/unloaded (goal <= 3)", f"{med('ratio'):.2f}"),
        ("connect p99 unloaded (ms)", f"{med('p99_unloaded_ms'):.2f}"),
        ("connect p99 under flood (ms)", f"{med('p99_flood_ms'):.2f}"),
        ("clients intact (sha256) / started", f"{sum(r['intact'] for r in runs)} / {sum(r['clients'] for r in runs)}"),
        ("datagrams dropped at the listener's full socket buffer", f"{med('socket_drops'):,.0f}"),
        ("connect failures", f"{sum(len(r['failures']) for r in runs)}"),
        ("inductions shed while the worker was behind", f"{med('shed'):,.0f}"),
        ("machine load average (1 min, 2 cores)", f"{med('load_average'):.1f}"),
        ("listener RSS before flood (MiB)", f"{med('rss_before') / 2**20:.1f}"),
        ("listener RSS delta during flood (MiB)", f"{med('rss_delta') / 2**20:+.2f}"),
        ("listener CPU share during flood (of one core)", f"{med('cpu_share') * 100:.1f} %"),
        ("handshakes in / replies out", f"{med('requests'):,.0f} / {med('replies'):,.0f}"),
        (
            "bytes in / bytes out (amplification)",
            f"{med('request_bytes'):,.0f} / {med('reply_bytes'):,.0f} "
            f"({med('reply_bytes') / max(1, med('request_bytes')):.2f}x)",
        ),
        ("forged cookies dropped", f"{med('invalid_cookie'):,.0f}"),
    ]
    return figure_table(f"figure (median of {len(runs)} run{'s' if len(runs) > 1 else ''})", rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short run (CI)")
    p.add_argument("--rate", type=float, default=50_000)
    p.add_argument("--clients", type=int, default=40, help="clients per phase (unloaded, under flood)")
    p.add_argument("--parallel", type=int, default=4, help="clients connecting at the same time")
    p.add_argument("--size", type=parse_size, default="256K", help="bytes each client sends (256K, 1M)")
    p.add_argument("--sources", type=int, default=4096, help="spoofed source (address, port) pairs")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--plot", type=Path, help="write a PNG of the connect times here")
    args = p.parse_args(argv)
    reason = raw_sockets_available()
    if reason is not None:
        print(f"bench_flood: skipped, {reason} (run as root)")
        return 0
    if args.quick:
        args.runs, args.clients = 1, min(args.clients, 12)
    settle = 0.3 if args.quick else 1.0
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.rate, args.clients, args.parallel, args.size, args.sources, settle))
        print(f"run {i + 1}/{args.runs}: ratio {runs[-1]['ratio']:.2f}", file=sys.stderr)
    print(table(runs, args.rate))
    meta = {
        "rate": args.rate,
        "clients": args.clients,
        "parallel": args.parallel,
        "size": args.size,
        "sources": args.sources,
        "runs": args.runs,
        "date": time.strftime("%Y-%m-%d"),
        "threads": threading.active_count(),
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    if args.plot:
        try:
            from udt.tools.benchplot import plot_bars

            plot_bars(
                [
                    ("unloaded", [t * 1e3 for r in runs for t in r["connect_unloaded_s"]]),
                    (f"under a {args.rate:,.0f}/s flood", [t * 1e3 for r in runs for t in r["connect_flood_s"]]),
                ],
                args.plot,
                xlabel="connect time, ms (median; whisker p1–p99; dots: clients)",
                title=f"connect under a spoofed handshake flood ({meta['date']})",
            )
        except ImportError:
            print("plot skipped: matplotlib is needed (pip install matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
