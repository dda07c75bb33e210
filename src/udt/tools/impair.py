"""A UDP impairment relay: the user-space stand-in for netem, which this kernel lacks.

The relay stands between two endpoints A and B. A sends to :attr:`Relay.address`; the relay
forwards each datagram to B from a socket of its own (one per A-side source address, so B's
replies find their way back to that A), and forwards B's replies back to A. Each direction
(``a_to_b``, ``b_to_a``) applies its own :class:`Impairment`, reproducibly from a seed:

* fixed delay plus jitter (jitter never reorders: each direction stays FIFO),
* Bernoulli loss and bursty loss (:class:`GilbertElliott`),
* reordering (a packet is held back until the next *n* packets have passed it),
* duplication, payload corruption (bit flips, length kept),
* a rate limit modelled as a link (serialization delay) behind a drop-tail queue,
* deterministic drops chosen by a predicate (:class:`DropNth`, :class:`UdtControl`).

The pipeline of one direction, in order::

    drop predicate -> loss (Bernoulli, Gilbert-Elliott) -> queue + link (rate)
        -> corruption -> propagation delay + jitter (FIFO) -> reordering -> duplication

Every random decision of a kind (loss, burst, jitter, reorder, duplicate, corrupt) draws from
its own ``random.Random`` stream seeded from ``(seed, direction, kind)``, so the loss pattern for
a given packet sequence does not change when, say, jitter is switched on.

Run it in a worker thread of the calling process (default) or, with ``process=True``, in a child
Python process so that it does not compete for the GIL with the code under test; counters come
back over a pipe. From the shell: ``python -m udt.tools.impair --help``.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import errno
import heapq
import json
import math
import os
import pickle
import re
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Optional

from udt.units import parse_rate_bps, parse_size

__all__ = [
    "DirectionStats",
    "DropNth",
    "GilbertElliott",
    "Impairment",
    "Relay",
    "RelayError",
    "RelayStats",
    "UdtControl",
    "main",
]

Direction = Literal["a_to_b", "b_to_a"]
DIRECTIONS: tuple[Direction, Direction] = ("a_to_b", "b_to_a")
Address = tuple[Any, ...]

MAX_DATAGRAM = 65535
#: Datagrams read from one socket before the loop looks at its release queues again, so a flood
#: on one side cannot delay releases (and thus distort delay and rate) for long.
READ_BATCH = 64
#: Socket buffer the relay asks for (root gets it via SO_*BUFFORCE): the relay must not be the
#: place where bursts are lost silently, only where it decides to lose them.
SOCKET_BUFFER_BYTES = 8 << 20
#: Queue limit used when a rate is set without a queue limit: Linux's default txqueuelen.
DEFAULT_QUEUE_PACKETS = 1000
#: Waits shorter than this are slept with ``time.sleep`` (µs precision) instead of epoll
#: (whose timeout is rounded up to whole milliseconds), so release times stay accurate.
FINE_WAIT = 0.002
#: select(2) cannot watch file descriptors at or above this (glibc's fd_set size).
FD_SETSIZE = 1024


# UDP GSO (Linux >= 4.18): values from <linux/udp.h>; Python 3.11's socket module lacks them.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
#: Kernel receive timestamps (struct timespec, CLOCK_REALTIME) as a control message.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
TIMESPEC = struct.Struct("@qq")
#: Room for both control messages in recvmsg: UDP_GRO (an int) and the timestamp.
CMSG_BUFFER = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(TIMESPEC.size)
GSO_AVAILABLE = sys.platform.startswith("linux")
#: Segments per GSO send (the kernel's UDP_MAX_SEGMENTS is at least 64) and payload bytes per
#: send (an IPv4 datagram holds at most 65507).
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: Larger datagrams need IP fragmentation on common MTUs, which GSO refuses: send them singly.
GSO_MAX_SEGMENT_SIZE = 8192
GSO_UNSUPPORTED_ERRNOS = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


#: How long the parent waits for the relay child to start, and to answer a command (it answers
#: from its loop between batches, so only a stuck predicate or a starved machine takes long).
CHILD_START_TIMEOUT = 30.0
CHILD_REPLY_TIMEOUT = 10.0


class RelayError(RuntimeError):
    """The relay's worker (thread or child process) failed or could not be reached."""


# --------------------------------------------------------------------------- loss models and filters


