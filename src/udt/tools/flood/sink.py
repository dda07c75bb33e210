"""A udt listener to flood, in its own process so its RSS and CPU can be measured alone.

Protocol per connection: the client sends an 8-byte big-endian length then that many bytes;
the sink answers with the 32-byte sha256 of what it read, then reads to EOF and closes.  The
client compares digests, so every transfer is checked end to end.

``python -m udt.tools.flood.sink`` prints ``port N`` once listening, then serves until stdin
closes or SIGTERM, and prints one JSON line: connections served, the multiplexer's counters.
:func:`exchange` is the client side, :class:`SinkProcess` starts and measures the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import udt

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _recv_exact(conn: udt.socket, n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = conn.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError(f"EOF with {n} bytes still expected")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _serve_one(conn: udt.socket, served: list[int], lock: threading.Lock) -> None:
    try:
        with conn:
            conn.settimeout(60)
            (length,) = struct.unpack(">Q", _recv_exact(conn, 8))
            digest = hashlib.sha256()
            left = length
            while left > 0:
                chunk = conn.recv(min(left, 1 << 20))
                if not chunk:
                    return  # the client died (the soak kills some): nothing to answer
                digest.update(chunk)
                left -= len(chunk)
            conn.sendall(digest.digest())
            while conn.recv(4096):
                pass
        with lock:
            served[0] += 1
    except OSError:
        with lock:
            served[1] += 1


def serve(port: int = 0, host: str = "127.0.0.1", idle_timeout_ms: int = 0) -> int:
    """Run the sink until stdin reaches EOF or SIGTERM; returns the exit status.
    idle_timeout_ms: UDT_PEERIDLETIMEO of the accepted connections (0: the default)."""
    server = udt.socket()
    if idle_timeout_ms > 0:
        server.setsockopt(udt.UDT_PEERIDLETIMEO, idle_timeout_ms)
    server.bind((host, port))
    server.listen(1024)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # the parent closed our stdin (or died): stop
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    served = [0, 0]
    lock = threading.Lock()
    workers: list[threading.Thread] = []
    print(f"port {server.getsockname()[1]}", flush=True)
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        t = threading.Thread(target=_serve_one, args=(conn, served, lock), daemon=True)
        t.start()
        workers = [w for w in workers if w.is_alive()] + [t]
    for w in workers:
        w.join(5)
    stats = server._mux.stats()
    server.close()
    print(json.dumps({"served": served[0], "failed": served[1], "threads": threading.active_count(), **stats}))
    return 0


def exchange(
    address: tuple[str, int],
    data: bytes,
    timeout: float = 30.0,
    source_address: tuple[str, int] | None = None,
    options: dict | None = None,
) -> float:
    """Connect, send data, check the sink's sha256; returns the connect time in seconds."""
    started = time.perf_counter()
    with udt.create_connection(address, timeout=timeout, source_address=source_address, options=options) as conn:
        connected = time.perf_counter() - started
        conn.settimeout(timeout)
        conn.sendall(struct.pack(">Q", len(data)) + data)
        digest = _recv_exact(conn, 32)
    if digest != hashlib.sha256(data).digest():
        raise AssertionError("sha256 mismatch: the sink received other bytes")
    return connected


def paced_client(address: tuple[str, int], size: int, chunk: int = 65536, pause: float = 0.01) -> int:
    """Send size bytes slowly and check the digest (the soak kill -9s this mid-transfer)."""
    data = os.urandom(chunk)
    digest = hashlib.sha256()
    with udt.create_connection(address, timeout=10) as conn:
        conn.sendall(struct.pack(">Q", size))
        left = size
        while left > 0:
            piece = data[: min(left, chunk)]
            conn.sendall(piece)
            digest.update(piece)
            left -= len(piece)
            time.sleep(pause)
        ok = _recv_exact(conn, 32) == digest.digest()
    return 0 if ok else 1


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system
    rss_bytes: int
    threads: int
    fds: int
    socket_drops: int  # datagrams the kernel dropped at the listener's full socket buffer


class SinkProcess:
    """The sink in a child process; usage() reads its /proc entries."""

    def __init__(self, idle_timeout_ms: int = 0, steady_malloc: bool = True) -> None:
        env = dict(os.environ)
        if steady_malloc:
            # glibc raises its mmap threshold after freeing a large block and keeps one arena
            # per thread, so freed connection buffers stay in RSS as allocator reserve; with a
            # fixed threshold and two arenas RSS follows the memory udt actually holds
            env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_ARENA_MAX="2")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "udt.tools.flood.sink", "--idle-timeout-ms", str(idle_timeout_ms)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = ("127.0.0.1", self.port)

    def usage(self) -> Usage:
        pid = self.proc.pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        rss = threads = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return Usage(cpu, rss, threads, fds, self._socket_drops())

    def _socket_drops(self) -> int:
        suffix = f":{self.port:04X}"
        with open("/proc/net/udp") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 12 and fields[1].endswith(suffix) and fields[1].startswith("0100007F"):
                    return int(fields[-1])
        return 0

    def stop(self) -> dict:
        """Stop the sink; returns its final JSON report."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.close()
            out = self.proc.stdout.read()
            self.proc.stdout.close()
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m udt.tools.flood.sink", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--idle-timeout-ms", type=int, default=0)
    p.add_argument("--client", metavar="PORT", type=int, help="be a paced client of the sink at PORT instead")
    p.add_argument("--size", type=int, default=64 << 20, help="bytes the paced client sends")
    args = p.parse_args(argv)
    if args.client:
        return paced_client(("127.0.0.1", args.client), args.size)
    return serve(args.port, idle_timeout_ms=args.idle_timeout_ms)


if __name__ == "__main__":
    sys.exit(main())
