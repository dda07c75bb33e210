#!/usr/bin/env python3
"""What encryption costs: udt loopback throughput with and without ``UDT_PASSPHRASE``, same run.

    python bench/bench_crypto.py [--size 200M] [--runs 3] [--quick] [--json FILE] [--plot FILE]

Sender and receiver are separate processes (as two real peers are: each has its own GIL for
its sealing or opening).  The clock runs from the connection being up to the receiver holding
every byte, so the key exchange's KDF (tens of milliseconds per connect, by design) is reported
apart, as the connect time.  The table shows medians of ``--runs`` and the ratio of encrypted
to plaintext throughput (issue goal: at least 0.60).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PASSPHRASE = "bench passphrase, not a secret"
CHUNK = 1 << 20


def _receiver(passphrase: str | None, size: int, port_queue: Any, result_queue: Any) -> None:
    import udt

    server = udt.socket()
    if passphrase:
        server.setsockopt(udt.UDT_PASSPHRASE, passphrase)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port_queue.put(server.getsockname()[1])
    conn, _ = server.accept()
    buf = bytearray(CHUNK)
    got = 0
    started = time.perf_counter()
    elapsed = 0.0
    while True:  # to the sender's EOF, so its flush() sees every byte acknowledged
        n = conn.recv_into(buf)
        if n == 0:
            break
        got += n
        if got >= size and not elapsed:
            elapsed = time.perf_counter() - started
    stats = conn.perfmon()
    conn.close()
    server.close()
    result_queue.put({"bytes": got, "seconds": elapsed, "forged": stats.get("pkt_rcv_forged", 0)})


def _sender(passphrase: str | None, size: int, port: int, result_queue: Any) -> None:
    import udt

    sock = udt.socket()
    if passphrase:
        sock.setsockopt(udt.UDT_PASSPHRASE, passphrase)
    started = time.perf_counter()
    sock.connect(("127.0.0.1", port))
    connect_s = time.perf_counter() - started
    block = bytes(CHUNK)
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        sock.sendall(block[:n] if n < CHUNK else block)
        sent += n
    sock.flush()
    sock.close()
    result_queue.put({"connect_seconds": connect_s})


def one_run(passphrase: str | None, size: int) -> dict[str, float]:
    """One transfer between two fresh processes: MB/s and the connect time."""
    ctx = mp.get_context("spawn")
    ports, results, sender_results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=_receiver, args=(passphrase, size, ports, results))
    receiver.start()
    port = ports.get(timeout=30)
    sender = ctx.Process(target=_sender, args=(passphrase, size, port, sender_results))
    sender.start()
    received = results.get(timeout=600)
    sent = sender_results.get(timeout=60)
    sender.join(60)
    receiver.join(60)
    if received["bytes"] != size:
        raise RuntimeError(f"received {received['bytes']} of {size} bytes")
    return {
        "mb_per_s": size / received["seconds"] / 1e6,
        "connect_ms": sent["connect_seconds"] * 1000,
        "forged": received["forged"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="200M", help="bytes per transfer (units as udt.units)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small, single run (the test)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument("--plot", type=Path, help="a PNG of the medians (udt.tools.benchplot)")
    args = parser.parse_args(argv)
    from udt.units import parse_size

    size = parse_size("8M" if args.quick else args.size)
    runs = 1 if args.quick else max(1, args.runs)
    rows: dict[str, list[dict[str, float]]] = {"plaintext": [], "encrypted": []}
    for _ in range(runs):  # interleaved, so both see the same load on a shared machine
        rows["plaintext"].append(one_run(None, size))
        rows["encrypted"].append(one_run(PASSPHRASE, size))
    medians = {name: statistics.median(r["mb_per_s"] for r in runs_) for name, runs_ in rows.items()}
    connect = {name: statistics.median(r["connect_ms"] for r in runs_) for name, runs_ in rows.items()}
    ratio = medians["encrypted"] / medians["plaintext"]
    print(f"udt loopback, {size / 1e6:.0f} MB per transfer, median of {runs} (min–max)\n")
    print("| connection | MB/s | min–max | connect ms | ratio to plaintext |")
    print("|---|---|---|---|---|")
    for name, runs_ in rows.items():
        values = [r["mb_per_s"] for r in runs_]
        print(
            f"| {name} | {medians[name]:.0f} | {min(values):.0f}–{max(values):.0f} | "
            f"{connect[name]:.0f} | {medians[name] / medians['plaintext']:.2f} |"
        )
    print(f"\nencrypted / plaintext = {ratio:.2f} (goal >= 0.60)")
    result = {  # the bench_transfer.py shape, so udt.tools.benchplot draws it
        "meta": {"size": size, "runs": runs, "date": time.strftime("%Y-%m-%d %H:%M")},
        "results": [
            {
                "system": f"udt {name}",
                "kind": "memory",
                "what": "UDT_PASSPHRASE set on both ends" if name == "encrypted" else "no passphrase",
                "mb_per_s": [r["mb_per_s"] for r in runs_],
                "median_mb_per_s": medians[name],
                "connect_ms": [r["connect_ms"] for r in runs_],
                "note": "",
            }
            for name, runs_ in rows.items()
        ],
        "ratio": ratio,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        from udt.tools import benchplot

        benchplot.plot(result, args.plot, title=f"udt loopback, encryption cost ({size / 1e6:.0f} MB, {runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
