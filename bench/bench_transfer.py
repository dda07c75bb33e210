#!/usr/bin/env python3
"""Bulk transfer over loopback: udt next to raw UDP, TCP, iperf3, SRT and UDT4, in one run.

    python bench/bench_transfer.py [--size 1G] [--runs 3] [--seconds 5] [--quick] [--json FILE]

Every system runs in separate processes (sender and receiver), one after another, ``--runs``
times; the table shows the median, the spread (min–max), the ratio to udt of the same kind
(file transfer or memory to memory) and the CPU seconds per GB moved (user + system time of the
sender and receiver processes, from ``getrusage(RUSAGE_CHILDREN)`` around each run).
Missing peers are skipped with a note.  ``--json FILE`` keeps the raw numbers for ``udt.tools.benchplot``.
The files live on tmpfs (``/dev/shm``) unless ``$UDT_BENCH_DIR`` names another place: issue 10
measures the file rows "1 GiB on tmpfs", so a disk's speed and its page-cache writeback do not
decide them, and every system reads and writes the same kind of memory.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UDP_PAYLOAD = 1456  # what UDT carries per datagram at MSS 1500 (1500 - 28 IP/UDP - 16 UDT)
TCP_BLOCK = 1 << 20
RUN_TIMEOUT = 600.0


class Skip(Exception):
    """This system cannot run here; the message says why (shown in the table)."""


@dataclass
class Row:
    system: str
    kind: str  # "file" or "memory"
    what: str
    mb_per_s: list[float] = field(default_factory=list)
    cpu_s_per_gb: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.mb_per_s) if self.mb_per_s else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_s_per_gb) if self.cpu_s_per_gb else None


def children_cpu() -> float:
    """User + system seconds of every child process that ended and was waited for so far.
    Every system's sender and receiver are children of this process (the peers of
    udt.tools.peers too), so the difference around one run is that run's CPU, both ends."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[], tuple[float, int]]) -> tuple[float, float]:
    """Run one system once: (MB/s, CPU seconds per GB moved by sender and receiver)."""
    before = children_cpu()
    mb_per_s, nbytes = fn()
    cpu = children_cpu() - before
    return mb_per_s, (cpu / (nbytes / 1e9) if nbytes else float("nan"))


# --------------------------------------------------------------------------- helpers

TMPFS = "/dev/shm"


