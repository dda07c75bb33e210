"""A spoofed handshake flood against a udt (or UDT4/SRT) listener, for tests and benches.

The datagrams (:mod:`~udt.tools.flood.packets`: inductions, forged and replayed conclusions,
absurd values) come from thousands of source addresses in 127.0.0.0/8, which are all local on
loopback; a raw ``IP_HDRINCL`` socket (root or CAP_NET_RAW) writes any source it likes.  The
data path (``_sender``, Cython) sends them in sendmmsg batches without the GIL, paced to a
packet rate: a Python loop cannot hold 50,000 packets/s here.

    from udt.tools.flood import Flood
    with Flood(("127.0.0.1", port), rate=50_000, sources=4096) as flood:
        ...                      # the flood runs in a thread until the block ends
    print(flood.result)          # FloodResult(sent=..., errors=..., seconds=..., rate=...)

From the shell: ``udt-flood 127.0.0.1:9000 --rate 50000 --seconds 10`` (see ``--help``).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from types import TracebackType

from udt.tools.flood._sender import RawSender
from udt.tools.flood.packets import DEFAULT_MIX, KINDS, flood_packets, handshake, spoofed_sources

__all__ = [
    "DEFAULT_MIX",
    "KINDS",
    "Flood",
    "FloodResult",
    "flood_packets",
    "handshake",
    "raw_sockets_available",
    "spoofed_sources",
]


@dataclass(frozen=True)
class FloodResult:
    sent: int  # datagrams the kernel took
    errors: int  # datagrams sendmmsg refused
    seconds: float

    @property
    def rate(self) -> float:
        """Datagrams per second achieved."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def raw_sockets_available() -> str | None:
    """None when this process may open a raw IP socket, else the reason it may not."""
    try:
        RawSender([(0x7F000002, 1024, b"x")], 0x7F000001, 9).close()
    except OSError as exc:
        return f"no raw IP socket: {exc}"
    return None


class Flood:
    """Send a flood to target in a background thread (start()/stop() or a with block).

    impersonate: send from these (address, port) pairs only (e.g. a real client's, to race
    its handshake with forged conclusions) instead of ``sources`` random 127/8 ones."""

    def __init__(
        self,
        target: tuple[str, int],
        rate: float = 50_000,
        *,
        sources: int = 4096,
        mix: dict[str, float] | None = None,
        seconds: float = 3600.0,
        seed: int = 1,
        cookie: int = 0,
        batch: int = 64,
        impersonate: list[tuple[str, int]] | None = None,
    ) -> None:
        host, port = target
        pairs = [(int(ipaddress.IPv4Address(a)), p) for a, p in impersonate] if impersonate else None
        packets = flood_packets(sources, mix, seed=seed, cookie=cookie, source_list=pairs)
        self._sender = RawSender(packets, int(ipaddress.IPv4Address(host)), port, batch)
        self._rate = rate
        self._seconds = seconds
        self._thread: threading.Thread | None = None
        self.result: FloodResult | None = None

    def run(self) -> FloodResult:
        """Flood in this thread until seconds pass or stop() is called."""
        sent, errors, seconds = self._sender.run(self._rate, self._seconds)
        self.result = FloodResult(sent, errors, seconds)
        return self.result

    def start(self) -> Flood:
        self._thread = threading.Thread(target=self.run, name="udt-flood", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> FloodResult | None:
        self._sender.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sender.close()
        return self.result

    def __enter__(self) -> Flood:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    from udt.tools.flood.cli import main as cli_main

    return cli_main(argv)