@dataclasses.dataclass(frozen=True)
class GilbertElliott:
    """Two-state Markov loss model (Gilbert–Elliott) for bursty loss.

    In each state a packet is lost with that state's probability; after each packet the chain
    moves good→bad with ``p_good_to_bad`` and bad→good with ``p_bad_to_good``. The mean stay in
    the bad state is ``1 / p_bad_to_good`` packets.
    """

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good", "loss_good", "loss_bad"):
            _check_probability(f"GilbertElliott.{name}", getattr(self, name))
        if self.p_bad_to_good == 0.0 and self.p_good_to_bad > 0.0:
            raise ValueError("GilbertElliott.p_bad_to_good must be > 0 (the bad state would never end)")

    @classmethod
    def from_loss(cls, mean_loss: float, mean_burst: float) -> GilbertElliott:
        """Simple Gilbert model (lose every packet in the bad state, none in the good one) with
        the given long-run loss rate and mean burst length in packets."""
        _check_probability("mean_loss", mean_loss)
        if not mean_loss < 1.0:
            raise ValueError("mean_loss must be < 1 for a bursty model; use Impairment(loss=1.0) to cut the link")
        if not (isinstance(mean_burst, (int, float)) and mean_burst >= 1.0 and math.isfinite(mean_burst)):
            raise ValueError(f"mean_burst must be a finite number >= 1 packet, got {mean_burst!r}")
        r = 1.0 / mean_burst
        p = mean_loss * r / (1.0 - mean_loss)
        if p > 1.0:
            raise ValueError(
                f"mean_loss={mean_loss} with mean_burst={mean_burst} is impossible "
                "(needs p_good_to_bad > 1); use longer bursts")
        return cls(p_good_to_bad=p, p_bad_to_good=r)

    @property
    def mean_loss(self) -> float:
        """Long-run fraction of packets lost."""
        total = self.p_good_to_bad + self.p_bad_to_good
        if total == 0.0:
            return self.loss_good
        bad = self.p_good_to_bad / total
        return bad * self.loss_bad + (1.0 - bad) * self.loss_good

    @property
    def mean_burst(self) -> float:
        """Mean number of consecutive packets spent in the bad state."""
        return math.inf if self.p_bad_to_good == 0.0 else 1.0 / self.p_bad_to_good


class UdtControl:
    """Predicate: the datagram is a UDT control packet (first header bit set), optionally only
    of the given control types (``0`` handshake, ``2`` ACK, ``3`` NAK, ``6`` ACK2, ...)."""

    def __init__(self, types: Optional[set[int] | frozenset[int] | list[int] | tuple[int, ...]] = None):
        self.types = None if types is None else frozenset(int(t) for t in types)

    def __call__(self, data: bytes) -> bool:
        if len(data) < 16 or not data[0] & 0x80:  # 16 = UDT header; shorter is not UDT
            return False
        if self.types is None:
            return True
        return ((data[0] & 0x7F) << 8 | data[1]) in self.types

    def __repr__(self) -> str:
        return f"UdtControl(types={sorted(self.types) if self.types is not None else None})"


class DropNth:
    """Predicate that is true for chosen datagrams, counted from 0 among those that pass
    ``where`` (all by default): ``DropNth(0, 5)`` drops the first and sixth datagram,
    ``DropNth(2, where=UdtControl({2}))`` drops the third ACK. It counts, so use a fresh
    instance per test (an instance sent to a relay in process mode is copied)."""

    def __init__(self, *indices: int, where: Optional[Callable[[bytes], bool]] = None):
        if not indices or any(not isinstance(i, int) or i < 0 for i in indices):
            raise ValueError(f"DropNth needs one or more indices >= 0, got {indices!r}")
        self.indices = frozenset(indices)
        self.where = where
        self.seen = 0

    def __call__(self, data: bytes) -> bool:
        if self.where is not None and not self.where(data):
            return False
        index = self.seen
        self.seen += 1
        return index in self.indices

    def __repr__(self) -> str:
        return f"DropNth({', '.join(map(str, sorted(self.indices)))}, where={self.where!r})"


# --------------------------------------------------------------------------- settings


