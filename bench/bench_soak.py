"""The soak: many clients connect, transfer, close, some killed (kill -9), some through loss,
while a spoofed handshake flood runs; at the end nothing is lost and nothing grew.

The listener is the sink (``udt.tools.flood.sink``) in its own process.  For MINUTES:

* ``--direct`` threads loop: connect (10 s connect timeout), send a random 16 KiB-1 MiB, check
  the sink's sha256, close;
* ``--lossy`` threads do the same through the impairment relay (``udt.tools.impair``, a child
  process: ``--loss`` each way and 5 ms delay);
* ``--killers`` threads loop: start a paced client process and ``kill -9`` it mid-transfer (the
  sink must notice within its idle timeout and free everything);
* ``udt.tools.flood`` sends ``--rate`` spoofed handshakes/s from 4096 127/8 sources (root).

At the end (after the sink's idle timeout has let the killed clients' connections go) the
sink's threads, file descriptors and RSS are compared with their values after the warm-up,
and the RSS samples of the first half with the second.  Exit status 1 when a transfer lost or
changed a byte, a client could not connect, or something grew.  The sink runs with glibc's
mmap threshold fixed and two malloc arenas, so its RSS follows what udt holds rather than the
freed buffers glibc would keep in reserve (``--glibc-malloc`` leaves the defaults).

    sudo python bench/bench_soak.py --soak 10 [--json out.json] [--plot soak.png]
    sudo python bench/bench_soak.py --quick            # 18 s (the CI smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import udt
from _tables import figure_table
from udt.tools.flood import Flood, raw_sockets_available
from udt.tools.flood.sink import SinkProcess, Usage, exchange
from udt.tools.impair import Impairment, Relay

IDLE_TIMEOUT_MS = 5000
# The soak is about loss and growth under a long mixed load on a shared machine: its clients
# give a connect 10 s (UDT_CONNTIMEO) where UDT's default is 3 s; bench_flood.py measures the
# connect itself with the default
CLIENT_OPTIONS = {udt.UDT_CONNTIMEO: 10_000}
RSS_GROWTH_LIMIT = 16 << 20  # allocator noise, caches and the flood's socket buffers stay under this


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    direct_ok: int = 0
    lossy_ok: int = 0
    mismatches: int = 0
    failures: list[str] = field(default_factory=list)
    killed: int = 0
    bytes_checked: int = 0
    connect_s: list[float] = field(default_factory=list)

    def add(self, kind: str, size: int, connect: float) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            self.bytes_checked += size
            self.connect_s.append(connect)

    def fail(self, what: str) -> None:
        with self.lock:
            if "sha256" in what:
                self.mismatches += 1
            else:
                self.failures.append(what)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transfers(address: tuple[str, int], kind: str, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    source = ("127.0.0.1", _free_port()) if kind == "lossy_ok" else None  # the relay keeps a socket per source
    while not stop.is_set():
        data = rng.randbytes(rng.randrange(16 << 10, 1 << 20))
        try:
            connect = exchange(address, data, timeout=20, source_address=source, options=CLIENT_OPTIONS)
        except AssertionError as exc:
            tally.fail(str(exc))
            continue
        except OSError as exc:
            if source is not None and getattr(exc, "errno", None) == 98:  # EADDRINUSE: taken meanwhile
                source = ("127.0.0.1", _free_port())
                continue
            tally.fail(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        tally.add(kind, len(data), connect)


def _killer(port: int, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        proc = subprocess.Popen(
            [sys.executable, "-m", "udt.tools.flood.sink", "--client", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop.wait(rng.uniform(0.3, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with tally.lock:
            tally.killed += 1


def _own_usage() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def _drained(sink: SinkProcess, baseline: Usage, limit: float) -> Usage:
    """Wait until the sink is back to its baseline threads (the killed clients' connections
    time out) or limit seconds pass; returns its usage then."""
    deadline = time.monotonic() + limit
    usage = sink.usage()
    while time.monotonic() < deadline and (usage.threads > baseline.threads or usage.fds > baseline.fds):
        time.sleep(0.25)
        usage = sink.usage()
    return usage


def _phase(
    args: argparse.Namespace,
    addresses: tuple[tuple[str, int], tuple[str, int], int],
    tally: Tally,
    seconds: float,
    started: float,
    rss: list[tuple[float, int]],
    sink: SinkProcess,
    seed: int,
) -> None:
    """Run every client loop for seconds, sampling the sink's RSS every 2 s."""
    direct, lossy, port = addresses
    stop = threading.Event()
    workers = [
        threading.Thread(target=_transfers, args=(direct, "direct_ok", tally, stop, seed + i))
        for i in range(args.direct)
    ]
    workers += [
        threading.Thread(target=_transfers, args=(lossy, "lossy_ok", tally, stop, seed + 100 + i))
        for i in range(args.lossy)
    ]
    workers += [threading.Thread(target=_killer, args=(port, tally, stop, seed + 200 + i)) for i in range(args.killers)]
    for w in workers:
        w.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        rss.append((time.monotonic() - started, sink.usage().rss_bytes))
    stop.set()
    for w in workers:
        w.join()


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up phase (a fifth of the soak, the same load), drain, baseline; the rest of the
    soak, drain, final: growth is what the second, longer phase added to a drained sink."""
    tally = Tally()
    rss_samples: list[tuple[float, int]] = []
    drain_limit = IDLE_TIMEOUT_MS / 1000 * 3 + 5
    with SinkProcess(idle_timeout_ms=IDLE_TIMEOUT_MS, steady_malloc=not args.glibc_malloc) as sink:
        lossy = Impairment(loss=args.loss, delay=0.005)
        with Relay(sink.address, a_to_b=lossy, b_to_a=lossy, seed=7, process=True) as relay:
            exchange(sink.address, os.urandom(64 << 10))
            time.sleep(0.3)
            idle = sink.usage()  # threads and fds of a sink with no connection
            flood = Flood(sink.address, args.rate, sources=4096)
            flood.start()
            started = time.monotonic()
            addresses = (sink.address, relay.address, sink.port)
            total = args.soak * 60
            _phase(args, addresses, tally, total / 5, started, rss_samples, sink, 0)
            warm_samples = len(rss_samples)
            baseline = _drained(sink, idle, drain_limit)
            own_baseline = _own_usage()
            _phase(args, addresses, tally, total - total / 5, started, rss_samples, sink, 1000)
            flood.stop()
            elapsed = time.monotonic() - started
            final = _drained(sink, idle, drain_limit)
            relay_stats = relay.stats()
        stats = sink.stop()
    own_final = _own_usage()
    later = rss_samples[warm_samples:] or rss_samples
    half = len(later) // 2
    first = statistics.median(r for _, r in later[: max(1, half)])
    second = statistics.median(r for _, r in later[half:])
    result = flood.result
    lost = tally.mismatches
    grew = {
        "threads": final.threads > baseline.threads,
        "fds": final.fds > baseline.fds,
        "rss": final.rss_bytes - baseline.rss_bytes > RSS_GROWTH_LIMIT,
        "own_threads": own_final[0] > own_baseline[0],
        "own_fds": own_final[1] > own_baseline[1],
    }
    return {
        "minutes": args.soak,
        "steady_malloc": not args.glibc_malloc,
        "elapsed_s": elapsed,
        "flood_rate": result.rate if result else 0.0,
        "direct_ok": tally.direct_ok,
        "lossy_ok": tally.lossy_ok,
        "mismatches": lost,
        "failures": tally.failures,
        "killed": tally.killed,
        "bytes_checked": tally.bytes_checked,
        "connect_median_ms": statistics.median(tally.connect_s) * 1e3 if tally.connect_s else 0.0,
        "connect_max_ms": max(tally.connect_s) * 1e3 if tally.connect_s else 0.0,
        "connect_s": tally.connect_s,
        "sink_served": stats.get("served", 0),
        "sink_failed": stats.get("failed", 0),
        "socket_drops": final.socket_drops - baseline.socket_drops,
        "idle_threads": idle.threads,
        "threads": [baseline.threads, final.threads],
        "fds": [baseline.fds, final.fds],
        "rss": [baseline.rss_bytes, final.rss_bytes],
        "rss_half_medians": [first, second],
        "rss_samples": rss_samples,
        "own_threads": [own_baseline[0], own_final[0]],
        "own_fds": [own_baseline[1], own_final[1]],
        "relay_lost": relay_stats.a_to_b.dropped_loss + relay_stats.b_to_a.dropped_loss,
        "relay_forwarded": relay_stats.a_to_b.forwarded + relay_stats.b_to_a.forwarded,
        "listener_invalid_cookie": stats.get("listener_invalid_cookie", 0),
        "handshake_request_bytes": stats.get("mux_handshake_request_bytes", 0),
        "handshake_reply_bytes": stats.get("mux_handshake_reply_bytes", 0),
        "grew": grew,
        "ok": lost == 0 and not tally.failures and not any(grew.values()),
    }


def table(r: dict[str, Any]) -> str:
    mib = 2**20
    rows = [
        ("soak (minutes, wall s)", f"{r['minutes']:g} ({r['elapsed_s']:.0f} s)"),
        ("flood rate held (datagrams/s)", f"{r['flood_rate']:,.0f}"),
        ("transfers intact: direct / through loss", f"{r['direct_ok']} / {r['lossy_ok']}"),
        ("bytes checked (sha256)", f"{r['bytes_checked'] / mib:,.1f} MiB"),
        ("sha256 mismatches (lost or changed data)", f"{r['mismatches']}"),
        ("connect failures / errors", f"{len(r['failures'])}"),
        ("clients killed (kill -9) mid-transfer", f"{r['killed']}"),
        ("relay datagrams lost / forwarded", f"{r['relay_lost']:,} / {r['relay_forwarded']:,}"),
        ("connect median / max (ms)", f"{r['connect_median_ms']:.2f} / {r['connect_max_ms']:.1f}"),
        ("datagrams the kernel dropped at the listener (full buffer)", f"{r['socket_drops']:,}"),
        ("sink served / aborted connections", f"{r['sink_served']} / {r['sink_failed']}"),
        (
            "sink threads idle -> drained after warm-up -> end",
            f"{r['idle_threads']} -> {r['threads'][0]} -> {r['threads'][1]}",
        ),
        ("sink fds drained after warm-up -> end", f"{r['fds'][0]} -> {r['fds'][1]}"),
        (
            "sink RSS drained after warm-up -> end (MiB)",
            f"{r['rss'][0] / mib:.1f} -> {r['rss'][1] / mib:.1f} ({(r['rss'][1] - r['rss'][0]) / mib:+.1f})",
        ),
        (
            "sink RSS median under load, 1st -> 2nd half after warm-up (MiB)",
            f"{r['rss_half_medians'][0] / mib:.1f} -> {r['rss_half_medians'][1] / mib:.1f}",
        ),
        (
            "bench threads / fds -> end",
            f"{r['own_threads'][0]} -> {r['own_threads'][1]}, {r['own_fds'][0]} -> {r['own_fds'][1]}",
        ),
        ("forged cookies dropped", f"{r['listener_invalid_cookie']:,}"),
        ("handshake bytes in / out", f"{r['handshake_request_bytes']:,} / {r['handshake_reply_bytes']:,}"),
        ("verdict", "nothing lost, nothing grew" if r["ok"] else f"FAILED: grew {r['grew']}, {r['failures'][:3]}"),
    ]
    return figure_table("soak figure", rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soak", type=float, default=10.0, metavar="MINUTES", help="how long to soak")
    p.add_argument("--quick", action="store_true", help="an 18 s soak (CI)")
    p.add_argument("--rate", type=float, default=50_000, help="flood datagrams/s")
    p.add_argument("--direct", type=int, default=3, help="client threads straight to the listener")
    p.add_argument("--lossy", type=int, default=2, help="client threads through the lossy relay")
    p.add_argument("--killers", type=int, default=1, help="threads that kill -9 client processes")
    p.add_argument("--loss", type=float, default=0.03, help="relay loss each way")
    p.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="leave the sink's malloc tuning at glibc's defaults (RSS then includes the freed "
        "buffers glibc keeps as reserve)",
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="PNG of the sink's RSS over the soak")
    args = p.parse_args(argv)
    reason = raw_sockets_available()
    if reason is not None:
        print(f"bench_soak: skipped, {reason} (run as root)")
        return 0
    if args.quick:
        args.soak = 0.3
    result = soak(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        try:
            from udt.tools.benchplot import plot_bars

            samples = result["rss_samples"]
            half = len(samples) // 2
            plot_bars(
                [
                    ("1st half", [r / 2**20 for _, r in samples[:half]]),
                    ("2nd half", [r / 2**20 for _, r in samples[half:]]),
                ],
                args.plot,
                xlabel="listener RSS, MiB (median; whisker p1–p99; dots: samples every 2 s)",
                title=f"soak {args.soak:g} min under a {args.rate:,.0f}/s flood",
            )
        except ImportError:
            print("plot skipped: matplotlib is needed (pip install matplotlib)", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
