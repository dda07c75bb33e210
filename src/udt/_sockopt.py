"""The three-argument ``setsockopt(level, option, value)`` / ``getsockopt(level, option[, buflen])``.

Code written for :mod:`socket` passes a level first.  udt options live at :data:`SOL_UDT`; at
``SOL_SOCKET`` the options that mean something for a udt socket map onto their UDT equivalents
(``SO_RCVBUF``/``SO_SNDBUF`` → ``UDP_RCVBUF``/``UDP_SNDBUF``, ``SO_REUSEADDR`` → ``UDT_REUSEADDR``,
``SO_LINGER`` → ``UDT_LINGER``); every other level/option pair raises ``OSError(ENOPROTOOPT)``, as
the kernel does, instead of silently setting an unrelated UDT option.
"""

from __future__ import annotations

import errno
import math
import socket as _pysocket
import struct
from typing import Any

from .options import DEFAULT_LINGER_SECONDS, SocketOption, coerce_option

__all__ = ["SOL_UDT", "set_arguments", "get_arguments", "resolve", "to_udt_value", "from_udt_value", "route_source"]

# No kernel level uses this number (Linux's SOL_* stay below 300); "UD" in ASCII.
SOL_UDT = 0x5544

_LINGER = struct.Struct("ii")  # struct linger {int l_onoff; int l_linger;}
_INT = struct.Struct("i")

_SOL_SOCKET_MAP: dict[int, SocketOption] = {
    _pysocket.SO_RCVBUF: SocketOption.UDP_RCVBUF,
    _pysocket.SO_SNDBUF: SocketOption.UDP_SNDBUF,
    _pysocket.SO_REUSEADDR: SocketOption.UDT_REUSEADDR,
    _pysocket.SO_LINGER: SocketOption.UDT_LINGER,
}


def set_arguments(args: tuple[Any, ...]) -> tuple[SocketOption, Any]:
    """``setsockopt``'s (option, value) or (level, option, value) as a UDT option and its value."""
    if len(args) == 2:
        return coerce_option(args[0]), args[1]
    if len(args) == 3:
        opt = resolve(args[0], args[1])
        return opt, to_udt_value(args[0], opt, args[2])
    raise TypeError(f"setsockopt takes 2 or 3 arguments ({len(args)} given)")


def get_arguments(args: tuple[Any, ...]) -> tuple[int | None, SocketOption, int | None]:
    """``getsockopt``'s (option) or (level, option[, buflen]): level (None: UDT's own form), option, buflen."""
    if len(args) == 1:
        return None, coerce_option(args[0]), None
    if len(args) in (2, 3):
        return args[0], resolve(args[0], args[1]), args[2] if len(args) == 3 else None
    raise TypeError(f"getsockopt takes 1 to 3 arguments ({len(args)} given)")


def resolve(level: int, option: int) -> SocketOption:
    """The UDT option that (*level*, *option*) names, or ``OSError(ENOPROTOOPT)``."""
    if level == SOL_UDT:
        return coerce_option(option)
    if level == _pysocket.SOL_SOCKET and option in _SOL_SOCKET_MAP:
        return _SOL_SOCKET_MAP[option]
    raise OSError(errno.ENOPROTOOPT, f"Protocol not available: udt has no option {option} at level {level}")


def to_udt_value(level: int, opt: SocketOption, value: Any) -> Any:
    """A ``SOL_SOCKET`` value in the UDT option's own terms; bytes are read as the kernel would."""
    if level != _pysocket.SOL_SOCKET:
        return value
    if opt == SocketOption.UDT_LINGER:
        if isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) != _LINGER.size:
                raise OSError(errno.EINVAL, f"SO_LINGER takes a {_LINGER.size}-byte struct linger")
            value = _LINGER.unpack(value)
        if not (isinstance(value, tuple) and len(value) == 2):
            raise OSError(errno.EINVAL, "SO_LINGER takes (onoff, seconds) or a struct linger")
        onoff, seconds = value
        # socket: l_onoff 0 means "no linger" (a normal close); udt's (True, seconds) is that close.
        return (True, seconds) if onoff else (True, DEFAULT_LINGER_SECONDS)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) != _INT.size:
            raise OSError(errno.EINVAL, f"expected a {_INT.size}-byte int")
        (value,) = _INT.unpack(value)
    if opt == SocketOption.UDT_REUSEADDR:
        return bool(value)
    return value


def from_udt_value(level: int, opt: SocketOption, value: Any, buflen: int | None) -> Any:
    """A UDT option's value as ``getsockopt(level, option[, buflen])`` reports it."""
    if level == _pysocket.SOL_SOCKET:
        if opt == SocketOption.UDT_LINGER:
            on, seconds = value  # udt's (False, …) aborts, which is socket's (1, 0)
            value = (1, math.ceil(seconds) if on else 0)
        elif isinstance(value, bool):
            value = int(value)
    if buflen is None:
        return value
    if not isinstance(value, (int, tuple)):
        raise OSError(errno.EINVAL, f"{opt.name} has no fixed-size binary form")
    if not 0 < buflen <= 1024:
        raise OSError(errno.EINVAL, f"buflen must be between 1 and 1024, got {buflen}")
    if isinstance(value, tuple):
        on, seconds = value
        raw = _LINGER.pack(int(bool(on)), math.ceil(seconds))
    else:
        raw = _INT.pack(int(value))  # a bool as the kernel stores it: 0 or 1
    return raw[:buflen]


def route_source(family: int, local: tuple, peer: tuple) -> tuple:
    """*local* with a wildcard host replaced by the source address the kernel picks for *peer*.

    A udt port bound to the wildcard sends without IP_PKTINFO, so the route's preferred source is
    exactly the address its packets carry.  ``connect()`` on a UDP socket sends nothing.
    """
    if local[0] not in ("0.0.0.0", "::"):
        return local
    probe = _pysocket.socket(family, _pysocket.SOCK_DGRAM)
    try:
        probe.connect(peer)
        host = probe.getsockname()[0]
    except OSError:
        return local  # no route any more (e.g. the interface went away): the wildcard is all we know
    finally:
        probe.close()
    return (host, *local[1:])
