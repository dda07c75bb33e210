"""Child processes of bench_wan.py: one end of one flow, run inside a namespace of the link.

    python bench/_wan_workers.py ROLE --host H --port P [--seconds S | --bytes N] [--cc NAME]

Roles: ``udt-recv``/``udt-send`` (udt's Python API), ``udt4-recv``/``udt4-send`` (UDT4's C++
library through udt4py-ng).  Each prints JSON lines on stdout: ``{"event": "ready", "port"}``
from a receiver once it listens, ``{"event": "sample", ...}`` every SAMPLE seconds and one
``{"event": "done", ...}`` at the end.  Receivers sample the bytes delivered (what throughput is
computed from); udt's sender samples its perfmon (packets sent, retransmitted, RTT, windows,
flight, send buffer, and the model's ``bbr_*`` keys with bbr), the time its writer spent blocked
in ``sendall`` and both ends their own CPU run and wait time (bench_lfn.py's ``slow_reason``
reads them).  Kept out of
bench_wan.py so that a child loads only what its role needs (udt4py loads a C++ library).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

SAMPLE = 0.25  # seconds between samples
BLOCK = 1 << 20
LATE_WRITE = 0.002  # seconds: a block's copy takes ~0.2 ms; a write with room that takes longer waited


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Sampler:
    """Calls ``take`` at most every SAMPLE seconds; time is relative to ``start``."""

    def __init__(self, take: Any) -> None:
        self.take = take
        self.start = time.monotonic()
        self.next = self.start

    def maybe(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self.next:
            emit(event="sample", t=round(now - self.start, 3), **self.take())
            self.next = now + SAMPLE


def past(sampler: Sampler, opts: argparse.Namespace) -> bool:
    """A timed run's receiver stops reading half a second after the sender's duration: what
    arrives later (the drained tail) does not count, and nobody waits for it."""
    return time.monotonic() > sampler.start + opts.seconds + 0.5


def own_cpu() -> tuple[float, float]:
    """Seconds this process's threads ran and were runnable without a CPU (schedstat): a slow
    second with a high wait is the machine's, not the engine's."""
    run = wait = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/schedstat").read().split()
        except OSError:
            continue
        run += int(fields[0]) / 1e9
        wait += int(fields[1]) / 1e9
    return round(run, 4), round(wait, 4)


def udt_recv(opts: argparse.Namespace) -> None:
    import udt

    listener = udt.socket(udt.AF_INET, udt.SOCK_STREAM)
    if opts.cc:
        listener.setsockopt(udt.UDT_CC, opts.cc)
    listener.bind((opts.host, opts.port))
    listener.listen(1)
    emit(event="ready", port=listener.getsockname()[1])
    conn, _addr = listener.accept()
    conn.settimeout(SAMPLE)
    buf = bytearray(BLOCK)
    total = 0
    sampler = Sampler(lambda: dict(zip(("bytes", "cpu_run_s", "cpu_wait_s"), (total, *own_cpu()))))
    last = sampler.start
    while opts.bytes is not None and total < opts.bytes or opts.bytes is None and not past(sampler, opts):
        try:
            got = conn.recv_into(buf)
        except TimeoutError:
            sampler.maybe()
            continue
        except OSError:
            if opts.bytes is not None:
                raise
            break  # a timed run: the sender gave up draining its tail (short linger)
        if not got:
            break
        total += got
        last = time.monotonic()
        sampler.maybe()
    sampler.maybe(force=True)
    stats = conn.perfmon()
    emit(
        event="done",
        bytes=total,
        seconds=round(last - sampler.start, 6),
        rcv_loss=stats["pkt_rcv_loss_total"],
        dropped=stats["pkt_dropped_total"],
        duplicates=stats["pkt_duplicate_total"],
        naks_sent=stats["pkt_sent_nak_total"],
    )
    conn.close()
    listener.close()


def udt_send(opts: argparse.Namespace) -> None:
    import udt

    sock = udt.socket(udt.AF_INET, udt.SOCK_STREAM)
    if opts.cc:
        sock.setsockopt(udt.UDT_CC, opts.cc)
    sock.setsockopt(udt.UDT_LINGER, (True, 10 if opts.bytes is not None else 1))
    sock.connect((opts.host, opts.port))
    block = os.urandom(BLOCK)
    # the writer's side: seconds spent inside sendall (blocked for room) and calls made, so a
    # slow second shows whether the writer waited for room or the engine did not send
    # late_*: writes that took over LATE_WRITE although the buffer had room for the whole block
    writer = {"blocked_s": 0.0, "calls": 0, "late": 0, "late_s": 0.0}

    def take() -> dict[str, Any]:
        stats = sock.perfmon()
        cpu_run, cpu_wait = own_cpu()
        return {
            "cpu_run_s": cpu_run,
            "cpu_wait_s": cpu_wait,
            "blocked_s": round(writer["blocked_s"], 4),
            "writes": writer["calls"],
            "late_writes": writer["late"],
            "late_write_s": round(writer["late_s"], 4),
            "snd_data": sock.getsockopt(udt.SOL_UDT, udt.UDT_SNDDATA),
            "sent": stats["pkt_sent_total"],
            "retrans": stats["pkt_retrans_total"],
            "rtt_ms": stats["ms_rtt"],
            "cwnd": stats["pkt_congestion_window"],
            "flow_window": stats["pkt_flow_window"],
            "period_us": stats["us_pkt_snd_period"],
            "bw_mbit": stats["mbps_bandwidth"],
            "snd_buf_avail": stats["byte_avail_snd_buf"],
            "flight": stats["pkt_flight_size"],
            "snd_loss": stats["pkt_snd_loss_total"],
            "send_wakeups": stats["mux_send_wakeups"],
            "datagrams_out": stats["mux_datagrams_out"],
            # the model of a controller that reports one (bbr): every bbr_* perfmon key
            **{k: v for k, v in stats.items() if k.startswith("bbr_")},
        }

    sampler = Sampler(take)
    total = 0
    if opts.bytes is not None:
        while total < opts.bytes:
            piece = min(BLOCK, opts.bytes - total)
            sock.sendall(memoryview(block)[:piece])
            total += piece
            sampler.maybe()
    else:
        deadline = sampler.start + opts.seconds
        try:
            while time.monotonic() < deadline:
                room = sock.perfmon()["byte_avail_snd_buf"] >= BLOCK
                before = time.monotonic()
                sock.sendall(block)
                took = time.monotonic() - before
                writer["blocked_s"] += took
                writer["calls"] += 1
                if room and took > LATE_WRITE:
                    writer["late"] += 1
                    writer["late_s"] += took
                total += BLOCK
                sampler.maybe()
        except OSError:
            pass  # the receiver stopped reading at its deadline
    sampler.maybe(force=True)
    try:
        sock.close()  # drains what is queued (bounded by the linger above)
    except OSError:
        if opts.bytes is not None:
            raise
    emit(event="done", bytes=total)


def udt4_recv(opts: argparse.Namespace) -> None:
    import udt4py

    listener = udt4py.UDTSocket(socket.AF_INET, socket.SOCK_STREAM)
    listener.UDT_LINGER = 1
    listener.bind((opts.host, opts.port))
    listener.listen(1)
    emit(event="ready", port=listener.address[1])
    conn, _addr = listener.accept()
    conn.UDT_RCVTIMEO = int(SAMPLE * 1000)
    buf = bytearray(BLOCK)
    total = 0
    sampler = Sampler(lambda: {"bytes": total})
    last = sampler.start
    while opts.bytes is not None and total < opts.bytes or opts.bytes is None and not past(sampler, opts):
        try:
            got = conn.recv(buf)
        except udt4py.UDTException as exc:
            if exc.error_code == 6003:  # receive timeout (UDT_RCVTIMEO): nothing this interval
                sampler.maybe()
                continue
            break  # 2001/2002: the sender closed
        if got <= 0:
            break
        total += got
        last = time.monotonic()
        sampler.maybe()
    sampler.maybe(force=True)
    emit(event="done", bytes=total, seconds=round(last - sampler.start, 6))


def udt4_send(opts: argparse.Namespace) -> None:
    import udt4py

    sock = udt4py.UDTSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.UDT_LINGER = 1  # bounded close: never UDT4's 180 s
    sock.connect((opts.host, opts.port))
    block = memoryview(os.urandom(BLOCK))
    total = 0
    start = time.monotonic()
    try:
        while (opts.bytes is None and time.monotonic() < start + opts.seconds) or (
            opts.bytes is not None and total < opts.bytes
        ):
            view = block if opts.bytes is None else block[: min(BLOCK, opts.bytes - total)]
            while view:
                sent = sock.send(view)
                view = view[sent:]
                total += sent
    except udt4py.UDTException:
        if opts.bytes is not None:
            raise  # a timed run's receiver stops at its deadline and may close first
    if opts.bytes is not None:  # a sized transfer: the tail must reach the receiver before close
        while sock.UDT_SNDDATA > 0 and time.monotonic() < start + 60:
            time.sleep(0.01)
        time.sleep(0.1)
    try:
        sock.close()
    except udt4py.UDTException:
        if opts.bytes is not None:
            raise
    emit(event="done", bytes=total)


ROLES = {"udt-recv": udt_recv, "udt-send": udt_send, "udt4-recv": udt4_recv, "udt4-send": udt4_send}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0, help="senders: how long to send")
    parser.add_argument("--bytes", type=int, help="send (or receive) exactly this many bytes")
    parser.add_argument("--cc", help="udt congestion control by name (default: the library's)")
    opts = parser.parse_args(argv)
    ROLES[opts.role](opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