def bench_dir(size: int) -> str | None:
    """Where the files go: ``$UDT_BENCH_DIR``, else tmpfs when it has room for the source and two
    copies, else the system temporary directory (None)."""
    chosen = os.environ.get("UDT_BENCH_DIR")
    if chosen:
        return chosen
    try:
        st = os.statvfs(TMPFS)
    except OSError:
        return None
    if os.access(TMPFS, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= 3 * size:
        return TMPFS
    return None


def parse_size(text: str) -> int:
    from udt.units import parse_size as parse

    return parse(text)


def cli(tool: str, *args: object, python: str = sys.executable) -> list[str]:
    return [python, "-m", f"udt.cli.{tool}", *map(str, args)]


def wait_line(path: Path, prefix: str, proc: subprocess.Popen, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {path.read_text()[-1500:]}")
        time.sleep(0.02)
    raise RuntimeError(f"no {prefix!r} within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError("timed out") from None


def kill(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def worker(*args: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_worker", *map(str, args)]


# --------------------------------------------------------------------------- udt


def run_udt(
    work: Path, *, memory: bool, source: Path, seconds: float, mss: int | str, python: str = sys.executable
) -> tuple[float, int]:
    """One udt-send → udt-recv run; MB/s from the receiver's own timing (header to end record).
    ``python``: the interpreter whose udt runs both ends (``--baseline``: another build)."""
    err, out = work / "recv.err", work / "recv.out"
    target = work / "udt-out"
    shutil.rmtree(target, ignore_errors=True)
    mode = ["--mem"] if memory else ["--output", target]
    with open(out, "wb") as o, open(err, "wb") as e:
        recv = subprocess.Popen(
            cli("recv", "--port", 0, "--bind", "127.0.0.1", "--once", "--json", "--mss", mss, *mode, python=python),
            stdout=o,
            stderr=e,
        )
    send = None
    try:
        address = wait_line(err, "udt-recv: listening on ", recv)
        what = ["--mem", seconds] if memory else [source]
        send = subprocess.Popen(
            cli("send", *what, address, "--json", "--mss", mss, python=python),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        sout, serr = send.communicate(timeout=RUN_TIMEOUT)
        if send.returncode != 0:
            raise RuntimeError(f"udt-send exited {send.returncode}: {serr.decode()[-800:]}")
        if finish(recv) != 0:
            raise RuntimeError(f"udt-recv exited {recv.returncode}: {err.read_text()[-800:]}")
        received = json.loads(out.read_text())
        sent = json.loads(sout)
        if received["sha256"] != sent["sha256"] or received["bytes"] != sent["bytes"]:
            raise RuntimeError("udt transfer not byte-identical")
        return received["bytes"] / received["seconds"] / 1e6, received["bytes"]
    finally:
        kill(*(p for p in (recv, send) if p is not None))
        shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- peers (udt/tools/peers.py)


def _peers() -> Any:
    try:
        from udt.tools import peers
    except ImportError as exc:
        raise Skip(f"udt/tools/peers.py not available ({exc})") from None
    return peers


def run_srt(work: Path, *, source: Path, size: int) -> tuple[float, int]:
    peers = _peers()
    reason = peers.srt_unavailable_reason()
    if reason:
        raise Skip(reason)
    output = work / "srt-out.bin"
    port = peers.free_udp_port()
    try:
        with peers.srt_recv(port, output, timeout=RUN_TIMEOUT) as server:
            server.ready()
            with peers.srt_send(("127.0.0.1", port), source, timeout=RUN_TIMEOUT) as client:
                client.result()
            report = server.result()
        if report["bytes"] != size:
            raise RuntimeError(f"srt-file-transmit delivered {report['bytes']} of {size} bytes")
        return report["bytes"] / report["seconds"] / 1e6, report["bytes"]
    finally:
        output.unlink(missing_ok=True)


def run_udt4(work: Path, *, memory: bool, source: Path, size: int, mss: int) -> tuple[float, int]:
    peers = _peers()
    reason = peers.udt4_unavailable_reason()
    if reason:
        raise Skip(reason)
    output = work / "udt4-out.bin"
    try:
        if memory:
            recv_kw: dict[str, Any] = {"nbytes": size}
            send_kw: dict[str, Any] = {"nbytes": size}
        else:
            recv_kw = {"nbytes": size, "path": output, "api": "file"}
            send_kw = {"path": source, "api": "file"}
        with peers.udt4("recv", mss=mss, timeout=RUN_TIMEOUT, **recv_kw) as server:
            port = server.ready()["port"]
            with peers.udt4("send", connect=("127.0.0.1", port), mss=mss, timeout=RUN_TIMEOUT, **send_kw) as client:
                client.result()
            report = server.result()
        if report["bytes"] != size:
            raise RuntimeError(f"UDT4 delivered {report['bytes']} of {size} bytes")
        return report["bytes"] / report["seconds"] / 1e6, report["bytes"]
    finally:
        output.unlink(missing_ok=True)


# --------------------------------------------------------------------------- kernel baselines


def _pair(recv_args: list[object], send_args: Callable[[str], list[object]]) -> dict[str, Any]:
    recv = subprocess.Popen(worker(*recv_args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    send = None
    try:
        assert recv.stdout is not None
        port = recv.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"receiver failed: {recv.stderr.read() if recv.stderr else ''}")
        send = subprocess.Popen(worker(*send_args(port)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _sout, serr = send.communicate(timeout=RUN_TIMEOUT)
        if send.returncode != 0:
            raise RuntimeError(f"sender failed: {serr[-800:]}")
        rout, rerr = recv.communicate(timeout=RUN_TIMEOUT)
        if recv.returncode != 0:
            raise RuntimeError(f"receiver failed: {rerr[-800:]}")
        return json.loads(rout)
    finally:
        kill(*(p for p in (recv, send) if p is not None))


def run_udp(seconds: float) -> tuple[float, int]:
    """CPU per GB counts what the receiver got: datagrams the kernel dropped cost CPU too."""
    report = _pair(["udp-recv"], lambda port: ["udp-send", port, seconds])
    return report["bytes"] / report["seconds"] / 1e6, report["bytes"]


def run_tcp(size: int) -> tuple[float, int]:
    report = _pair(["tcp-recv"], lambda port: ["tcp-send", port, size])
    return report["bytes"] / report["seconds"] / 1e6, report["bytes"]


def run_iperf3(seconds: float) -> tuple[float, int]:
    tool = shutil.which("iperf3")
    if tool is None:
        raise Skip("iperf3 not installed (apt-get install iperf3)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [tool, "-s", "-1", "-B", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # a refused client never reaches the one-shot server: retry until it listens
            proc = subprocess.run(
                [tool, "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            report = json.loads(proc.stdout or "{}")
            if proc.returncode == 0 and "error" not in report:
                break
            if "refused" not in str(report.get("error", "")) or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {report.get('error', proc.stderr)}")
            time.sleep(0.05)
        received = report.get("end", {}).get("sum_received")
        if not received or not received.get("bits_per_second"):
            raise RuntimeError(f"iperf3 reported no received data: {report.get('error') or proc.stderr[-300:]}")
        return received["bits_per_second"] / 8 / 1e6, int(received.get("bytes", 0))
    finally:
        try:
            server.wait(10)  # the one-shot server ends after its client
        except subprocess.TimeoutExpired:
            pass
        kill(server)


# --------------------------------------------------------------------------- worker processes


def _worker_main(args: list[str]) -> int:
    role = args[0]
    if role == "udp-recv":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", socket.SO_RCVBUF), 32 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1], flush=True)
        buf = bytearray(65536)
        total, first, last = 0, None, None
        sock.settimeout(30)
        while True:
            n, _addr = sock.recvfrom_into(buf)
            if n == 4 and buf[:4] == b"END!":
                break
            last = time.perf_counter()
            if first is None:
                first = last
                sock.settimeout(5)
            total += n
        seconds = (last - first) if first is not None and last != first else 0.0
        print(json.dumps({"bytes": total, "seconds": seconds}), flush=True)
        return 0
    if role == "udp-send":
        port, seconds = int(args[1]), float(args[2])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        payload = os.urandom(UDP_PAYLOAD)
        target = ("127.0.0.1", port)
        sent = 0
        deadline = time.perf_counter() + seconds
        sendto = sock.sendto
        while time.perf_counter() < deadline:
            for _ in range(256):
                sendto(payload, target)
            sent += 256
        for _ in range(50):
            sock.sendto(b"END!", target)
            time.sleep(0.002)
        print(json.dumps({"datagrams": sent}), flush=True)
        return 0
    if role == "tcp-recv":
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        buf = bytearray(TCP_BLOCK)
        total, first = 0, None
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            if first is None:
                first = time.perf_counter()
            total += n
        seconds = time.perf_counter() - first if first is not None else 0.0
        print(json.dumps({"bytes": total, "seconds": seconds}), flush=True)
        return 0
    if role == "tcp-send":
        port, size = int(args[1]), int(args[2])
        block = os.urandom(TCP_BLOCK)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            remaining = size
            while remaining > 0:
                sock.sendall(block if remaining >= TCP_BLOCK else block[:remaining])
                remaining -= TCP_BLOCK
        return 0
    raise SystemExit(f"unknown worker role {role!r}")


# --------------------------------------------------------------------------- table


def table(rows: list[Row]) -> str:
    # the first udt row of each kind wins: the fixed MSS, comparable with UDT4/SRT
    udt_rows = [row for row in reversed(rows) if row.system.startswith("udt ")]
    reference = {row.kind: row.median for row in udt_rows if row.median}
    cpu_reference = {row.kind: row.cpu_median for row in udt_rows if row.cpu_median}
    head = (
        f"| {'system':<38} | {'kind':<6} | {'median MB/s':>11} | {'Mbit/s':>8} "
        f"| {'min–max MB/s':>15} | runs | {'× udt':>6} | {'CPU s/GB':>8} | {'CPU × udt':>9} |"
    )
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for row in rows:
        if row.median is None:
            lines.append(
                f"| {row.system:<38} | {row.kind:<6} | {'—':>11} | {'—':>8} | {'—':>15} | {0:>4} | {'—':>6} "
                f"| {'—':>8} | {'—':>9} |"
            )
            continue
        ref = reference.get(row.kind)
        ratio = f"{row.median / ref:.2f}" if ref else "—"
        spread = f"{min(row.mb_per_s):.0f}–{max(row.mb_per_s):.0f}"
        cpu, cpu_ref = row.cpu_median, cpu_reference.get(row.kind)
        cpu_text = f"{cpu:.2f}" if cpu is not None and cpu == cpu else "—"
        cpu_ratio = f"{cpu / cpu_ref:.2f}" if cpu is not None and cpu == cpu and cpu_ref else "—"
        lines.append(
            f"| {row.system:<38} | {row.kind:<6} | {row.median:>11.1f} | {row.median * 8:>8.0f} | "
            f"{spread:>15} | {len(row.mb_per_s):>4} | {ratio:>6} | {cpu_text:>8} | {cpu_ratio:>9} |"
        )
    notes = [f"- {row.system}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes per file transfer (default 1G = 1 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3; median shown)")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="duration of timed runs: udt --mem, raw UDP, iperf3 (default 5)"
    )
    parser.add_argument(
        "--mss",
        type=int,
        default=1500,
        help="fixed MSS for udt and UDT4 (default 1500); the '--mss auto' rows discover the path's MTU",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 1 run, 1 s")
    parser.add_argument("--only", help="comma-separated substrings: run only matching systems")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here (for udt/tools/benchplot.py)")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run udt --mem and the udt file rows with this interpreter (another build of udt), "
        "interleaved: A/B rows",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.runs, args.seconds = "64M", 1, 1.0
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="udt-bench-", dir=bench_dir(size)) as tmp:
        work = Path(tmp)
        source = work / "payload.bin"
        with open(source, "wb") as f:  # random content, written in blocks (no 1 GiB in memory)
            block = os.urandom(16 << 20)
            remaining = size
            while remaining:
                f.write(block[: min(remaining, len(block))])
                remaining -= min(remaining, len(block))
        mss = args.mss
        systems: list[tuple[Row, Callable[[], tuple[float, int]]]] = [
            (
                Row("udt udt-send → udt-recv", "file", f"{args.size} file"),
                lambda: run_udt(work, memory=False, source=source, seconds=args.seconds, mss=mss),
            ),
            (
                Row("udt udt-send → udt-recv, --mss auto", "file", f"{args.size} file"),
                lambda: run_udt(work, memory=False, source=source, seconds=args.seconds, mss="auto"),
            ),
            (
                Row("srt-file-transmit (SRT file mode)", "file", f"{args.size} file"),
                lambda: run_srt(work, source=source, size=size),
            ),
            (
                Row("UDT4 via udt4py sendfile/recvfile", "file", f"{args.size} file"),
                lambda: run_udt4(work, memory=False, source=source, size=size, mss=mss),
            ),
            (
                Row("udt memory mode (--mem)", "memory", f"{args.seconds:g} s"),
                lambda: run_udt(work, memory=True, source=source, seconds=args.seconds, mss=mss),
            ),
            (
                Row("udt memory mode (--mem), --mss auto", "memory", f"{args.seconds:g} s"),
                lambda: run_udt(work, memory=True, source=source, seconds=args.seconds, mss="auto"),
            ),
            (
                Row("UDT4 via udt4py send/recv", "memory", f"{args.size}"),
                lambda: run_udt4(work, memory=True, source=source, size=size, mss=mss),
            ),
            (
                Row("raw UDP, Python sendto/recvfrom_into", "memory", f"{args.seconds:g} s"),
                lambda: run_udp(args.seconds),
            ),
            (Row("TCP, Python sendall 1 MiB", "memory", f"{args.size}"), lambda: run_tcp(size)),
            (Row("TCP, iperf3", "memory", f"{args.seconds:g} s"), lambda: run_iperf3(args.seconds)),
        ]
        if args.baseline:
            baseline = args.baseline
            systems.insert(
                4,
                (
                    Row("udt memory mode, --baseline build", "memory", f"{args.seconds:g} s, {baseline}"),
                    lambda: run_udt(work, memory=True, source=source, seconds=args.seconds, mss=mss, python=baseline),
                ),
            )
            systems[2:2] = [  # the file rows of the other build, right after this build's
                (
                    Row("udt udt-send → udt-recv, --baseline build", "file", f"{args.size} file, {baseline}"),
                    lambda: run_udt(work, memory=False, source=source, seconds=args.seconds, mss=mss, python=baseline),
                ),
                (
                    Row("udt udt-send → udt-recv, --mss auto, --baseline", "file", f"{args.size} file, {baseline}"),
                    lambda: run_udt(
                        work, memory=False, source=source, seconds=args.seconds, mss="auto", python=baseline
                    ),
                ),
            ]
        if args.only:
            wanted = [w.strip().lower() for w in args.only.split(",")]
            systems = [(row, fn) for row, fn in systems if any(w in row.system.lower() for w in wanted)]
        print(
            f"# bulk transfer over loopback: {args.size} files, {args.seconds:g} s timed runs, "
            f"{args.runs} run(s) each, MSS {mss}, files in {tmp}",
            flush=True,
        )
        # Runs are interleaved (every system once, then again) so that load changes on a shared
        # machine hit every system alike instead of spoiling one system's runs, and every other
        # round goes in reverse order: the first file row after a pause (or after SRT's long
        # run) pays for fresh pages, 10-25 % more CPU on a VM whose host takes freed memory
        # back, and in a fixed order that was always the same row.
        active = list(systems)
        for run in range(args.runs):
            for row, fn in list(active if run % 2 == 0 else reversed(active)):
                try:
                    value, cpu = measure(fn)
                except Skip as exc:
                    row.note = f"skipped: {exc}"
                    active.remove((row, fn))
                    continue
                except Exception as exc:  # one failing system must not hide the others
                    row.note = f"run {run + 1} failed: {exc}".replace("\n", " ")[:300]
                    active.remove((row, fn))
                    continue
                row.mb_per_s.append(value)
                row.cpu_s_per_gb.append(cpu)
                print(f"  run {run + 1}: {row.system}: {value:.1f} MB/s, {cpu:.2f} CPU s/GB", flush=True)
        rows = [row for row, _fn in systems]
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "meta": {
                        "size": size,
                        "size_text": args.size,
                        "runs": args.runs,
                        "seconds": args.seconds,
                        "mss": mss,
                        "files_in": tmp,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "host": platform.node(),
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                    },
                    "results": [
                        {
                            "system": r.system,
                            "kind": r.kind,
                            "what": r.what,
                            "mb_per_s": r.mb_per_s,
                            "median_mb_per_s": r.median,
                            "cpu_s_per_gb": r.cpu_s_per_gb,
                            "median_cpu_s_per_gb": r.cpu_median,
                            "note": r.note,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nraw results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
