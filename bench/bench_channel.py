"""Datagram rate of udt's channel next to plain Python sockets, measured in the same run.

One process sends 1456-byte datagrams over loopback as fast as it can, another receives and
counts what ARRIVES (a sender outrunning its receiver earns nothing); each mode runs several
short times, interleaved with the others so load changes hit every mode alike, and the table
shows medians:

    python bench/bench_channel.py [--seconds 1.0] [--runs 3] [--no-pin]

Modes: plain ``socket.sendto``/``recvfrom_into``; the channel's per-datagram Python methods;
the channel's batch API (sendmmsg/recvmmsg) without offloads, with GSO only, with GRO only, and
with GSO+GRO. Ratios compare received datagrams/s with the plain Python mode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass

from udt._net import Channel, RecvBatch, SendBatch

PAYLOAD_SIZE = 1456
SOCKET_BUFFER = 8 << 20
SEND_BATCH = 256  # datagrams per send_batch call (several GSO runs of 44 in one sendmmsg)
RECV_SLOTS = 64  # 64 KiB receive buffers per recv_batch call
IDLE_END = 0.25  # the receiver stops this long after the sender finished and all is quiet
# Linux option numbers; Python 3.11's socket module does not name them.
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass(frozen=True)
class Mode:
    name: str
    api: str  # "python", "channel", "batch"
    gso: bool = False
    gro: bool = False


MODES = [
    Mode("python sendto/recvfrom_into", "python"),
    Mode("channel sendto/recvfrom_into", "channel"),
    Mode("channel batch, no GSO/GRO", "batch"),
    Mode("channel batch, GSO", "batch", gso=True),
    Mode("channel batch, GRO", "batch", gro=True),
    Mode("channel batch, GSO+GRO", "batch", gso=True, gro=True),
]


@dataclass
class Sample:
    sent: int
    send_seconds: float
    received: int
    received_bytes: int
    receive_seconds: float

    @property
    def sent_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    @property
    def received_rate(self) -> float:
        return self.received / self.receive_seconds if self.receive_seconds else 0.0

    @property
    def gbits(self) -> float:
        return self.received_bytes * 8 / self.receive_seconds / 1e9 if self.receive_seconds else 0.0

    @property
    def loss(self) -> float:
        return 100.0 * (1 - self.received / self.sent) if self.sent else 0.0


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity") and cpu < os.cpu_count():
        os.sched_setaffinity(0, {cpu})


def _force_buffers(sock: socket.socket) -> None:
    for forced, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def receiver(mode: Mode, cpu: int | None, ready, sender_done, results) -> None:
    """Bind, tell the parent the address, count arrivals until the sender is done and quiet.

    The clock is read only at the first datagram and at each idle timeout (the last arrival was
    IDLE_END before that), so the timing costs the counting loops nothing per datagram.
    """
    _pin(cpu)
    count = nbytes = 0
    first = last = 0.0
    arrived = False
    closer = None
    if mode.api == "python":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _force_buffers(sock)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(IDLE_END)
        address = sock.getsockname()
        closer = sock.close
        buffer = bytearray(65536)

        def receive():
            return 1, sock.recvfrom_into(buffer)[0]
    else:
        channel = Channel(socket.AF_INET, gro=mode.gro, rcvbuf=SOCKET_BUFFER, sndbuf=SOCKET_BUFFER)
        channel.bind(("127.0.0.1", 0))
        address = channel.getsockname()
        closer = channel.close
        if mode.api == "channel":
            buffer = bytearray(65536)
            recvfrom_into = channel.recvfrom_into

            def receive():
                return 1, recvfrom_into(buffer, IDLE_END)[0]
        else:
            batch = RecvBatch(RECV_SLOTS)
            recv_batch = channel.recv_batch

            def receive():
                return recv_batch(batch, IDLE_END), batch.nbytes

    ready.send(address)
    try:
        # The first arrival starts the clock.
        while not count:
            try:
                count, nbytes = receive()
            except TimeoutError:
                if sender_done.is_set():
                    break
        first = time.perf_counter()
        arrived = True
        while True:
            try:
                n, size = receive()
            except TimeoutError:
                if arrived:
                    last = time.perf_counter() - IDLE_END
                    arrived = False
                if sender_done.is_set():
                    break
                continue
            count += n
            nbytes += size
            arrived = True
    finally:
        closer()
    results.send((count, nbytes, max(last - first, 1e-9)))


def sender(mode: Mode, cpu: int | None, address, seconds: float, results) -> None:
    """Send as fast as possible for ``seconds``; report how many datagrams left."""
    _pin(cpu)
    payload = bytes(range(256)) * (PAYLOAD_SIZE // 256) + bytes(PAYLOAD_SIZE % 256)
    sent = 0
    if mode.api == "python":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _force_buffers(sock)
        send = sock.sendto
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(256):
                send(payload, address)
            sent += 256
        elapsed = time.perf_counter() - started
        sock.close()
    else:
        channel = Channel(socket.AF_INET, gso=mode.gso, rcvbuf=SOCKET_BUFFER, sndbuf=SOCKET_BUFFER)
        if mode.api == "channel":
            send = channel.sendto
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for _ in range(256):
                    send(payload, address)
                sent += 256
        else:
            batch = SendBatch(SEND_BATCH)
            for _ in range(SEND_BATCH):
                batch.add(payload)
            send = channel.send_batch
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                batch.rewind()
                sent += send(batch, address)
        elapsed = time.perf_counter() - started
        channel.close()
    results.send((sent, elapsed))


def measure(mode: Mode, seconds: float, pin: bool) -> Sample:
    """One run of one mode: a receiving process and a sending process, each on its own core."""
    context = mp.get_context("fork")
    ready_r, ready_w = context.Pipe(duplex=False)
    rx_r, rx_w = context.Pipe(duplex=False)
    tx_r, tx_w = context.Pipe(duplex=False)
    sender_done = context.Event()
    cpus = (0, 1) if pin and (os.cpu_count() or 1) >= 2 else (None, None)
    receiving = context.Process(target=receiver, args=(mode, cpus[1], ready_w, sender_done, rx_w))
    receiving.start()
    try:
        if not ready_r.poll(10):
            raise RuntimeError(f"receiver for {mode.name!r} did not start")
        address = ready_r.recv()
        sending = context.Process(target=sender, args=(mode, cpus[0], address, seconds, tx_w))
        sending.start()
        if not tx_r.poll(seconds + 30):
            raise RuntimeError(f"sender for {mode.name!r} did not finish")
        sent, send_seconds = tx_r.recv()
        sending.join()
        sender_done.set()
        if not rx_r.poll(30):
            raise RuntimeError(f"receiver for {mode.name!r} did not finish")
        received, received_bytes, receive_seconds = rx_r.recv()
        receiving.join()
    finally:
        for process in (receiving,) + ((sending,) if "sending" in locals() else ()):
            if process.is_alive():
                process.terminate()
                process.join()
    return Sample(sent, send_seconds, received, received_bytes, receive_seconds)


def median_sample(samples: list[Sample]) -> dict[str, float]:
    return {
        "sent": statistics.median(s.sent_rate for s in samples),
        "received": statistics.median(s.received_rate for s in samples),
        "gbits": statistics.median(s.gbits for s in samples),
        "loss": statistics.median(s.loss for s in samples),
    }


def run(seconds: float, runs: int, pin: bool, modes: list[Mode] = MODES) -> list[tuple[Mode, dict]]:
    samples: dict[str, list[Sample]] = {mode.name: [] for mode in modes}
    for _ in range(runs):
        for mode in modes:  # interleaved: a load spike hits every mode, not one
            samples[mode.name].append(measure(mode, seconds, pin))
    return [(mode, median_sample(samples[mode.name])) for mode in modes]


def table(rows: list[tuple[Mode, dict]]) -> str:
    baseline = next((r["received"] for m, r in rows if m.api == "python"), 0.0)
    lines = [
        f"{'mode':<30} {'sent dgram/s':>13} {'recv dgram/s':>13} {'recv Gbit/s':>11} {'loss %':>7} {'vs python':>9}"
    ]
    for mode, result in rows:
        ratio = result["received"] / baseline if baseline else float("nan")
        lines.append(
            f"{mode.name:<30} {result['sent']:>13,.0f} {result['received']:>13,.0f} "
            f"{result['gbits']:>11.2f} {result['loss']:>7.1f} {ratio:>8.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run per mode")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode; the table shows medians")
    parser.add_argument("--no-pin", action="store_true", help="do not pin sender/receiver to cores")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs <= 0:
        parser.error("--seconds and --runs must be positive")
    print(
        f"{PAYLOAD_SIZE}-byte datagrams over loopback, {args.runs} run(s) x {args.seconds:g} s "
        f"per mode, medians; one sending and one receiving process"
        f"{'' if args.no_pin else ' pinned to CPUs 0 and 1'}",
        flush=True,
    )
    print(table(run(args.seconds, args.runs, not args.no_pin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