def _check_probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_nonnegative(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Impairment:
    """What one direction of the relay does to the datagrams passing through it.

    Times are in seconds, probabilities in [0, 1], ``rate`` in bits per second (payload bytes
    × 8; UDP/IP headers are not counted). The defaults pass everything through untouched.
    """

    #: Fixed one-way propagation delay added to every datagram.
    delay: float = 0.0
    #: Each datagram's delay varies uniformly in ``delay ± jitter`` (never below 0); a datagram is
    #: never released before the one that arrived ahead of it, so jitter alone never reorders.
    jitter: float = 0.0
    #: Probability that a datagram is lost (independently of the others).
    loss: float = 0.0
    #: Bursty loss, applied in addition to ``loss``.
    burst: Optional[GilbertElliott] = None
    #: Probability that a datagram is held back and overtaken by the next ``reorder_distance``.
    reorder: float = 0.0
    #: How many later datagrams overtake a held-back one.
    reorder_distance: int = 1
    #: A held-back datagram is released after this long at the latest, even if too few
    #: datagrams came to overtake it.
    reorder_timeout: float = 0.05
    #: Probability that a datagram is delivered twice.
    duplicate: float = 0.0
    #: Gap between a datagram and its duplicate.
    duplicate_delay: float = 0.0
    #: Probability that a datagram's payload is corrupted (its length never changes).
    corrupt: float = 0.0
    #: Number of distinct bits flipped in a corrupted datagram.
    corrupt_bits: int = 1
    #: Link rate in bits per second; ``None`` for no limit.
    rate: Optional[float] = None
    #: Drop-tail queue limit in bytes in front of the link (packet being serialized included).
    queue_bytes: Optional[int] = None
    #: Drop-tail queue limit in packets. With ``rate`` and neither limit set: 1000 packets.
    queue_packets: Optional[int] = None
    #: Deterministic drop: datagrams for which this returns true are dropped (counted as
    #: ``dropped_filter``). Must be picklable for ``Relay(process=True)``.
    drop: Optional[Callable[[bytes], bool]] = None
    #: If set, the random impairments (loss, burst, corruption, reordering, duplication) apply
    #: only to datagrams for which this returns true; the others only see delay and rate.
    applies_to: Optional[Callable[[bytes], bool]] = None

    def __post_init__(self) -> None:
        _check_nonnegative("delay", self.delay)
        _check_nonnegative("jitter", self.jitter)
        _check_nonnegative("reorder_timeout", self.reorder_timeout)
        _check_nonnegative("duplicate_delay", self.duplicate_delay)
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            _check_probability(name, getattr(self, name))
        if self.burst is not None and not isinstance(self.burst, GilbertElliott):
            raise ValueError(f"burst must be a GilbertElliott model, got {self.burst!r}")
        if isinstance(self.reorder_distance, bool) or not isinstance(self.reorder_distance, int) or self.reorder_distance < 1:
            raise ValueError(f"reorder_distance must be an int >= 1, got {self.reorder_distance!r}")
        if isinstance(self.corrupt_bits, bool) or not isinstance(self.corrupt_bits, int) or self.corrupt_bits < 1:
            raise ValueError(f"corrupt_bits must be an int >= 1, got {self.corrupt_bits!r}")
        if self.rate is not None:
            _check_nonnegative("rate", self.rate)
            if self.rate <= 0:
                raise ValueError("rate must be > 0 bit/s (use loss=1.0 to cut the link, None for no limit)")
        for name in ("queue_bytes", "queue_packets"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if self.rate is None and (self.queue_bytes is not None or self.queue_packets is not None):
            raise ValueError("a queue limit needs a rate: without a rate limit nothing ever queues")
        for name in ("drop", "applies_to"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be callable (data: bytes) -> bool, got {value!r}")

    @classmethod
    def cut(cls) -> Impairment:
        """A link that loses everything (for dead-peer tests)."""
        return cls(loss=1.0)

    def replace(self, **changes: Any) -> Impairment:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class DirectionStats:
    """Counters of one direction. ``forwarded`` counts datagrams sent, duplicates included."""

    received: int = 0
    forwarded: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_filter: int = 0
    #: Datagrams the relay failed to send (socket error, e.g. B's port is closed).
    dropped_send: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Datagrams waiting in the relay (delay line, queue, held back) when the stats were taken.
    in_flight: int = 0
    #: Time datagrams spent in the relay (arrival read to send), over ``forwarded``.
    delay_min: float = math.inf
    delay_max: float = 0.0
    delay_sum: float = 0.0
    #: Exceptions raised by a ``drop``/``applies_to`` predicate (the datagram was dropped).
    filter_errors: int = 0

    @property
    def delay_mean(self) -> float:
        return self.delay_sum / self.forwarded if self.forwarded else math.nan

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_queue + self.dropped_filter + self.dropped_send

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dataclasses.asdict(self)
        out["delay_mean"] = self.delay_mean
        if not self.forwarded:
            out["delay_min"] = math.nan
        return out


@dataclasses.dataclass
class RelayStats:
    """Counters of both directions plus relay-wide ones."""

    a_to_b: DirectionStats
    b_to_a: DirectionStats
    #: A-side source addresses seen (each has its own socket towards B).
    clients: int = 0
    #: Datagrams from new A-side sources refused because ``max_clients`` was reached.
    rejected_clients: int = 0

    def __getitem__(self, direction: str) -> DirectionStats:
        if direction not in DIRECTIONS:
            raise KeyError(direction)
        return getattr(self, direction)

    def as_dict(self) -> dict[str, Any]:
        return {"a_to_b": self.a_to_b.as_dict(), "b_to_a": self.b_to_a.as_dict(),
                "clients": self.clients, "rejected_clients": self.rejected_clients}


# --------------------------------------------------------------------------- the engine


class _Held:
    """A datagram held back for reordering."""

    __slots__ = ("data", "sock", "addr", "arrival", "duplicate", "remaining", "deadline", "index")

    def __init__(self, data: bytes, sock: socket.socket, addr: Optional[Address], arrival: float,
                 duplicate: bool, remaining: int, deadline: float, index: int):
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
        self.link_free = 0.0                       # when the link finishes serializing its queue
        self.queue: collections.deque[tuple[float, int]] = collections.deque()  # (finish, size)
        self.queue_bytes = 0
        self.last_due = 0.0                        # FIFO: release no earlier than the previous one
        # (due, data, sock, addr, arrival, duplicate, admission number); due times never decrease
        self.fifo: collections.deque[tuple[float, bytes, socket.socket, Optional[Address], float, bool, int]] = collections.deque()
        self.held: list[_Held] = []
        # (due, tiebreak, data, sock, addr, arrival): duplicates sent later
        self.later: list[tuple[float, int, bytes, socket.socket, Optional[Address], float]] = []
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
    def admit(self, data: bytes, sock: socket.socket, addr: Optional[Address], now: float) -> None:
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
                    imp.queue_bytes is not None and self.queue_bytes + size > imp.queue_bytes):
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
            self.held.append(_Held(data, sock, addr, now, duplicate, imp.reorder_distance,
                                   due + imp.reorder_timeout, self.admitted))
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
                if (entry[0] > now or entry[2] is not sock or entry[3] != addr or entry[5]
                        or length > size or length == 0 or total + length > GSO_MAX_BYTES):
                    break
                batch.append(fifo.popleft())
                total += length
                if length < size:  # only the last segment may be shorter
                    break
            if len(batch) == 1:
                self._send(data, sock, addr, arrival, now)
            else:
                self._send_gso(batch, size, total, sock, addr, now)

    def _send_gso(self, batch: list[tuple[float, bytes, socket.socket, Optional[Address], float, bool, int]],
                  size: int, total: int, sock: socket.socket, addr: Optional[Address], now: float) -> None:
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

    def _duplicate(self, data: bytes, sock: socket.socket, addr: Optional[Address], arrival: float, now: float) -> None:
        self.stats.duplicated += 1
        gap = self.impairment.duplicate_delay
        if gap <= 0.0:
            self._send(data, sock, addr, arrival, now)
        else:
            self.later_seq += 1
            heapq.heappush(self.later, (now + gap, self.later_seq, data, sock, addr, arrival))

    def _send(self, data: bytes, sock: socket.socket, addr: Optional[Address], arrival: float, now: float) -> None:
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


# Python's socket module lacks the FORCE variants (values from <asm-generic/socket.h>, Linux);
# they let root exceed net.core.[rw]mem_max.
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if sys.platform.startswith("linux") else None)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)


