"""The relay's counters: :class:`DirectionStats` per direction, :class:`RelayStats` for both."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from udt.tools.impair._common import DIRECTIONS


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
        return {
            "a_to_b": self.a_to_b.as_dict(),
            "b_to_a": self.b_to_a.as_dict(),
            "clients": self.clients,
            "rejected_clients": self.rejected_clients,
        }
