"""The emulated link under bench_wan.py: ``udt.tools.wan.WanLink`` when installed, else a veth
pair with a tbf rate limit (rate and drop-tail queue only: no delay, no loss — said in the output).

Both give the bench one face: ``receiver_host``, ``popen_sender(argv, i)``,
``popen_receiver(argv)`` (processes inside the namespaces, killed on exit), ``flows_started()``
(t = 0 of the rate schedule) and ``counters()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from _wan_paths import QUEUE_MS, WanPath

try:
    from udt.tools.wan import GilbertElliott, LinkSpec, WanLink
except ImportError:
    WanLink = None


def close_links_on_sigterm() -> None:
    """Let SIGTERM (a ``timeout``, a cancelled job) unwind the bench like Ctrl-C does.

    Its default action ends the process on the spot: no ``with`` block or ``atexit`` hook runs,
    and the run's namespaces and their processes stay behind.  As SystemExit, every open link
    closes on the way out."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


GE_MEAN_BURST = 8  # packets per loss burst of the Gilbert–Elliott path

EMULATES_PATHS = WanLink is not None  # the tbf fallback has no delay and no loss: goals mean nothing there
LINK_BACKEND = "udt.tools.wan" if EMULATES_PATHS else "veth + tbf (rate and queue only: no delay, no loss)"
POPEN = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


class _WanFace:
    """udt.tools.wan.WanLink seen through the bench's face."""

    def __init__(self, wan: Any) -> None:
        self.wan = wan
        self.receiver_host = wan.right_addr

    def popen_sender(self, argv: Sequence[str], i: int = 0) -> subprocess.Popen:
        return self.wan.popen_left(list(argv), i=i, **POPEN)

    def popen_receiver(self, argv: Sequence[str]) -> subprocess.Popen:
        return self.wan.popen_right(list(argv), **POPEN)

    def counters(self) -> dict[str, Any]:
        return self.wan.counters()

    def flows_started(self) -> None:
        self.wan.restart_schedule()

    def udp_counters(self) -> dict[str, dict[str, int]]:
        return self.wan.udp_counters()


def _spec(path: WanPath, seed: int, *, forward: bool) -> Any:
    kwargs: dict[str, Any] = {
        "rate": f"{path.rate_mbit:g}Mbit",
        "delay_ms": path.rtt_ms / 2,
        "queue_ms": QUEUE_MS,
        "seed": seed,
    }
    if path.bursty:
        kwargs["ge"] = GilbertElliott.from_mean(path.loss, GE_MEAN_BURST)
    elif path.loss:
        kwargs["loss"] = path.loss
    if path.schedule and forward:  # the rate changes on the data direction only
        kwargs["schedule"] = [(t, f"{r:g}Mbit") for t, r in path.schedule]
    return LinkSpec(**kwargs)


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class _TbfLink:
    """Two namespaces, one veth pair, tbf on each end's egress; ``schedule`` changes the forward
    rate from a timer thread.  Namespace names carry the pid, so parallel runs never clash."""

    def __init__(self, path: WanPath) -> None:
        self.path = path
        self.left, self.right = f"bw{os.getpid()}l", f"bw{os.getpid()}r"
        self.processes: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._follow_schedule, daemon=True)
        try:
            for ns in (self.left, self.right):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.left, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns", self.right)
            for ns, addr in ((self.left, "10.77.0.1/24"), (self.right, "10.77.0.2/24")):
                _ip("-n", ns, "addr", "add", addr, "dev", "wan0")
                _ip("-n", ns, "link", "set", "wan0", "up")
                self._tbf(ns, path.rate_mbit, "add")
            self._wait_up()
        except BaseException:
            self.close()
            raise
        self.receiver_host = "10.77.0.2"

    def flows_started(self) -> None:
        """t = 0 of the rate schedule."""
        self._timer.start()

    def _wait_up(self) -> None:
        """A new veth carries traffic only once its carrier is up (up to a second later)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = [_ip("-n", ns, "-br", "link", "show", "wan0").stdout.split()[1] for ns in (self.left, self.right)]
            if states == ["UP", "UP"]:
                return
            time.sleep(0.05)
        raise RuntimeError("veth of the tbf link never came up")

    def _tbf(self, ns: str, mbit: float, verb: str) -> None:
        rate = mbit * 1e6 / 8
        # A bucket smaller than a 64 KB GSO datagram drops every one of udt's GSO sends: at
        # 50 Mbit/s with 32 KB the connection broke within 2 s while TCP went on.
        burst = max(128 << 10, int(rate / 250))
        limit = int(rate * QUEUE_MS / 1000) + burst
        tbf = ["tbf", "rate", f"{mbit:g}mbit", "burst", str(burst), "limit", str(limit)]
        _ip("netns", "exec", ns, "tc", "qdisc", verb, "dev", "wan0", "root", *tbf)

    def _follow_schedule(self) -> None:
        elapsed = 0.0
        for at, mbit in self.path.schedule:
            if self._stop.wait(at - elapsed):
                return
            elapsed = at
            self._tbf(self.left, mbit, "change")

    def _popen(self, ns: str, argv: Sequence[str]) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, **POPEN)
        self.processes.append(proc)
        return proc

    def popen_sender(self, argv: Sequence[str], i: int = 0) -> subprocess.Popen:
        return self._popen(self.left, argv)

    def popen_receiver(self, argv: Sequence[str]) -> subprocess.Popen:
        return self._popen(self.right, argv)

    def counters(self) -> dict[str, Any]:
        out = {}
        for name, ns in (("forward", self.left), ("reverse", self.right)):
            words = _ip("netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", "wan0").stdout.split()
            sent = int(words[words.index("Sent") + 3]) if "Sent" in words else None
            dropped = int(words[words.index("(dropped") + 1].rstrip(",")) if "(dropped" in words else None
            out[name] = {"delivered": sent, "queue_drops": dropped, "random_drops": 0}
        return out

    def close(self) -> None:
        self._stop.set()
        if self._timer.is_alive():
            self._timer.join()
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for ns in (self.left, self.right):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)  # anything still inside keeps the namespace alive
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextmanager
def open_link(path: WanPath, *, seed: int, senders: int = 1) -> Iterator[Any]:
    """A fresh link for one run of one system (so no run inherits another's queue)."""
    if WanLink is not None:
        forward = _spec(path, seed, forward=True)
        reverse = _spec(path, seed + 1000, forward=False)
        with WanLink(forward=forward, reverse=reverse, senders=senders) as wan:
            yield _WanFace(wan)
        return
    link = _TbfLink(path)
    try:
        yield link
    finally:
        link.close()
