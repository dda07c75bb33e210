"""One direction of the relay: the impairment pipeline (filter, loss, queue and link, corruption,
delay, reordering, duplication) applied to each datagram, and the timed release."""

from __future__ import annotations

import collections
import errno
import heapq
import math
import socket
import sys

from udt.tools.impair._common import Address
from udt.tools.impair._sockets import (
    GSO_AVAILABLE,
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENT_SIZE,
    GSO_MAX_SEGMENTS,
    GSO_UNSUPPORTED_ERRNOS,
    SOL_UDP,
    UDP_SEGMENT,
)
from udt.tools.impair.settings import GilbertElliott, Impairment
from udt.tools.impair.stats import DirectionStats

#: Queue limit used when a rate is set without a queue limit: Linux's default txqueuelen.
DEFAULT_QUEUE_PACKETS = 1000


class _Held:
    """A datagram held back for reordering."""

    __slots__ = ("data", "sock", "addr", "arrival", "duplicate", "remaining", "deadline", "index")

    def __init__(
        self,
        data: bytes,
        sock: socket.socket,
        addr: Address | None,
        arrival: float,
        duplicate: bool,
        remaining: int,
        deadline: float,
        index: int,
    ):
        self.data, self.sock, self.addr, self.arrival = data, sock, addr, arrival
        self.duplicate, self.remaining, self.deadline = duplicate, remaining, deadline
        self.index = index  # admission number: only datagrams admitted later overtake it


