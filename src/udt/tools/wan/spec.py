"""What one direction of the WAN link does: :class:`LinkSpec` and :class:`GilbertElliott`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from udt.units import parse_rate_bps

__all__ = ["GilbertElliott", "LinkSpec", "parse_duration_ms", "parse_fraction", "parse_rate"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)\s*")
_DURATION_SCALE_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_rate(rate: str | float) -> float:
    """Bits/s from ``"200Mbit"``/``"1Gbps"`` (:func:`udt.units.parse_rate_bps`) or a number."""
    if isinstance(rate, str):
        return parse_rate_bps(rate)
    if not rate > 0:
        raise ValueError(f"rate must be above 0 bits/s, got {rate!r}")
    return float(rate)


def parse_duration_ms(text: str | float) -> float:
    """Milliseconds from ``"50ms"``, ``"1.5s"``, ``"300us"`` (a bare number string is refused, as
    in ``udt-impair``) or a number (already ms)."""
    if not isinstance(text, str):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 50ms, 1.5s, 300us)")
    return float(match.group(1)) * _DURATION_SCALE_MS[match.group(2)]


def parse_fraction(text: str | float) -> float:
    """A probability from ``"1%"`` or ``"0.01"``."""
    if isinstance(text, str):
        text = text.strip()
        value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    else:
        value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability {text!r} outside [0, 1]")
    return value


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state bursty loss: per packet the state may flip (good→bad with ``p_good_bad``,
    bad→good with ``p_bad_good``), then the packet is lost with the new state's loss."""

    p_good_bad: float
    p_bad_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    @classmethod
    def from_mean(cls, mean_loss: float, mean_burst: float, loss_bad: float = 1.0) -> GilbertElliott:
        """The chain whose long-run loss is *mean_loss* and whose bad state lasts *mean_burst*
        packets on average (with ``loss_bad = 1`` that is the mean length of a loss burst).

        Stationary bad share π = p_gb / (p_gb + p_bg) = mean_loss / loss_bad, p_bg = 1 / mean_burst.
        """
        if not 0.0 < loss_bad <= 1.0 or not 0.0 < mean_loss < loss_bad:
            raise ValueError(f"need 0 < mean_loss ({mean_loss}) < loss_bad ({loss_bad}) <= 1")
        if mean_burst < 1.0:
            raise ValueError(f"mean_burst {mean_burst} must be >= 1 packet")
        bad_share = mean_loss / loss_bad
        p_bad_good = 1.0 / mean_burst
        return cls(bad_share * p_bad_good / (1.0 - bad_share), p_bad_good, 0.0, loss_bad)

    @property
    def mean_loss(self) -> float:
        """The long-run loss rate of the chain."""
        total = self.p_good_bad + self.p_bad_good
        bad_share = self.p_good_bad / total if total else 0.0
        return bad_share * self.loss_bad + (1.0 - bad_share) * self.loss_good

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.p_good_bad, self.p_bad_good, self.loss_good, self.loss_bad)


@dataclass(frozen=True)
class LinkSpec:
    """One direction: rate (``"200Mbit"`` or bits/s), one-way delay and jitter (ms, jitter
    uniform in ±jitter_ms, never reordering), a drop-tail queue holding *queue_ms* of bytes at the
    current rate and/or *queue_packets* packets, random loss, optional Gilbert–Elliott loss, a
    rate schedule ``[(t_seconds, rate), ...]`` from the link's start (or
    :meth:`WanLink.restart_schedule`), and the PRNG seed.  The packet rings are sized for
    *max_rate* (default: the highest rate given), the most :meth:`WanLink.set_rate` accepts."""

    rate: str | float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    queue_ms: float = 100.0
    queue_packets: int = 0
    loss: float = 0.0
    ge: GilbertElliott | None = None
    seed: int = 1
    schedule: Sequence[tuple[float, str | float]] = field(default_factory=tuple)
    max_rate: str | float | None = None

    def __post_init__(self) -> None:
        self.max_rate_bps()  # every rate parses
        for name in ("delay_ms", "jitter_ms", "queue_ms", "queue_packets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.queue_ms == 0 and self.queue_packets == 0:
            raise ValueError("give a queue limit: queue_ms or queue_packets")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")

    @property
    def rate_bps(self) -> float:
        return parse_rate(self.rate)

    def schedule_bps(self) -> list[tuple[float, float]]:
        return [(float(seconds), parse_rate(rate)) for seconds, rate in self.schedule]

    def max_rate_bps(self) -> float:
        given = [self.rate_bps, *(rate for _, rate in self.schedule_bps())]
        if self.max_rate is not None:
            given.append(parse_rate(self.max_rate))
        return max(given)
