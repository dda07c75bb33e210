"""Many connections on one event loop: udt.aio streams next to asyncio TCP streams, same run.

A server process runs one event-loop thread listening on one port; the client process opens N
connections at once (one loop, one thread), each writes SIZE bytes (length-prefixed), the server
answers each with the sha256 of what it read, and the client checks it.  Reported per system:
aggregate throughput (N x SIZE over the wall time) and the spread of per-connection completion
times (connect to verified digest: p50, p90, max), with ratios against TCP.

    python bench/bench_aio.py [--connections 1000] [--size 1M] [--json out.json]
    python bench/bench_aio.py --quick          # 50 connections (the CI smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import udt.aio

HOST = "127.0.0.1"
BLOCK = 64 * 1024
SYSTEMS = ("udt.aio", "asyncio TCP")


def _opener(system: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    if system == "udt.aio":
        return udt.aio.start_server, udt.aio.open_connection
    return asyncio.start_server, asyncio.open_connection


def _serve(system: str, ready: Any, stop: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        left = int.from_bytes(await reader.readexactly(8), "big")
        while left:
            data = await reader.read(min(left, 1 << 20))
            if not data:
                raise ConnectionError(f"{left} bytes missing")
            digest.update(data)
            left -= len(data)
        writer.write(digest.digest())
        await writer.drain()
        writer.close()

    async def main() -> None:
        start_server, _ = _opener(system)
        server = await start_server(handle, HOST, 0, backlog=4096)
        async with server:
            ready.send(server.sockets[0].getsockname()[1])
            await asyncio.get_running_loop().run_in_executor(None, stop.recv)

    asyncio.run(main())


async def _clients(system: str, port: int, connections: int, size: int) -> dict[str, Any]:
    _, open_connection = _opener(system)
    payload = os.urandom(size)
    expected = hashlib.sha256(payload).digest()
    peak = [threading.active_count()]  # threads of this (client) process while connections are open

    async def one() -> float:
        started = time.perf_counter()
        reader, writer = await open_connection(HOST, port)
        peak[0] = max(peak[0], threading.active_count())
        writer.write(size.to_bytes(8, "big"))
        for i in range(0, size, BLOCK):
            writer.write(payload[i : i + BLOCK])
            await writer.drain()
        digest = await reader.readexactly(32)
        writer.close()
        await writer.wait_closed()
        if digest != expected:
            raise AssertionError(f"{system}: a connection's data arrived damaged")
        return time.perf_counter() - started

    wall = time.perf_counter()
    times = sorted(await asyncio.gather(*(one() for _ in range(connections))))
    wall = time.perf_counter() - wall
    return {
        "system": system,
        "connections": connections,
        "intact": len(times),
        "bytes_per_connection": size,
        "wall_s": wall,
        "mib_per_s": connections * size / wall / (1 << 20),
        "p50_s": statistics.median(times),
        "p90_s": times[int(0.9 * (len(times) - 1))],
        "max_s": times[-1],
        "peak_threads": peak[0],
    }


def run_system(system: str, connections: int, size: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready_recv, ready_send = ctx.Pipe(duplex=False)
    stop_recv, stop_send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=_serve, args=(system, ready_send, stop_recv), daemon=True)
    server.start()
    try:
        if not ready_recv.poll(30):
            raise RuntimeError(f"{system} server did not start")
        port = ready_recv.recv()
        return asyncio.run(_clients(system, port, connections, size))
    finally:
        stop_send.send(None)
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="concurrent connections (default 1000)")
    parser.add_argument("--size", type=_size, default=1 << 20, help="bytes each connection moves (default 1M)")
    parser.add_argument("--quick", action="store_true", help="50 connections: the CI smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here ('-': stdout)")
    args = parser.parse_args(argv)
    connections = 50 if args.quick else args.connections
    results = [run_system(system, connections, args.size) for system in SYSTEMS]
    tcp = results[-1]
    print(f"{connections} connections x {args.size} bytes, one event-loop thread per side")
    print(
        f"{'system':<12} {'intact':>7} {'MiB/s':>8} {'ratio':>6} {'p50 s':>7} {'p90 s':>7} {'max s':>7} {'threads':>7}"
    )
    for r in results:
        r["throughput_ratio_vs_tcp"] = r["mib_per_s"] / tcp["mib_per_s"]
        print(
            f"{r['system']:<12} {r['intact']:>7} {r['mib_per_s']:>8.1f} {r['throughput_ratio_vs_tcp']:>6.2f} "
            f"{r['p50_s']:>7.3f} {r['p90_s']:>7.3f} {r['max_s']:>7.3f} {r['peak_threads']:>7}"
        )
    if args.json:
        text = json.dumps({"results": results}, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0 if all(r["intact"] == connections for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