class _DirectionState:
    """Scheduling state of one direction. Only the relay's loop touches it."""

    def __init__(self, name: str, impairment: Impairment, seed: int):
        import random

        self.name = name
        self.impairment = impairment
        self.stats = DirectionStats()
        streams = ("loss", "burst", "jitter", "reorder", "duplicate", "corrupt")
        # str seeds are hashed with SHA-512 by Random: stable across runs and PYTHONHASHSEED.
        rngs = [random.Random(f"udt-impair:{seed}:{name}:{kind}") for kind in streams]
        self.rng_loss, self.rng_burst, self.rng_jitter, self.rng_reorder, self.rng_duplicate, self.rng_corrupt = rngs
        self.burst_bad = False
        self.link_free = 0.0  # when the link finishes serializing its queue
        self.queue: collections.deque[tuple[float, int]] = collections.deque()  # (finish, size)
        self.queue_bytes = 0
        self.last_due = 0.0  # FIFO: release no earlier than the previous one
        # (due, data, sock, addr, arrival, duplicate, admission number); due times never decrease
        self.fifo: collections.deque[tuple[float, bytes, socket.socket, Address | None, float, bool, int]] = (
            collections.deque()
        )
        self.held: list[_Held] = []
        # (due, tiebreak, data, sock, addr, arrival): duplicates sent later
        self.later: list[tuple[float, int, bytes, socket.socket, Address | None, float]] = []
        self.later_seq = 0
        self.admitted = 0  # datagrams that passed loss and queue (numbers them for reordering)
        self.gso = GSO_AVAILABLE  # send runs of equal-sized datagrams with one sendmsg
        self.gso_limit = GSO_MAX_SEGMENT_SIZE

    def next_due(self) -> float:
        due = math.inf
        if self.fifo:
            due = self.fifo[0][0]
        if self.later and self.later[0][0] < due:
            due = self.later[0][0]
        for held in self.held:
            if held.deadline < due:
                due = held.deadline
        return due

    def in_flight(self) -> int:
        return len(self.fifo) + len(self.held) + len(self.later)

    # -- admission: decide the fate and the release time of one arriving datagram
    def admit(self, data: bytes, sock: socket.socket, addr: Address | None, now: float) -> None:
        imp = self.impairment
        stats = self.stats
        size = len(data)
        stats.received += 1
        stats.bytes_in += size
        subject = True
        if imp.drop is not None or imp.applies_to is not None:
            try:
                if imp.drop is not None and imp.drop(data):
                    stats.dropped_filter += 1
                    return
                if imp.applies_to is not None:
                    subject = bool(imp.applies_to(data))
            except Exception:  # a broken test predicate must not kill the relay
                stats.filter_errors += 1
                stats.dropped_filter += 1
                return
        if subject:
            if imp.loss and self.rng_loss.random() < imp.loss:
                stats.dropped_loss += 1
                return
            if imp.burst is not None and self._burst_loses(imp.burst):
                stats.dropped_loss += 1
                return
        release = now
        if imp.rate is not None:
            queue = self.queue
            while queue and queue[0][0] <= now:
                self.queue_bytes -= queue.popleft()[1]
            limit_packets = imp.queue_packets
            if limit_packets is None and imp.queue_bytes is None:
                limit_packets = DEFAULT_QUEUE_PACKETS
            if (limit_packets is not None and len(queue) >= limit_packets) or (
                imp.queue_bytes is not None and self.queue_bytes + size > imp.queue_bytes
            ):
                stats.dropped_queue += 1
                return
            start = self.link_free if self.link_free > now else now
            release = self.link_free = start + size * 8.0 / imp.rate
            queue.append((release, size))
            self.queue_bytes += size
        if subject and imp.corrupt and self.rng_corrupt.random() < imp.corrupt and size:
            data = self._corrupted(data, imp.corrupt_bits)
            stats.corrupted += 1
        due = release + imp.delay
        if imp.jitter:
            due += self.rng_jitter.uniform(-imp.jitter, imp.jitter)
            if due < release:
                due = release
        if due < self.last_due:
            due = self.last_due
        duplicate = bool(subject and imp.duplicate and self.rng_duplicate.random() < imp.duplicate)
        self.admitted += 1
        if subject and imp.reorder and self.rng_reorder.random() < imp.reorder:
            # Held back: it leaves the FIFO, so the datagrams after it are not delayed by it.
            stats.reordered += 1
            self.held.append(
                _Held(data, sock, addr, now, duplicate, imp.reorder_distance, due + imp.reorder_timeout, self.admitted)
            )
            return
        self.last_due = due
        self.fifo.append((due, data, sock, addr, now, duplicate, self.admitted))

    def _burst_loses(self, model: GilbertElliott) -> bool:
        rng = self.rng_burst
        if self.burst_bad:
            p_loss, p_leave = model.loss_bad, model.p_bad_to_good
        else:
            p_loss, p_leave = model.loss_good, model.p_good_to_bad
        lost = p_loss >= 1.0 or (p_loss > 0.0 and rng.random() < p_loss)
        if p_leave > 0.0 and rng.random() < p_leave:
            self.burst_bad = not self.burst_bad
        return lost

    def _corrupted(self, data: bytes, bits: int) -> bytes:
        buf = bytearray(data)
        nbits = len(buf) * 8
        for bit in self.rng_corrupt.sample(range(nbits), min(bits, nbits)):
            buf[bit >> 3] ^= 1 << (bit & 7)
        return bytes(buf)

    # -- release: send what is due
    def release(self, now: float) -> None:
        """Send everything due by ``now``."""
        fifo = self.fifo
        if fifo and fifo[0][0] <= now:
            if self.gso and not self.held:
                self._release_batched(now)
            else:
                while fifo and fifo[0][0] <= now:
                    _due, data, sock, addr, arrival, duplicate, index = fifo.popleft()
                    self._send(data, sock, addr, arrival, now)
                    if duplicate:
                        self._duplicate(data, sock, addr, arrival, now)
                    if self.held:
                        self._overtaken(index, now)
        if self.later:
            later = self.later
            while later and later[0][0] <= now:
                _due, _seq, data, sock, addr, arrival = heapq.heappop(later)
                self._send(data, sock, addr, arrival, now)
        if self.held:
            for held in [h for h in self.held if h.deadline <= now]:
                self._release_held(held, now)

    def _release_batched(self, now: float) -> None:
        """Send due datagrams, each run of equal-sized ones to one destination as a single
        ``sendmsg`` with UDP GSO: the kernel cuts it into the same datagrams at a fraction of
        the cost of one send each (which is what limits the relay's rate)."""
        fifo = self.fifo
        while fifo and fifo[0][0] <= now:
            first = fifo.popleft()
            _due, data, sock, addr, arrival, duplicate, _index = first
            size = len(data)
            if duplicate or not 0 < size <= self.gso_limit or not fifo or fifo[0][0] > now:
                self._send(data, sock, addr, arrival, now)
                if duplicate:
                    self._duplicate(data, sock, addr, arrival, now)
                continue
            batch = [first]
            total = size
            while fifo and len(batch) < GSO_MAX_SEGMENTS:
                entry = fifo[0]
                length = len(entry[1])
                if (
                    entry[0] > now
                    or entry[2] is not sock
                    or entry[3] != addr
                    or entry[5]
                    or length > size
                    or length == 0
                    or total + length > GSO_MAX_BYTES
                ):
                    break
                batch.append(fifo.popleft())
                total += length
                if length < size:  # only the last segment may be shorter
                    break
            if len(batch) == 1:
                self._send(data, sock, addr, arrival, now)
            else:
                self._send_gso(batch, size, total, sock, addr, now)

    def _send_gso(
        self,
        batch: list[tuple[float, bytes, socket.socket, Address | None, float, bool, int]],
        size: int,
        total: int,
        sock: socket.socket,
        addr: Address | None,
        now: float,
    ) -> None:
        stats = self.stats
        ancillary = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
        try:
            if addr is None:
                sock.sendmsg([entry[1] for entry in batch], ancillary)
            else:
                sock.sendmsg([entry[1] for entry in batch], ancillary, 0, addr)
        except OSError as exc:
            if exc.errno in GSO_UNSUPPORTED_ERRNOS:
                if exc.errno == errno.EINVAL:  # segment too large for the route's MTU
                    self.gso_limit = size - 1
                else:  # no GSO here after all: one by one from now on
                    self.gso = False
                for _due, data, _sock, _addr, arrival, _dup, _index in batch:
                    self._send(data, sock, addr, arrival, now)
            else:  # EAGAIN, ECONNREFUSED, ENOBUFS: the whole batch is lost
                stats.dropped_send += len(batch)
            return
        stats.forwarded += len(batch)
        stats.bytes_out += total
        for entry in batch:
            spent = now - entry[4]
            stats.delay_sum += spent
            if spent < stats.delay_min:
                stats.delay_min = spent
            if spent > stats.delay_max:
                stats.delay_max = spent

    def _overtaken(self, index: int, now: float) -> None:
        """Datagram number ``index`` was just sent: it overtook the held ones admitted before it."""
        for held in list(self.held):
            if held.index > index:
                continue
            held.remaining -= 1
            if held.remaining <= 0:
                self._release_held(held, now)

    def _release_held(self, held: _Held, now: float) -> None:
        self.held.remove(held)
        self._send(held.data, held.sock, held.addr, held.arrival, now)
        if held.duplicate:
            self._duplicate(held.data, held.sock, held.addr, held.arrival, now)

    def _duplicate(self, data: bytes, sock: socket.socket, addr: Address | None, arrival: float, now: float) -> None:
        self.stats.duplicated += 1
        gap = self.impairment.duplicate_delay
        if gap <= 0.0:
            self._send(data, sock, addr, arrival, now)
        else:
            self.later_seq += 1
            heapq.heappush(self.later, (now + gap, self.later_seq, data, sock, addr, arrival))

    def _send(self, data: bytes, sock: socket.socket, addr: Address | None, arrival: float, now: float) -> None:
        stats = self.stats
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:  # EAGAIN, ECONNREFUSED from an earlier ICMP, ENOBUFS: a lost datagram
            stats.dropped_send += 1
            return
        stats.forwarded += 1
        stats.bytes_out += len(data)
        spent = now - arrival
        stats.delay_sum += spent
        if spent < stats.delay_min:
            stats.delay_min = spent
        if spent > stats.delay_max:
            stats.delay_max = spent
