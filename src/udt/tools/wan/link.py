""":class:`WanLink`: namespaces joined by the emulated link, as a context manager.

Layout (``senders=1``)::

    left (10.77.0.1, wan0) ==TUN== forwarder ==TUN== right (10.77.0.2, wan0)

With ``senders=N > 1`` (a dumbbell) *left* becomes a router: N sender namespaces hang off it on
veths (sender i is 10.78.i.2, its router side 10.78.i.1) and all their traffic shares the
forward shaper's queue towards *right*.  Any IP traffic crosses (TCP, UDP, IPv6: fd77::1 / ::2).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from udt.tools.wan import netns
from udt.tools.wan._link import Forwarder, Shaper
from udt.tools.wan.spec import LinkSpec, parse_rate

__all__ = ["WanLink", "WanUnavailable"]

LEFT_ADDR = "10.77.0.1"
RIGHT_ADDR = "10.77.0.2"
LEFT_ADDR6 = "fd77::1"
RIGHT_ADDR6 = "fd77::2"
TUN_NAME = "wan0"
TUN_QUEUE = 10000  # packets the kernel may hold for the forwarder: bursts, not a second queue
DIRECTIONS = ("forward", "reverse")

_live: set[WanLink] = set()


class WanUnavailable(RuntimeError):
    """Namespaces or TUN devices cannot be made here (the message says why)."""


def _shaper(name: str, spec: LinkSpec, mtu: int) -> Shaper:
    return Shaper(
        name,
        spec.rate_bps,
        max_rate_bps=spec.max_rate_bps(),
        delay_ns=round(spec.delay_ms * 1e6),
        jitter_ns=round(spec.jitter_ms * 1e6),
        queue_ns=round(spec.queue_ms * 1e6),
        queue_packets=spec.queue_packets,
        loss=spec.loss,
        ge=None if spec.ge is None else spec.ge.as_tuple(),
        seed=spec.seed,
        schedule=spec.schedule_bps(),
        mtu=mtu,
    )


class WanLink:
    """An emulated WAN path between namespaces; ``forward`` shapes left→right, ``reverse``
    right→left (default: the same settings, the seed + 1).  Leaving the ``with`` block, normally
    or by an exception, or interpreter exit, stops the forwarder, kills the processes started
    here and deletes every namespace made."""

    def __init__(
        self,
        forward: LinkSpec,
        reverse: LinkSpec | None = None,
        *,
        senders: int = 1,
        mtu: int = 1500,
        offload: bool = True,
    ) -> None:
        if senders < 1 or senders > 250:
            raise ValueError(f"senders must be 1..250, got {senders}")
        if reverse is None:
            reverse = dataclasses.replace(forward, seed=forward.seed + 1)
        self.forward_spec = forward
        self.reverse_spec = reverse
        self.senders = senders
        self.mtu = mtu
        # UDP segmentation offload on the TUNs: a GSO sender's batch is one read, not one per
        # datagram (docs/tools.md); False where the kernel refuses it.
        self.offload = offload
        # Built before any namespace exists, so bad settings fail without anything to clean.
        self._shapers = {"forward": _shaper("forward", forward, mtu), "reverse": _shaper("reverse", reverse, mtu)}
        self.left_ns = netns.unique_name("left")
        self.right_ns = netns.unique_name("right")
        self.sender_ns = [self.left_ns] if senders == 1 else [netns.unique_name(f"s{i}") for i in range(senders)]
        self.left_addr, self.right_addr = LEFT_ADDR, RIGHT_ADDR
        self.left_addr6, self.right_addr6 = LEFT_ADDR6, RIGHT_ADDR6
        self.sender_addrs = [LEFT_ADDR] if senders == 1 else [f"10.78.{i}.2" for i in range(senders)]
        self._made: list[str] = []
        self._fds: list[int] = []
        self._processes: list[subprocess.Popen] = []
        self._forwarder: Forwarder | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> WanLink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __hash__(self) -> int:
        return id(self)

    def start(self) -> None:
        """Make the namespaces and devices, start forwarding (``__enter__`` calls this)."""
        if self._forwarder is not None or self._closed:
            raise RuntimeError("a WanLink starts once")
        reason = netns.unavailable_reason()
        if reason is not None:
            raise WanUnavailable(reason)
        netns.sweep_orphans()
        _live.add(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for name in (self.left_ns, self.right_ns):
            netns.add_netns(name)
            self._made.append(name)
        for name, addr, addr6 in (
            (self.left_ns, LEFT_ADDR, LEFT_ADDR6),
            (self.right_ns, RIGHT_ADDR, RIGHT_ADDR6),
        ):
            self._fds.append(self._open_tun(name))
            netns.ip(name, "link", "set", TUN_NAME, "mtu", str(self.mtu), "txqueuelen", str(TUN_QUEUE), "up")
            netns.ip(name, "addr", "add", f"{addr}/24", "dev", TUN_NAME)
            netns.ip(name, "-6", "addr", "add", f"{addr6}/64", "dev", TUN_NAME, "nodad")
        if self.senders > 1:
            self._build_dumbbell()
        self._forwarder = Forwarder(
            self._fds[0], self._fds[1], self._shapers["forward"], self._shapers["reverse"], vnet_hdr=self.offload
        )
        self._forwarder.start_schedules()
        self._thread = threading.Thread(target=self._run, name=f"wan-{self.left_ns}", daemon=True)
        self._thread.start()

    def _open_tun(self, name: str) -> int:
        if self.offload:
            try:
                return netns.open_tun(name, TUN_NAME, offload=True)
            except OSError:
                if self._fds:  # the first TUN has offloads: the second must match
                    raise
                self.offload = False
        return netns.open_tun(name, TUN_NAME)

    def _build_dumbbell(self) -> None:
        netns.run(["ip", "netns", "exec", self.left_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        netns.ip(self.right_ns, "route", "add", "10.78.0.0/16", "dev", TUN_NAME)
        for i, name in enumerate(self.sender_ns):
            netns.add_netns(name)
            self._made.append(name)
            netns.ip(name, "link", "add", "eth0", "type", "veth", "peer", "name", f"s{i}", "netns", self.left_ns)
            netns.ip(name, "addr", "add", f"10.78.{i}.2/24", "dev", "eth0")
            netns.ip(self.left_ns, "addr", "add", f"10.78.{i}.1/24", "dev", f"s{i}")
            netns.ip(name, "link", "set", "eth0", "mtu", str(self.mtu), "up")
            netns.ip(self.left_ns, "link", "set", f"s{i}", "mtu", str(self.mtu), "up")
        for i, name in enumerate(self.sender_ns):
            netns.wait_up(name, "eth0")
            netns.wait_up(self.left_ns, f"s{i}")
            netns.ip(name, "route", "add", "default", "via", f"10.78.{i}.1")

    def _run(self) -> None:
        assert self._forwarder is not None
        try:
            self._forwarder.run()
        except OSError as error:
            self._error = error

    def close(self) -> None:
        """Stop forwarding, kill processes started here, delete the namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._forwarder is not None and self._thread is not None:
            self._forwarder.stop()
            self._thread.join(timeout=10)
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            try:
                process.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass
        for name in reversed(self._made):
            netns.delete_netns(name)
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        _live.discard(self)

    # -- commands in the namespaces -----------------------------------------------------------

    def exec_argv(self, namespace: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def popen_left(self, argv: Sequence[str], i: int = 0, **kwargs: Any) -> subprocess.Popen:
        """Start *argv* in sender *i*'s namespace (the left end when ``senders=1``); killed on exit."""
        return self._popen(self.sender_ns[i], argv, kwargs)

    def popen_right(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start *argv* in the right namespace; killed on exit."""
        return self._popen(self.right_ns, argv, kwargs)

    def run_left(self, argv: Sequence[str], i: int = 0, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run *argv* in sender *i*'s namespace and wait (``subprocess.run`` keywords)."""
        return subprocess.run(self.exec_argv(self.sender_ns[i], argv), **kwargs)

    def run_right(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(self.exec_argv(self.right_ns, argv), **kwargs)

    def _popen(self, namespace: str, argv: Sequence[str], kwargs: dict[str, Any]) -> subprocess.Popen:
        if self._closed or self._forwarder is None:
            raise RuntimeError("the WanLink is not running")
        process = subprocess.Popen(self.exec_argv(namespace, argv), **kwargs)
        self._processes.append(process)
        return process

    # -- control and counters -----------------------------------------------------------------

    def counters(self) -> dict[str, dict[str, float]]:
        """``{"forward": {...}, "reverse": {...}}``: delivered, random_drops, ge_drops,
        queue_drops, overflow_drops, invalid, queue_delay_ms_mean/max, rate_bps, ... (live).
        Raises OSError if the forwarder died (a TUN fd failed): the figures would be stale."""
        if self._error is not None:
            raise OSError(f"the WAN forwarder stopped: {self._error}") from self._error
        return {name: shaper.counters() for name, shaper in self._shapers.items()}

    def udp_counters(self) -> dict[str, dict[str, int]]:
        """Each end's kernel UDP counters (``/proc/net/snmp``: InDatagrams, RcvbufErrors,
        SndbufErrors, InErrors ...) by ``"left"``/``"right"``: drops at a receiving socket whose
        buffer overflowed happen after the link and show only here."""
        return {
            side: _udp_snmp(self.exec_argv(ns, ["cat", "/proc/net/snmp"]))
            for side, ns in (("left", self.left_ns), ("right", self.right_ns))
        }

    def forwarder_cpu_seconds(self) -> float:
        """CPU time the forwarder thread has used so far (user + system): the link's own cost,
        which on a small machine the endpoints do not get."""
        if self._thread is None or self._thread.ident is None:
            raise RuntimeError("the WanLink is not running")
        return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))

    def set_rate(self, direction: str, rate: str | float) -> None:
        """Change a direction's rate now (``"50Mbit"`` or bits/s, at most its ``max_rate``)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        self._shapers[direction].set_rate(parse_rate(rate))

    def restart_schedule(self) -> None:
        """Make now t = 0 of both directions' rate schedules (e.g. when the flow starts)."""
        if self._forwarder is None:
            raise RuntimeError("the WanLink is not running")
        self._forwarder.start_schedules()


def _udp_snmp(argv: Sequence[str]) -> dict[str, int]:
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0], rows[1])}


@atexit.register
def _close_leftovers() -> None:
    for link in list(_live):
        link.close()