def _set_buffers(sock: socket.socket, size: int = SOCKET_BUFFER_BYTES) -> None:
    """Ask for large socket buffers: forced if privileged, else as much as the sysctl allows."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        if force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
                continue
            except OSError:  # EPERM without CAP_NET_ADMIN
                pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
        except OSError:
            pass


def _enable_timestamps(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:  # without stamps a datagram counts as arriving when it is read
        pass


def _enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel to hand over a GSO sender's batch as one buffer (cut by us), not one
    datagram per read. False where the kernel has no UDP GRO."""
    if not GSO_AVAILABLE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _resolve(address: Address, what: str) -> tuple[int, Address]:
    """(family, sockaddr) for a (host, port) pair, IPv4 or IPv6, numeric or by name."""
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"{what} must be a (host, port) tuple, got {address!r}")
    host, port = address[0], address[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what} port must be an int in 0..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise ValueError(f"{what} host {host!r} cannot be resolved: {exc}") from None
    family, _type, _proto, _canon, sockaddr = infos[0]
    if family == socket.AF_INET6 and len(address) == 4:
        sockaddr = (sockaddr[0], port, address[2], address[3])
    return family, sockaddr


class _Engine:
    """The relay's sockets and event loop (runs in a thread or in the child process)."""

    def __init__(self, target: Address, listen: Optional[Address], a_to_b: Impairment, b_to_a: Impairment,
                 seed: int, max_clients: int):
        self.target_family, self.target = _resolve(target, "target")
        if listen is None:
            listen = ("::1" if self.target_family == socket.AF_INET6 else "127.0.0.1", 0)
        listen_family, listen_addr = _resolve(listen, "listen")
        self.max_clients = max_clients
        self.directions = {"a_to_b": _DirectionState("a_to_b", a_to_b, seed),
                           "b_to_a": _DirectionState("b_to_a", b_to_a, seed)}
        self.lock = threading.Lock()
        self.rejected_clients = 0
        self.upstream: dict[Address, socket.socket] = {}        # A address -> socket towards B
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
        self.fine_fds: Optional[list[int]] = None
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

    def _upstream_for(self, client: Address) -> Optional[socket.socket]:
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

    def _read(self, sock: socket.socket, client: Optional[Address]) -> None:
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
                    admit(data[start:start + segment], out, dest, arrival)
            else:
                admit(data, out, dest, arrival)

    def run(self, on_command: Optional[Callable[[], bool]] = None, command_fd: Optional[int] = None) -> None:
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
                    timeout: Optional[float] = 0.0
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


