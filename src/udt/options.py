"""UDT socket options (protocol.md §8): their numbers, types, defaults, when they may be set, validation.

The numbers are UDT4's ``UDTOpt`` enum values, so scripts ported from UDT4 keep working.  Options
numbered from 100 up are udt's own extensions.  :func:`validate` turns a user value into the
canonical stored value or raises :class:`~udt.errors.InvalidParameterError` (a ``ValueError``).

Units (documented deviations from UDT4 are marked *udt*):

* ``UDT_SNDBUF``/``UDT_RCVBUF``/``UDP_SNDBUF``/``UDP_RCVBUF``: bytes.
* ``UDT_LINGER``: ``(on, seconds)``; an int/float *seconds* is accepted too (0 = abort at close).
  *udt*: default ``(True, 3)`` instead of UDT4's 180 s, and it bounds how long ``close()`` waits
  for the peer to acknowledge *anything*, not the whole drain: a stalled or dead peer never holds
  close() for minutes, and a live transfer is never cut short (see :class:`udt.socket`).
* ``UDT_SNDTIMEO``/``UDT_RCVTIMEO``: milliseconds, −1 = forever (``settimeout`` sets both).
* ``UDT_SNDDATA``/``UDT_RCVDATA``: *udt*: bytes (UDT4 returns packets despite the name).
* ``UDT_MSGTTL``: milliseconds, −1 = forever; default TTL of ``sendmsg`` (UDT4 ignores it).
* ``UDT_MAXMSG``: *udt*: largest message ``sendmsg`` accepts, bytes (default: the send buffer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from .cc import DEFAULT_CC, available
from .errors import ErrorCode, InvalidParameterError

__all__ = [
    "SocketOption",
    "Phase",
    "OptionSpec",
    "OPTION_SPECS",
    "SocketState",
    "EpollEvent",
    "DEFAULT_MSS",
    "MIN_MSS",
    "MAX_MSS",
    "DEFAULT_FC",
    "MIN_FC",
    "DEFAULT_BUFFER_PACKETS",
    "DEFAULT_LINGER_SECONDS",
    "DEFAULT_PEER_IDLE_TIMEOUT_MS",
    "IP_UDP_OVERHEAD_V4",
    "IP_UDP_OVERHEAD_V6",
    "UDT_HEADER_SIZE",
    "validate",
    "defaults",
]

# Sizes of protocol.md §1: the MSS is the whole IP packet.
IP_UDP_OVERHEAD_V4 = 28
IP_UDP_OVERHEAD_V6 = 48
UDT_HEADER_SIZE = 16
DEFAULT_MSS = 1500
MIN_MSS = 76
MAX_MSS = 65535 - 1  # largest UDP/IP datagram we will build
# UDT_FC, UDT_SNDBUF and UDT_RCVBUF are caps, not allocations: the buffers start small, grow with
# the path's bandwidth x RTT up to them and shrink after idle (docs/engine.md, "Buffers").  65536
# packets (~95 MB at MSS 1500) leave a 1 Gbit/s x 200 ms path (~17,000 packets) room to spare.
DEFAULT_FC = 65536
MIN_FC = 32
DEFAULT_BUFFER_PACKETS = 65536
# The kernel's UDP receive buffer absorbs bursts between two receive-worker wake-ups (UDT4: 8192
# packets): where it starts.  The multiplexer grows it with the receive window (docs/engine.md).
DEFAULT_UDP_RCVBUF = 8192 * DEFAULT_MSS
DEFAULT_UDP_SNDBUF = 65536
# Left at these defaults, both are sized in MSS-1500 datagrams and grow in proportion when
# path-MTU discovery finds a larger MSS (up to 64 MiB each: udt._sock.UdpSocket.c_size_buffers_for).
DEFAULT_LINGER_SECONDS = 3
DEFAULT_PEER_IDLE_TIMEOUT_MS = 10_000  # udt: a dead peer is detected within 10 s (UDT4: ~46 s)
# What the kernel accepts for one socket buffer when asked politely; larger is clamped by it.
MAX_KERNEL_BUFFER = 1 << 30


class SocketOption(IntEnum):
    """Option numbers: UDT4's ``UDTOpt`` values, then udt's extensions from 100."""

    UDT_MSS = 0
    UDT_SNDSYN = 1
    UDT_RCVSYN = 2
    UDT_CC = 3
    UDT_FC = 4
    UDT_SNDBUF = 5
    UDT_RCVBUF = 6
    UDT_LINGER = 7
    UDP_SNDBUF = 8
    UDP_RCVBUF = 9
    UDT_MAXMSG = 10
    UDT_MSGTTL = 11
    UDT_RENDEZVOUS = 12
    UDT_SNDTIMEO = 13
    UDT_RCVTIMEO = 14
    UDT_REUSEADDR = 15
    UDT_MAXBW = 16
    UDT_STATE = 17
    UDT_EVENT = 18
    UDT_SNDDATA = 19
    UDT_RCVDATA = 20
    # udt extensions
    UDT_PEERIDLETIMEO = 100  # ms of silence after which the connection counts as broken
    UDT_CONNTIMEO = 101  # ms a client/server connect may take (rendezvous: ×10)
    UDT_PASSPHRASE = 102  # str: encrypt and authenticate every packet (protocol.md §12)
    UDT_PMTUD = 103  # bool: path-MTU discovery between udt peers (protocol.md §13)


class SocketState(IntEnum):
    """``UDT_STATE`` values (UDT4's ``UDTSTATUS``)."""

    INIT = 1
    OPENED = 2
    LISTENING = 3
    CONNECTING = 4
    CONNECTED = 5
    BROKEN = 6
    CLOSING = 7
    CLOSED = 8
    NONEXIST = 9


class EpollEvent(IntEnum):
    """``UDT_EVENT`` readiness bits (UDT4's ``UDT_EPOLL_*``)."""

    IN = 1
    OUT = 4
    ERR = 8
    ET = 1 << 31  # udt.epoll: report each condition once per rising edge (SRT's value)


class Phase(Enum):
    """Until when an option may be changed."""

    BEFORE_BIND = "before bind"  # sizes that shape the multiplexer or the buffers
    BEFORE_CONNECT = "before connect"  # negotiated or fixed at connection set-up
    ANYTIME = "anytime"
    READ_ONLY = "read only"


@dataclass(frozen=True)
class OptionSpec:
    option: SocketOption
    kind: str  # "bool", "int", "linger", "cc", "passphrase", "readonly"
    default: Any
    phase: Phase
    check: Callable[[SocketOption, Any], Any] | None = None
    doc: str = ""


def _bad(option: SocketOption, why: str) -> InvalidParameterError:
    return InvalidParameterError(ErrorCode.BAD_PARAMETER, f"{option.name}: {why}")


def _as_int(option: SocketOption, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import operator

            value = operator.index(value)
        except TypeError:
            raise _bad(option, f"expected an int, got {type(value).__name__}") from None
    return int(value)


def _as_bool(option: SocketOption, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _bad(option, f"expected a bool, got {value!r}")


def _range(lo: int, hi: int | None = None, *, extra: tuple[int, ...] = ()):
    def check(option: SocketOption, value: int) -> int:
        if value in extra:
            return value
        if value < lo or (hi is not None and value > hi):
            limit = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            allowed = f" (or {', '.join(map(str, extra))})" if extra else ""
            raise _bad(option, f"must be {limit}{allowed}, got {value}")
        return value

    return check


def _linger(option: SocketOption, value: Any) -> tuple[bool, float]:
    if isinstance(value, tuple) and len(value) == 2:
        on, seconds = value
        on = _as_bool(option, on)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        on, seconds = True, value
    else:
        raise _bad(option, f"expected (on, seconds) or seconds, got {value!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        raise _bad(option, f"seconds must be a number, got {seconds!r}")
    if seconds < 0 or seconds > 24 * 3600:
        raise _bad(option, f"seconds must be between 0 and 86400, got {seconds}")
    return (on, int(seconds) if float(seconds).is_integer() else float(seconds))


Opt = SocketOption
_buffer_default = DEFAULT_BUFFER_PACKETS * (DEFAULT_MSS - IP_UDP_OVERHEAD_V4 - UDT_HEADER_SIZE)

OPTION_SPECS: dict[SocketOption, OptionSpec] = {
    spec.option: spec
    for spec in (
        OptionSpec(
            Opt.UDT_MSS,
            "int",
            DEFAULT_MSS,
            Phase.BEFORE_CONNECT,
            _range(MIN_MSS, MAX_MSS),
            "maximum packet size, the whole IP packet; negotiated to the smaller of both",
        ),
        OptionSpec(Opt.UDT_SNDSYN, "bool", True, Phase.ANYTIME, None, "blocking send"),
        OptionSpec(Opt.UDT_RCVSYN, "bool", True, Phase.ANYTIME, None, "blocking recv, accept and connect"),
        OptionSpec(
            Opt.UDT_CC,
            "cc",
            DEFAULT_CC,
            Phase.BEFORE_CONNECT,
            None,
            "congestion control: a native one by name (udt.cc.available()), a "
            "udt.cc.CongestionControl subclass or a factory returning a fresh instance per connection",
        ),
        OptionSpec(
            Opt.UDT_FC,
            "int",
            DEFAULT_FC,
            Phase.BEFORE_CONNECT,
            _range(MIN_FC, 1 << 30),
            "maximum flow window, packets (the cap the receive buffer grows to)",
        ),
        OptionSpec(
            Opt.UDT_SNDBUF,
            "int",
            _buffer_default,
            Phase.BEFORE_CONNECT,
            _range(1, 1 << 34),
            "send buffer cap, bytes (grows with the path up to it)",
        ),
        OptionSpec(
            Opt.UDT_RCVBUF,
            "int",
            _buffer_default,
            Phase.BEFORE_CONNECT,
            _range(1, 1 << 34),
            "receive buffer cap, bytes (at most FC packets; grows with the path up to it)",
        ),
        OptionSpec(
            Opt.UDT_LINGER,
            "linger",
            (True, DEFAULT_LINGER_SECONDS),
            Phase.ANYTIME,
            _linger,
            "how long close() drains unsent data; (True, 0) or 0 aborts",
        ),
        OptionSpec(
            Opt.UDP_SNDBUF,
            "int",
            DEFAULT_UDP_SNDBUF,
            Phase.BEFORE_BIND,
            _range(1024, MAX_KERNEL_BUFFER),
            "kernel send buffer of the UDP socket, bytes",
        ),
        OptionSpec(
            Opt.UDP_RCVBUF,
            "int",
            DEFAULT_UDP_RCVBUF,
            Phase.BEFORE_BIND,
            _range(1024, MAX_KERNEL_BUFFER),
            "kernel receive buffer of the UDP socket, bytes",
        ),
        OptionSpec(
            Opt.UDT_MAXMSG,
            "int",
            -1,
            Phase.ANYTIME,
            _range(1, extra=(-1,)),
            "largest message sendmsg accepts, bytes; -1: the send buffer",
        ),
        OptionSpec(
            Opt.UDT_MSGTTL,
            "int",
            -1,
            Phase.ANYTIME,
            _range(0, extra=(-1,)),
            "default message time-to-live for sendmsg, ms; -1 forever",
        ),
        OptionSpec(Opt.UDT_RENDEZVOUS, "bool", False, Phase.BEFORE_CONNECT, None, "rendezvous connect"),
        OptionSpec(Opt.UDT_SNDTIMEO, "int", -1, Phase.ANYTIME, _range(0, extra=(-1,)), "send timeout, ms; -1 forever"),
        OptionSpec(
            Opt.UDT_RCVTIMEO,
            "int",
            -1,
            Phase.ANYTIME,
            _range(0, extra=(-1,)),
            "recv/accept/connect timeout, ms; -1 forever",
        ),
        OptionSpec(
            Opt.UDT_REUSEADDR,
            "bool",
            True,
            Phase.BEFORE_BIND,
            None,
            "share the port's multiplexer with other udt sockets",
        ),
        OptionSpec(
            Opt.UDT_MAXBW,
            "int",
            -1,
            Phase.ANYTIME,
            _range(1, extra=(-1,)),
            "maximum sending rate, bytes/s; -1 unlimited",
        ),
        OptionSpec(Opt.UDT_STATE, "readonly", SocketState.INIT, Phase.READ_ONLY, None, "socket state"),
        OptionSpec(Opt.UDT_EVENT, "readonly", 0, Phase.READ_ONLY, None, "readiness bits IN|OUT|ERR"),
        OptionSpec(Opt.UDT_SNDDATA, "readonly", 0, Phase.READ_ONLY, None, "bytes waiting in the send buffer"),
        OptionSpec(Opt.UDT_RCVDATA, "readonly", 0, Phase.READ_ONLY, None, "bytes readable in the receive buffer"),
        OptionSpec(
            Opt.UDT_PEERIDLETIMEO,
            "int",
            DEFAULT_PEER_IDLE_TIMEOUT_MS,
            Phase.BEFORE_CONNECT,
            _range(1000, 3_600_000),
            "silence after which the connection is broken, ms",
        ),
        OptionSpec(
            Opt.UDT_PASSPHRASE,
            "passphrase",
            None,
            Phase.BEFORE_CONNECT,
            None,
            "shared secret of both ends: every packet AES-GCM sealed, a mismatch refused; None: plaintext",
        ),
        OptionSpec(
            Opt.UDT_CONNTIMEO,
            "int",
            3000,
            Phase.ANYTIME,
            _range(100, 3_600_000),
            "how long a client/server connect waits for the peer, ms (rendezvous: ×10)",
        ),
        OptionSpec(
            Opt.UDT_PMTUD,
            "bool",
            True,
            Phase.BEFORE_CONNECT,
            None,
            "path-MTU discovery between udt peers (grows the MSS from UDT_MSS); setting UDT_MSS turns it off",
        ),
    )
}
del Opt


def coerce_option(option: Any) -> SocketOption:
    """*option* as a :class:`SocketOption`, or ``InvalidParameterError`` when unknown."""
    try:
        return SocketOption(option)
    except ValueError:
        raise InvalidParameterError(ErrorCode.BAD_PARAMETER, f"unknown UDT option {option!r}") from None


def validate(option: SocketOption, value: Any) -> Any:
    """The canonical value to store for *option*, or raise ``InvalidParameterError``."""
    spec = OPTION_SPECS[option]
    if spec.kind == "readonly":
        raise InvalidParameterError(ErrorCode.BAD_PARAMETER, f"{option.name} is read only")
    if spec.kind == "bool":
        return _as_bool(option, value)
    if spec.kind == "int":
        number = _as_int(option, value)
        return spec.check(option, number) if spec.check else number
    if spec.kind == "linger":
        return _linger(option, value)
    if spec.kind == "cc":
        return _validate_cc(option, value)
    if spec.kind == "passphrase":
        return _validate_passphrase(option, value)
    raise AssertionError(spec.kind)


MIN_PASSPHRASE = 10
MAX_PASSPHRASE = 1024


def _validate_passphrase(option: SocketOption, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(option, f"expected a str or None, got {type(value).__name__}")
    if not MIN_PASSPHRASE <= len(value) <= MAX_PASSPHRASE:
        raise _bad(option, f"a passphrase has {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters, got {len(value)}")
    return value


def _validate_cc(option: SocketOption, value: Any) -> Any:
    if value is None:
        return DEFAULT_CC
    if isinstance(value, str):
        if value not in available():
            raise _bad(option, f"unknown congestion control {value!r}; native ones: {', '.join(available())}")
        return value
    if isinstance(value, type):
        if all(hasattr(value, name) for name in ("on_ack", "on_loss")):
            return value
    elif callable(value):
        return value  # a factory: called once per connection for a fresh instance
    raise _bad(option, "expected a native name, a udt.cc.CongestionControl subclass or a factory")


def defaults() -> dict[SocketOption, Any]:
    """A fresh dict of every settable option's default value."""
    return {opt: spec.default for opt, spec in OPTION_SPECS.items() if spec.phase is not Phase.READ_ONLY}
