"""The relay's sockets and event loop, the same in a worker thread and in the child process."""

from __future__ import annotations

import dataclasses
import math
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable

from udt.tools.impair._common import DIRECTIONS, Address
from udt.tools.impair._direction import _DirectionState
from udt.tools.impair._sockets import (
    CMSG_BUFFER,
    MAX_DATAGRAM,
    SCM_TIMESTAMPNS,
    SOL_UDP,
    TIMESPEC,
    UDP_GRO,
    _enable_gro,
    _enable_timestamps,
    _resolve,
    _set_buffers,
)
from udt.tools.impair.settings import Impairment
from udt.tools.impair.stats import RelayStats

#: Datagrams read from one socket before the loop looks at its release queues again, so a flood
#: on one side cannot delay releases (and thus distort delay and rate) for long.
READ_BATCH = 64

#: Waits shorter than this are slept with ``time.sleep`` (µs precision) instead of epoll
#: (whose timeout is rounded up to whole milliseconds), so release times stay accurate.
FINE_WAIT = 0.002
#: select(2) cannot watch file descriptors at or above this (glibc's fd_set size).
FD_SETSIZE = 1024


class _Engine:
    """The relay's sockets and event loop (runs in a thread or in the child process)."""

    def __init__(
        self,
        target: Address,
        listen: Address | None,
        a_to_b: Impairment,
        b_to_a: Impairment,
        seed: int,
        max_clients: int,
    ):
        self.target_family, self.target = _resolve(target, "target")
        if listen is None:
            listen = ("::1" if self.target_family == socket.AF_INET6 else "127.0.0.1", 0)
        listen_family, listen_addr = _resolve(listen, "listen")
        self.max_clients = max_clients
        self.directions = {
            "a_to_b": _DirectionState("a_to_b", a_to_b, seed),
            "b_to_a": _DirectionState("b_to_a", b_to_a, seed),
        }
        self.lock = threading.Lock()
        self.rejected_clients = 0
        self.upstream: dict[Address, socket.socket] = {}  # A address -> socket towards B
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.wake_r = self.wake_w = -1
        try:
            self.public = socket.socket(listen_family, socket.SOCK_DGRAM)
        except BaseException:
            self.selector.close()
            raise
        try:
            self.wake_r, self.wake_w = os.pipe()
            if listen_family == socket.AF_INET6:
                self.public.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.public.bind(listen_addr)
            self.public.setblocking(False)
            _set_buffers(self.public)
            _enable_timestamps(self.public)
            _enable_gro(self.public)
            self.selector.register(self.public, selectors.EVENT_READ, None)
            os.set_blocking(self.wake_r, False)
            self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        except BaseException:
            self.close()
            raise
        self.address: Address = self.public.getsockname()
        self.fine_fds: list[int] | None = None
        self._update_fine_fds()

    def _update_fine_fds(self) -> None:
        """File descriptors for select(2), or None if one is too large for an fd_set."""
        fds = [key.fd for key in self.selector.get_map().values()]
        self.fine_fds = fds if max(fds) < FD_SETSIZE else None

    def close(self) -> None:
        for sock in [self.public, *self.upstream.values()]:
            sock.close()
        self.upstream.clear()
        self.selector.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        self.wake_r = self.wake_w = -1

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def snapshot(self) -> RelayStats:
        with self.lock:
            parts = {}
            for name, state in self.directions.items():
                stats = dataclasses.replace(state.stats)
                stats.in_flight = state.in_flight()
                parts[name] = stats
            return RelayStats(parts["a_to_b"], parts["b_to_a"], len(self.upstream), self.rejected_clients)

    def set_impairment(self, direction: str, impairment: Impairment) -> None:
        if direction not in self.directions:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not isinstance(impairment, Impairment):
            raise ValueError(f"impairment must be an Impairment, got {impairment!r}")
        with self.lock:
            self.directions[direction].impairment = impairment

    def clients(self) -> dict[Address, Address]:
        with self.lock:
            return {a: s.getsockname() for a, s in self.upstream.items()}

    def _upstream_for(self, client: Address) -> socket.socket | None:
        sock = self.upstream.get(client)
        if sock is not None:
            return sock
        if len(self.upstream) >= self.max_clients:
            self.rejected_clients += 1
            return None
        try:
            sock = socket.socket(self.target_family, socket.SOCK_DGRAM)
        except OSError:  # out of file descriptors: refuse this client, keep serving the others
            self.rejected_clients += 1
            return None
        try:
            sock.connect(self.target)  # replies from anyone but B are filtered by the kernel
            sock.setblocking(False)
            _set_buffers(sock)
            _enable_timestamps(sock)
            _enable_gro(sock)
            self.selector.register(sock, selectors.EVENT_READ, client)
        except BaseException:
            sock.close()
            raise
        self.upstream[client] = sock
        self._update_fine_fds()
        return sock

    def _read(self, sock: socket.socket, client: Address | None) -> None:
        """Read up to READ_BATCH datagrams (or GRO batches) from one socket and admit them, each
        at the time the kernel received it: a relay that reads late (its CPU was busy) must not
        make the emulated link idle or the delay longer."""
        if client is None:  # the public socket: from some A, towards B
            state = self.directions["a_to_b"]
            public = True
        else:  # an upstream socket: from B, back to the A it belongs to
            state = self.directions["b_to_a"]
            public = False
        admit = state.admit
        now = time.monotonic()
        realtime_offset = time.time() - now  # kernel stamps are CLOCK_REALTIME
        recvmsg = sock.recvmsg
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _flags, source = recvmsg(MAX_DATAGRAM, CMSG_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error (B's port closed when we sent): not fatal, go on
                continue
            if public:
                out = self._upstream_for(source)
                if out is None:
                    continue
                dest = None
            else:
                out, dest = self.public, client
            arrival = now
            segment = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanoseconds = TIMESPEC.unpack_from(value)
                    stamped = seconds + nanoseconds * 1e-9 - realtime_offset
                    if stamped < arrival:
                        arrival = stamped
                elif level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                    segment = int.from_bytes(value[:4], sys.byteorder)
            if 0 < segment < len(data):  # a GRO batch: the sender's datagrams, cut again
                for start in range(0, len(data), segment):
                    admit(data[start : start + segment], out, dest, arrival)
            else:
                admit(data, out, dest, arrival)

    def run(self, on_command: Callable[[], bool] | None = None, command_fd: int | None = None) -> None:
        """Serve until :meth:`stop` (or ``on_command`` returns False). Sleeps exactly until a
        socket is readable or the next datagram is due; never spins."""
        selector = self.selector
        directions = tuple(self.directions.values())
        monotonic = time.monotonic
        if command_fd is not None:
            selector.register(command_fd, selectors.EVENT_READ, "command")
            self._update_fine_fds()
        try:
            while not self.stopping:
                with self.lock:
                    now = monotonic()
                    for state in directions:
                        state.release(now)
                    due = min(state.next_due() for state in directions)
                wait = due - monotonic()
                if wait <= 0.0:
                    timeout: float | None = 0.0
                elif wait < FINE_WAIT:
                    # epoll rounds its timeout up to whole milliseconds: wait with select(2)
                    # (microseconds) for the last stretch, then collect what became readable.
                    if self.fine_fds is not None:
                        select.select(self.fine_fds, [], [], wait)
                    else:
                        time.sleep(wait)
                    timeout = 0.0
                elif math.isfinite(wait):
                    timeout = math.floor((wait - FINE_WAIT / 2) * 1000.0) / 1000.0
                else:
                    timeout = None
                events = selector.select(timeout)
                for key, _mask in events:
                    tag = key.data
                    if tag == "wake":
                        try:
                            os.read(self.wake_r, 4096)
                        except BlockingIOError:
                            pass
                    elif tag == "command":
                        if on_command is not None and not on_command():
                            return
                    else:
                        with self.lock:
                            self._read(key.fileobj, tag)  # type: ignore[arg-type]
        finally:
            if command_fd is not None:
                try:
                    selector.unregister(command_fd)
                except (KeyError, ValueError):
                    pass

    def stop(self) -> None:
        self.stopping = True
        self.wake()
