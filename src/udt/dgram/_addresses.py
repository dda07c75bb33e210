"""Results, argument checks and interface resolution shared by the socket and its memberships:
values in, values out, no state."""

from __future__ import annotations

import functools
import ipaddress
import socket as _socket
from collections.abc import Callable
from typing import Any, NamedTuple

import udt._mcast as _mcast

Interface = str | int | None
Lookup = Callable[[str, int], str]


class AddressInfo(NamedTuple):
    """A socket's own or connected address, as Node's ``socket.address()``."""

    address: str
    family: str  # "IPv4" or "IPv6"
    port: int


class RemoteInfo(NamedTuple):
    """Where a datagram came from and how long it was (Node's ``rinfo``)."""

    address: str
    family: str
    port: int
    size: int


def _family_name(family: int) -> str:
    return "IPv4" if family == _socket.AF_INET else "IPv6"


def _default_lookup(host: str, family: int) -> str:
    """Resolve *host* for *family* (the first answer), as Node's default ``dns.lookup``."""
    infos = _socket.getaddrinfo(host, None, family, _socket.SOCK_DGRAM)
    return str(infos[0][4][0])


def _ip(text: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP literal (multicast groups and sources must be literals)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be an IP address string, not {type(text).__name__}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IP address") from None


@functools.lru_cache(maxsize=1024)
def _literal_version(host: str) -> int:
    """4 or 6 for an IP literal, 0 for anything else (a name to look up); cached because every
    send checks its destination."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


def _check_port(port: Any, *, allow_zero: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be {low}-65535, not {port}")
    return port


def _check_flag(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, int)):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return bool(value)


def _check_hops(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= 255:
        raise ValueError(f"{what} must be {low}-255, not {value}")
    return value


class _ResolvedInterface(NamedTuple):
    """An interface as the kernel options need it: an IPv4 address (packed; zeros when unused)
    and/or an index (0 when unused).  Equal values name the same interface argument."""

    address: bytes
    ifindex: int


def _resolve_interface(family: int, interface: Interface) -> _ResolvedInterface:
    """Turn an interface argument into what the options need.

    Accepted: ``None`` (the kernel chooses), an index (int), a name (``"lo"``, ``"veth0"``), an
    address of the socket's family, and for IPv6 Node's scoped form (``"::%veth0"``, ``"%2"``).
    IPv6 options name interfaces by index only, so an IPv6 address is mapped to its interface
    with ``getifaddrs``.
    """
    size = 4 if family == _socket.AF_INET else 16
    zeros = bytes(size if family == _socket.AF_INET else 4)
    if interface is None:
        return _ResolvedInterface(zeros, 0)
    if isinstance(interface, bool) or not isinstance(interface, (int, str)):
        raise TypeError(f"interface must be a str or an int, not {type(interface).__name__}")
    if isinstance(interface, int):
        if interface <= 0:
            raise ValueError(f"interface index must be positive, not {interface}")
        _mcast.interface_name(interface)  # raises OSError when there is no such interface
        return _ResolvedInterface(zeros, interface)
    if not interface:
        raise ValueError("interface must not be empty")
    if family == _socket.AF_INET6 and "%" in interface:
        _, scope = interface.split("%", 1)
        if scope.isdigit():
            return _resolve_interface(family, int(scope))
        return _ResolvedInterface(zeros, _mcast.interface_index(scope))
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        return _ResolvedInterface(zeros, _mcast.interface_index(interface))
    if address.version != (4 if family == _socket.AF_INET else 6):
        raise ValueError(f"interface {interface!r} is not an {_family_name(family)} address (mixed address families)")
    if family == _socket.AF_INET:
        return _ResolvedInterface(address.packed, 0)
    if address.is_unspecified:
        return _ResolvedInterface(zeros, 0)
    return _ResolvedInterface(zeros, _mcast.interface_index_for_address(family, address.packed))