# --------------------------------------------------------------------------- the child process


def _write_message(fd: int, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("!I", len(payload)) + payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, size: int, deadline: Optional[float]) -> bytes:
    chunks = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("relay process did not answer in time")
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("relay pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int, timeout: Optional[float] = None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    (size,) = struct.unpack("!I", _read_exactly(fd, 4, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


def _error_reply(exc: BaseException) -> tuple[str, BaseException]:
    """The exception itself if it survives pickling (keeps its type and errno), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return ("error", RelayError(f"{type(exc).__name__}: {exc}"))
    return ("error", exc)


def _remote_error(exc: BaseException) -> BaseException:
    """What the parent raises for an error reported by the child."""
    if isinstance(exc, (ValueError, OSError, RelayError)):
        return exc
    return RelayError(f"relay process: {type(exc).__name__}: {exc}")


def _serve_child(command_fd: int, reply_fd: int) -> int:
    """Entry point of ``Relay(process=True)``'s child: build the engine from the first message,
    then answer commands (stats, set, clients, close) from inside the relay loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        kind, sys_path, config = _read_message(command_fd)
        if kind != "init":
            raise RelayError(f"relay child expected 'init', got {kind!r}")
        for entry in reversed(sys_path):  # so picklable predicates from the caller's modules load
            if entry not in sys.path:
                sys.path.insert(0, entry)
        engine = _Engine(**pickle.loads(config))
    except BaseException as exc:  # report, do not die silently
        _write_message(reply_fd, _error_reply(exc))
        return 1
    _write_message(reply_fd, ("ready", engine.address))

    def on_command() -> bool:
        try:
            message = _read_message(command_fd)
        except EOFError:  # the parent is gone: stop
            return False
        op = message[0]
        try:
            if op == "stats":
                _write_message(reply_fd, ("ok", engine.snapshot()))
            elif op == "set":
                engine.set_impairment(message[1], message[2])
                _write_message(reply_fd, ("ok", None))
            elif op == "clients":
                _write_message(reply_fd, ("ok", engine.clients()))
            elif op == "close":
                _write_message(reply_fd, ("ok", engine.snapshot()))
                return False
            else:
                _write_message(reply_fd, ("error", RelayError(f"unknown relay command {op!r}")))
        except Exception as exc:
            _write_message(reply_fd, _error_reply(exc))
        return True

    try:
        engine.run(on_command, command_fd)
    finally:
        engine.close()
    return 0


# --------------------------------------------------------------------------- the public object


class Relay:
    """A running impairment relay between A (who sends to :attr:`address`) and ``target`` (B).

    It starts when constructed and stops on :meth:`close` (or at the end of a ``with`` block);
    closing joins its thread or child process and closes every socket. ``process=True`` runs it
    in a child Python process (needs picklable ``drop``/``applies_to`` predicates).
    """

    def __init__(self, target: Address, listen: Optional[Address] = None, *,
                 a_to_b: Optional[Impairment] = None, b_to_a: Optional[Impairment] = None,
                 seed: int = 0, process: bool = False, max_clients: int = 1024):
        a_to_b = Impairment() if a_to_b is None else a_to_b
        b_to_a = Impairment() if b_to_a is None else b_to_a
        for name, value in (("a_to_b", a_to_b), ("b_to_a", b_to_a)):
            if not isinstance(value, Impairment):
                raise ValueError(f"{name} must be an Impairment, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ValueError(f"max_clients must be an int >= 1, got {max_clients!r}")
        config = dict(target=target, listen=listen, a_to_b=a_to_b, b_to_a=b_to_a, seed=seed,
                      max_clients=max_clients)
        self._closed = False
        self._final: Optional[RelayStats] = None
        self._engine: Optional[_Engine] = None
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._pipe_lock = threading.Lock()
        self._command_w = self._reply_r = -1
        if process:
            self._start_child(config)
        else:
            self._engine = _Engine(**config)  # type: ignore[arg-type]
            self.address: Address = self._engine.address
            self._thread = threading.Thread(target=self._thread_main, name=f"impair-relay-{self.address[1]}",
                                            daemon=True)
            self._thread.start()

    # -- thread mode
    def _thread_main(self) -> None:
        assert self._engine is not None
        try:
            self._engine.run()
        except BaseException as exc:  # surfaced by stats()/close()
            self._failure = exc

    # -- process mode
    def _start_child(self, config: dict[str, Any]) -> None:
        try:
            payload = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ValueError(f"process=True needs picklable impairments (drop/applies_to predicates): {exc}") from exc
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "udt.tools.impair", "--serve-fds", f"{cmd_r},{rep_w}"],
                pass_fds=(cmd_r, rep_w), stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (cmd_r, cmd_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(rep_w)
        self._command_w, self._reply_r = cmd_w, rep_r
        try:
            _write_message(cmd_w, ("init", list(sys.path), payload))
            reply = _read_message(rep_r, CHILD_START_TIMEOUT)
        except (EOFError, OSError) as exc:
            self._reap_child()
            raise RelayError(f"relay process died while starting: {exc}") from None
        if reply[0] != "ready":
            self._reap_child()
            raise _remote_error(reply[1])
        self.address = reply[1]

    def _call(self, *message: Any) -> Any:
        with self._pipe_lock:
            try:
                _write_message(self._command_w, message)
                status, value = _read_message(self._reply_r, CHILD_REPLY_TIMEOUT)
            except (EOFError, OSError) as exc:  # TimeoutError is an OSError
                raise RelayError(f"relay process is gone or stuck: {exc}") from None
        if status != "ok":
            raise _remote_error(value)
        return value

    def _reap_child(self) -> None:
        for fd in (self._command_w, self._reply_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._command_w = self._reply_r = -1
        child = self._child
        if child is not None:
            try:
                child.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    # -- public API
    def _check_open(self) -> None:
        if self._closed:
            raise RelayError("relay is closed")
        if self._failure is not None:
            raise RelayError(f"relay thread failed: {self._failure!r}") from self._failure

    def stats(self) -> RelayStats:
        """Counters of both directions (after :meth:`close`: the final counters)."""
        if self._closed and self._final is not None:
            return self._final
        self._check_open()
        if self._child is not None:
            return self._call("stats")
        assert self._engine is not None
        return self._engine.snapshot()

    def set_impairment(self, direction: Direction, impairment: Impairment) -> None:
        """Replace one direction's impairment from now on. Datagrams already scheduled keep their
        release times and later ones never overtake them (the direction stays FIFO); random
        streams and counters continue."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not isinstance(impairment, Impairment):
            raise ValueError(f"impairment must be an Impairment, got {impairment!r}")
        self._check_open()
        if self._child is not None:
            try:
                pickle.dumps(impairment)
            except Exception as exc:
                raise ValueError(f"process=True needs a picklable impairment: {exc}") from exc
            self._call("set", direction, impairment)
        else:
            assert self._engine is not None
            self._engine.set_impairment(direction, impairment)

    def clients(self) -> dict[Address, Address]:
        """A-side source address -> local address of the relay's socket that talks to B for it."""
        self._check_open()
        if self._child is not None:
            return self._call("clients")
        assert self._engine is not None
        return self._engine.clients()

    def close(self) -> None:
        """Stop relaying, drop what is still in flight, join the worker, close every socket.
        Idempotent. Raises :class:`RelayError` if the worker had failed."""
        if self._closed:
            return
        self._closed = True
        if self._child is not None:
            try:
                with self._pipe_lock:
                    _write_message(self._command_w, ("close",))
                    status, value = _read_message(self._reply_r, CHILD_REPLY_TIMEOUT)
                if status == "ok":
                    self._final = value
            except (EOFError, OSError):
                self._failure = self._failure or RelayError("relay process died")
            finally:
                self._reap_child()
                code = self._child.returncode
                if code not in (0, None) and self._failure is None:
                    self._failure = RelayError(f"relay process exited with status {code}")
        else:
            assert self._engine is not None and self._thread is not None
            self._engine.stop()
            self._thread.join()
            try:
                self._final = self._engine.snapshot()
            finally:
                self._engine.close()
        if self._failure is not None:
            raise RelayError(f"relay failed: {self._failure!r}") from self._failure

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("process" if self._child is not None else "thread")
        return f"<Relay {self.address!r} {state}>"


# --------------------------------------------------------------------------- command line

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_duration(text: str) -> float:
    """'20ms', '1.5s', '500us' -> seconds. A bare number is refused (unit ambiguity), except 0."""
    match = re.fullmatch(_NUMBER + r"\s*(us|µs|ms|s)?", text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 20ms, 1.5s, 500us")
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if value != 0:
            raise ValueError(f"duration {text!r} needs a unit: e.g. {text}ms or {text}s")
        return 0.0
    return value * _DURATION_UNITS[unit]


def parse_interval(text: str) -> float:
    """A reporting interval: a bare number is seconds ('1'), or a duration ('500ms'); > 0."""
    try:
        value = float(text)
    except ValueError:
        value = parse_duration(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"interval {text!r} must be > 0")
    return value


def parse_probability(text: str) -> float:
    """'1%', '0.5%', '0.01' -> a probability in [0, 1]."""
    match = re.fullmatch(_NUMBER + r"\s*(%)?", text.strip())
    if not match:
        raise ValueError(f"bad probability {text!r}: use e.g. 1% or 0.01")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability {text!r} is outside 0..100%")
    return value


def parse_queue(text: str) -> tuple[Optional[int], Optional[int]]:
    """'256KB', '1MiB', '4000B' -> (bytes, None); '1000p' / '1000pkt' -> (None, packets)."""
    match = re.fullmatch(r"([0-9]+)\s*([a-zA-Z]+)", text.strip())
    if match:
        value, unit = int(match.group(1)), match.group(2).lower()
        if value >= 1 and unit in ("p", "pkt", "pkts", "packets"):
            return None, value
        if value >= 1 and unit.endswith("b"):  # bytes with their unit: B, KB, MiB ... (udt.units)
            try:
                return parse_size(text), None
            except ValueError:
                pass
    raise ValueError(f"bad queue size {text!r}: use e.g. 256KB, 1MiB, 1000p (packets)")


def parse_burst(text: str) -> GilbertElliott:
    """'5%,4' -> mean loss 5 % in bursts of 4 packets on average;
    'ge:P,R[,LOSS_GOOD,LOSS_BAD]' -> explicit Gilbert–Elliott transition/loss probabilities."""
    text = text.strip()
    try:
        if text.startswith("ge:"):
            parts = [parse_probability(p) for p in text[3:].split(",")]
            if len(parts) not in (2, 4):
                raise ValueError("need 2 or 4 values")
            return GilbertElliott(*parts)
        loss, burst = text.split(",")
        return GilbertElliott.from_loss(parse_probability(loss), float(burst))
    except ValueError as exc:
        raise ValueError(f"bad burst loss {text!r} ({exc}): use MEAN_LOSS,MEAN_BURST like 5%,4 "
                         "or ge:P_GOOD_BAD,P_BAD_GOOD[,LOSS_GOOD,LOSS_BAD]") from None


def parse_address(text: str) -> Address:
    """'127.0.0.1:9000', '[::1]:9000', 'localhost:9000' -> (host, port)."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"bad address {text!r}: use HOST:PORT or [IPV6]:PORT")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"bad port in {text!r}")
    return (host, port)


_CLI_OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("delay", parse_duration, "fixed one-way delay, e.g. 20ms"),
    ("jitter", parse_duration, "delay varies uniformly by +- this (FIFO kept), e.g. 2ms"),
    ("loss", parse_probability, "random (Bernoulli) loss, e.g. 1%%"),
    ("burst-loss", parse_burst, "bursty loss MEAN_LOSS,MEAN_BURST (e.g. 5%%,4) or ge:P,R[,LG,LB]"),
    ("reorder", parse_probability, "probability a packet is overtaken by the next ones, e.g. 0.5%%"),
    ("reorder-distance", int, "how many packets overtake a reordered one (default 1)"),
    ("reorder-timeout", parse_duration, "longest hold of a reordered packet (default 50ms)"),
    ("duplicate", parse_probability, "duplication probability, e.g. 0.1%%"),
    ("duplicate-delay", parse_duration, "gap before the duplicate (default 0)"),
    ("corrupt", parse_probability, "payload corruption probability, e.g. 0.01%%"),
    ("corrupt-bits", int, "bits flipped per corrupted packet (default 1)"),
    ("rate", parse_rate_bps, "link rate in bits/s, e.g. 100mbit, 1Gbps (or 12.5MB/s in bytes/s)"),
    ("queue", parse_queue, "drop-tail queue, e.g. 256KB or 1000p (default 1000p with --rate)"),
]


def _impairment_from_args(args: argparse.Namespace, prefix: str) -> Impairment:
    fields: dict[str, Any] = {}
    for name, _parser, _help in _CLI_OPTIONS:
        value = getattr(args, (prefix + name).replace("-", "_"))
        if value is None:
            continue
        if name == "burst-loss":
            fields["burst"] = value
        elif name == "queue":
            fields["queue_bytes"], fields["queue_packets"] = value
        else:
            fields[name.replace("-", "_")] = value
    return Impairment(**fields)


def _argument_type(parser: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parser(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parser.__name__.replace("parse_", "")
    return convert


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m udt.tools.impair",
        description="UDP impairment relay: A sends to --listen, the relay forwards to --target (B) "
                    "and B's replies back to A, delaying, losing, reordering, duplicating, corrupting "
                    "and rate-limiting as told. Plain options shape A->B; --b-to-a-* options shape "
                    "B->A (untouched unless given). Ctrl-C stops and prints the counters.")
    parser.add_argument("--listen", type=_argument_type(parse_address), default=None,
                        help="address A sends to, HOST:PORT or [IPV6]:PORT (default: loopback, any port)")
    parser.add_argument("--target", type=_argument_type(parse_address), required=True,
                        help="address of B, HOST:PORT or [IPV6]:PORT")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random decision (default 0)")
    parser.add_argument("--stats-interval", type=_argument_type(parse_interval), default=None,
                        metavar="SECONDS", help="print counters this often: seconds (1) or a duration (500ms)")
    parser.add_argument("--json", action="store_true", help="print counters as JSON lines")
    parser.add_argument("--max-clients", type=int, default=1024, help="most A-side sources served (default 1024)")
    for prefix, label in (("", "A->B"), ("b-to-a-", "B->A")):
        group = parser.add_argument_group(f"{label} impairment")
        for name, convert, text in _CLI_OPTIONS:
            group.add_argument(f"--{prefix}{name}", type=_argument_type(convert), default=None,
                               metavar=convert.__name__.replace("parse_", "").upper(), help=text)
    return parser


def _format_stats(stats: RelayStats, as_json: bool) -> str:
    if as_json:
        return json.dumps(_json_safe(stats.as_dict()))
    lines = [f"clients {stats.clients} (rejected {stats.rejected_clients})"]
    for name in DIRECTIONS:
        s = stats[name]
        delay = (f"delay min/mean/max {s.delay_min * 1e3:.3f}/{s.delay_mean * 1e3:.3f}/{s.delay_max * 1e3:.3f} ms"
                 if s.forwarded else "delay -")
        lines.append(
            f"{name}: received {s.received} forwarded {s.forwarded} lost {s.dropped_loss} "
            f"queue-dropped {s.dropped_queue} filtered {s.dropped_filter} send-failed {s.dropped_send} "
            f"duplicated {s.duplicated} reordered {s.reordered} corrupted {s.corrupted} "
            f"bytes {s.bytes_in}->{s.bytes_out} in-flight {s.in_flight} {delay}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--serve-fds":  # internal: Relay(process=True)'s child
        command_fd, reply_fd = (int(x) for x in argv[1].split(","))
        return _serve_child(command_fd, reply_fd)
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        a_to_b = _impairment_from_args(args, "")
        b_to_a = _impairment_from_args(args, "b-to-a-")
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            relay = Relay(args.target, args.listen, a_to_b=a_to_b, b_to_a=b_to_a, seed=args.seed,
                          max_clients=args.max_clients)
        except (ValueError, OSError) as exc:
            print(f"impair: {exc}", file=sys.stderr)
            return 2
        with relay:
            host, port = relay.address[0], relay.address[1]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            print(f"impair: relaying {shown} -> {args.target[0]}:{args.target[1]}\n"
                  f"  a_to_b: {a_to_b}\n  b_to_a: {b_to_a}", file=sys.stderr, flush=True)
            interval = args.stats_interval
            next_print = time.monotonic() + interval if interval else math.inf
            while not stop.wait(min(1.0, max(0.0, next_print - time.monotonic()))):
                if time.monotonic() >= next_print:
                    print(_format_stats(relay.stats(), args.json), flush=True)
                    next_print += interval
        print(_format_stats(relay.stats(), args.json), flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    # Run as ``python -m udt.tools.impair`` or as a script, use the canonical ``udt.tools.impair``
    # module, so objects pickled to and from a relay child have one class identity.
    from udt.tools.impair import main as _canonical_main

    sys.exit(_canonical_main())
