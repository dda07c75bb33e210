"""What a direction of the relay does to datagrams: :class:`Impairment`, the bursty loss model
:class:`GilbertElliott`, and the drop predicates :class:`DropNth` and :class:`UdtControl`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any


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
                "(needs p_good_to_bad > 1); use longer bursts"
            )
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

    def __init__(self, types: set[int] | frozenset[int] | list[int] | tuple[int, ...] | None = None):
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

    def __init__(self, *indices: int, where: Callable[[bytes], bool] | None = None):
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
    burst: GilbertElliott | None = None
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
    rate: float | None = None
    #: Drop-tail queue limit in bytes in front of the link (packet being serialized included).
    queue_bytes: int | None = None
    #: Drop-tail queue limit in packets. With ``rate`` and neither limit set: 1000 packets.
    queue_packets: int | None = None
    #: Deterministic drop: datagrams for which this returns true are dropped (counted as
    #: ``dropped_filter``). Must be picklable for ``Relay(process=True)``.
    drop: Callable[[bytes], bool] | None = None
    #: If set, the random impairments (loss, burst, corruption, reordering, duplication) apply
    #: only to datagrams for which this returns true; the others only see delay and rate.
    applies_to: Callable[[bytes], bool] | None = None

    def __post_init__(self) -> None:
        _check_nonnegative("delay", self.delay)
        _check_nonnegative("jitter", self.jitter)
        _check_nonnegative("reorder_timeout", self.reorder_timeout)
        _check_nonnegative("duplicate_delay", self.duplicate_delay)
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            _check_probability(name, getattr(self, name))
        if self.burst is not None and not isinstance(self.burst, GilbertElliott):
            raise ValueError(f"burst must be a GilbertElliott model, got {self.burst!r}")
        if (
            isinstance(self.reorder_distance, bool)
            or not isinstance(self.reorder_distance, int)
            or self.reorder_distance < 1
        ):
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
