"""Latency on loopback: udt next to TCP and raw UDP measured in the same run.

Rows (issue 10's latency goals):

* ``pingpong`` — 64-byte request, 64-byte answer on one connection, the client timing each round
  trip (median, p99); anchors: TCP (``TCP_NODELAY``) and raw UDP ``sendto``/``recvfrom``.
* ``connect`` — a fresh socket connecting to a listener in another process, until ``connect()``
  returns (median, p99); anchor: TCP ``create_connection``.
* ``close`` — ``close()`` of each of those idle connected sockets, and the total time of all of
  them in sequence (1,000 sequential closes in the full run).
* ``many`` — 1,000 connections on one server port, 1 MiB each, sha256-checked by the server
  (``bench_aio.py``'s run, reused): all intact, aggregate throughput; anchor: asyncio TCP.

The server side of every row runs in its own process.  Systems are interleaved run by run so
that a burst of load from elsewhere hits all of them; figures are medians over the runs.

    python bench/bench_latency.py [--runs 3] [--json out.json] [--plot out.png]
    python bench/bench_latency.py --quick        # the CI smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import udt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_aio  # noqa: E402  (the many-connections run lives there)

HOST = "127.0.0.1"
MESSAGE = 64
GOALS_US = {"pingpong_median": 100.0, "pingpong_p99": 300.0, "connect_median": 1000.0}


# --------------------------------------------------------------------------- servers (child processes)


def _echo(conn: udt.socket | socket.socket) -> None:
    """Send back every MESSAGE-sized request until the peer closes."""
    buf = bytearray(MESSAGE)
    view = memoryview(buf)
    while True:
        got = 0
        while got < MESSAGE:
            n = conn.recv_into(view[got:])
            if not n:
                conn.close()
                return
            got += n
        conn.sendall(buf)


def _udt_echo(listener: udt.socket) -> None:
    conn, _ = listener.accept()
    _echo(conn)


def _tcp_echo(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _echo(conn)


def _udp_echo(sock: socket.socket) -> None:
    buf = bytearray(MESSAGE)
    while True:
        n, peer = sock.recvfrom_into(buf)
        if n == 0:
            return
        sock.sendto(buf[:n], peer)


def _accept_all(listener: Any) -> None:
    """Accept and keep every connection (closed at the end, so close rows time the client)."""
    kept = []
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        kept.append(conn)


def _serve(kind: str, ready: Any) -> None:
    if kind.startswith("udt"):
        listener: Any = udt.socket(udt.AF_INET, udt.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(1024)
    elif kind.startswith("tcp"):
        listener = socket.create_server((HOST, 0), backlog=1024)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((HOST, 0))
    ready.send(listener.getsockname()[1])
    body: Callable[[Any], None] = {
        "udt-echo": _udt_echo,
        "tcp-echo": _tcp_echo,
        "udp-echo": _udp_echo,
        "udt-accept": _accept_all,
        "tcp-accept": _accept_all,
    }[kind]
    body(listener)


class Server:
    """A server of *kind* in a spawned process, killed on exit."""

    def __init__(self, kind: str) -> None:
        ctx = mp.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_serve, args=(kind, send), daemon=True)
        self.process.start()
        if not receive.poll(30):
            self.process.kill()
            raise RuntimeError(f"{kind} server did not start")
        self.port: int = receive.recv()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.join(10)


# --------------------------------------------------------------------------- clients (this process)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _round_trips(send: Callable[[bytes], Any], recv_into: Callable[[memoryview], int], count: int) -> list[float]:
    payload = os.urandom(MESSAGE)
    buf = bytearray(MESSAGE)
    view = memoryview(buf)
    times = []
    for i in range(count + count // 10):  # the first tenth warms up and is not counted
        started = time.perf_counter_ns()
        send(payload)
        got = 0
        while got < MESSAGE:
            n = recv_into(view[got:])
            if not n:
                raise ConnectionError("the echo server closed")
            got += n
        elapsed = time.perf_counter_ns() - started
        if buf != payload:
            raise AssertionError("the echo came back different")
        if i >= count // 10:
            times.append(elapsed / 1000)
    return times


def pingpong(system: str, count: int) -> list[float]:
    """Round-trip times in µs of 64-byte messages."""
    kind = {"udt": "udt-echo", "TCP": "tcp-echo", "UDP": "udp-echo"}[system]
    with Server(kind) as server:
        if system == "udt":
            sock: Any = udt.create_connection((HOST, server.port))
            try:
                return _round_trips(sock.sendall, sock.recv_into, count)
            finally:
                sock.close()
        if system == "TCP":
            with socket.create_connection((HOST, server.port)) as tcp:
                tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _round_trips(tcp.sendall, tcp.recv_into, count)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect((HOST, server.port))
            return _round_trips(udp.send, udp.recv_into, count)


def connect_close(system: str, count: int) -> tuple[list[float], list[float]]:
    """µs per connect() and per close() of *count* sequential connections."""
    connects, closes = [], []
    with Server("udt-accept" if system == "udt" else "tcp-accept") as server:
        for _ in range(count):
            started = time.perf_counter_ns()
            sock: Any = (
                udt.create_connection((HOST, server.port))
                if system == "udt"
                else socket.create_connection((HOST, server.port))
            )
            connected = time.perf_counter_ns()
            sock.close()
            closed = time.perf_counter_ns()
            connects.append((connected - started) / 1000)
            closes.append((closed - connected) / 1000)
    return connects, closes


# --------------------------------------------------------------------------- the run


def _summary(runs: list[list[float]]) -> dict[str, Any]:
    medians = [statistics.median(r) for r in runs]
    p99s = [_percentile(r, 0.99) for r in runs]
    return {
        "median_us": statistics.median(medians),
        "p99_us": statistics.median(p99s),
        "run_medians_us": medians,
        "run_p99s_us": p99s,
        "samples": sum(len(r) for r in runs),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    ping: dict[str, list[list[float]]] = {"udt": [], "TCP": [], "UDP": []}
    connect: dict[str, list[list[float]]] = {"udt": [], "TCP": []}
    close: dict[str, list[list[float]]] = {"udt": [], "TCP": []}
    for _ in range(args.runs):
        for system in ping:
            ping[system].append(pingpong(system, args.round_trips))
        for system in connect:
            c, d = connect_close(system, args.connects)
            connect[system].append(c)
            close[system].append(d)
    rows: list[dict[str, Any]] = []
    for system, runs in ping.items():
        rows.append({"measure": "pingpong", "system": system, **_summary(runs)})
    for system, runs in connect.items():
        rows.append({"measure": "connect", "system": system, **_summary(runs)})
    for system, runs in close.items():
        row = {"measure": "close", "system": system, **_summary(runs)}
        row["sequential_total_s"] = statistics.median(sum(r) / 1e6 for r in runs)
        rows.append(row)
    many = []
    for system in ("udt.aio", "asyncio TCP"):
        result = bench_aio.run_system(system, args.connections, args.size)
        many.append({"measure": "many", "system": "udt" if system == "udt.aio" else "TCP", **result})
    anchors = {(r["measure"], r["system"]): r for r in rows}
    for r in rows:
        anchor = anchors.get((r["measure"], "TCP"))
        r["ratio_vs_tcp"] = r["median_us"] / anchor["median_us"] if anchor else None
        udp = anchors.get((r["measure"], "UDP"))
        r["ratio_vs_udp"] = r["median_us"] / udp["median_us"] if udp else None
    many_tcp = many[1]["mib_per_s"]
    for m in many:
        m["ratio_vs_tcp"] = m["mib_per_s"] / many_tcp
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "runs": args.runs,
            "round_trips": args.round_trips,
            "connects": args.connects,
            "connections": args.connections,
            "bytes_per_connection": args.size,
            "goals_us": GOALS_US,
            "cpus": os.cpu_count(),
        },
        "results": rows,
        "many": many,
    }


def print_table(data: dict[str, Any]) -> None:
    meta = data["meta"]
    print(
        f"loopback latency, {meta['runs']} runs: {meta['round_trips']} round trips of {MESSAGE} bytes, "
        f"{meta['connects']} sequential connects; medians over runs (µs)"
    )
    print()
    print("| measure | system | median µs | p99 µs | × TCP | × UDP | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in data["results"]:
        tcp = f"{r['ratio_vs_tcp']:.2f}" if r["ratio_vs_tcp"] is not None else ""
        udp = f"{r['ratio_vs_udp']:.2f}" if r["ratio_vs_udp"] is not None else ""
        note = ""
        if r["measure"] == "close":
            note = f"{meta['connects']} sequential closes: {r['sequential_total_s']:.2f} s"
        goal = GOALS_US.get(f"{r['measure']}_median")
        if goal and r["system"] == "udt":
            note = f"goal median ≤ {goal:g} µs" + (
                f", p99 ≤ {GOALS_US['pingpong_p99']:g}" if r["measure"] == "pingpong" else ""
            )
        print(f"| {r['measure']} | {r['system']} | {r['median_us']:.1f} | {r['p99_us']:.1f} | {tcp} | {udp} | {note} |")
    print()
    many = f"{meta['connections']} connections × {meta['bytes_per_connection']} B, one server port"
    print(f"| {many} | intact | MiB/s | × TCP | client threads |")
    print("|---|---:|---:|---:|---:|")
    for m in data["many"]:
        print(
            f"| {m['system']} | {m['intact']}/{m['connections']} | {m['mib_per_s']:.1f} | {m['ratio_vs_tcp']:.2f} "
            f"| {m['peak_threads']} |"
        )


def _size(text: str) -> int:
    return bench_aio._size(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument("--round-trips", type=int, default=5000, help="ping-pong round trips per run (default 5000)")
    parser.add_argument("--connects", type=int, default=1000, help="sequential connects per run (default 1000)")
    parser.add_argument("--connections", type=int, default=1000, help="concurrent connections (default 1000)")
    parser.add_argument("--size", type=_size, default=1 << 20, help="bytes per concurrent connection (default 1M)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run, 500 round trips, 30 connects, 50×256K")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--plot", metavar="PNG", help="draw the latency rows (udt.tools.benchplot)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.round_trips, args.connects, args.connections = 1, 500, 30, 50
        args.size = min(args.size, 256 << 10)
    data = run(args)
    print_table(data)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        from udt.tools.benchplot import plot_latency

        plot_latency(data, Path(args.plot))
    lost = [m for m in data["many"] if m["intact"] != m["connections"]]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
