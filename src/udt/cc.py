"""Pluggable congestion control: subclass :class:`CongestionControl` (UDT4's ``CCC``).

The engine's native algorithm (UDT's DAIMD) is compiled and costs nothing; a Python subclass is
called through a trampoline that takes the GIL for that one connection on every callback
(about a microsecond each).  ``on_ack``/``on_loss``/``on_timeout`` run at most a few hundred
times a second, so they are cheap; ``on_packet_sent``/``on_packet_received`` run per packet and
are only called when the subclass overrides them — expect a few hundred Mbit/s at most then.

Knobs the algorithm sets (read back after every callback): ``period_us`` (µs between data
packets), ``cwnd`` (packets in flight), ``ack_interval`` (receiver: full ACK every N packets,
0 = timer only), ``ack_period_us`` (receiver ACK timer, 0 = 10 ms), ``rto_us`` (sender EXP
timeout, 0 = spec formula).  Values the engine maintains (read-only): ``rtt_us``,
``rttvar_us``, ``rcv_rate`` and ``bandwidth`` (packets/s), ``mss``, ``max_cwnd``,
``snd_curr_seq``.

Use one instance per connection (give the socket the class, or a factory).  The native
controllers are chosen by name instead: ``UDT_CC = "bbr"`` (delivery-rate model, loss-tolerant)
or ``"udt4"`` (UDT4's DAIMD); :func:`available` lists them, :data:`DEFAULT_CC` is the default.
"""

from __future__ import annotations

from udt.core.ccnames import NATIVE_NAMES

__all__ = ["DEFAULT_CC", "CongestionControl", "available"]

#: the congestion control a socket gets unless UDT_CC says otherwise (docs/engine.md, "BBR")
DEFAULT_CC = "udt4"


def available() -> list[str]:
    """The names ``UDT_CC`` accepts for the native (compiled) congestion controls."""
    return list(NATIVE_NAMES)


class CongestionControl:
    """Base class with UDT4's CCC callbacks; every callback does nothing by default."""

    #: set by __init_subclass__: does the subclass want the per-packet callbacks?
    _wants_packet_sent = False
    _wants_packet_received = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._wants_packet_sent = cls.on_packet_sent is not CongestionControl.on_packet_sent
        cls._wants_packet_received = cls.on_packet_received is not CongestionControl.on_packet_received

    def __init__(self) -> None:
        self.period_us: float = 1.0
        self.cwnd: float = 16.0
        self.ack_interval: int = 0
        self.ack_period_us: int = 0
        self.rto_us: int = 0
        self.rtt_us: int = 100_000
        self.rttvar_us: int = 50_000
        self.rcv_rate: int = 16
        self.bandwidth: int = 1000
        self.mss: int = 1500
        self.max_cwnd: int = 25600
        self.snd_curr_seq: int = 0

    def init(self) -> None:
        """The connection is established (UDT4 ``init``)."""

    def close(self) -> None:
        """The connection is being freed (UDT4 ``close``)."""

    def on_ack(self, ack: int) -> None:
        """A full ACK acknowledged everything before sequence ``ack``."""

    def on_loss(self, losses: list[tuple[int, int]]) -> None:
        """A NAK reported these inclusive ``(first, last)`` sequence ranges lost."""

    def on_timeout(self) -> None:
        """The EXP timer expired with unacknowledged data."""

    def on_packet_sent(self, seq: int, size: int) -> None:
        """A data packet left (called only if overridden: it costs a GIL round trip each)."""

    def on_packet_received(self, seq: int, size: int) -> None:
        """A data packet arrived (called only if overridden)."""

    def on_custom_message(self, data: bytes) -> None:
        """A user-defined control packet (type 0x7FFF) arrived; ``data`` is the whole datagram."""
