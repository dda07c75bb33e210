"""``create_connection`` and ``create_server``: a connected or listening udt socket in one call,
as the :mod:`socket` module's functions of the same names."""

from __future__ import annotations

import errno as _errno
import socket as _pysocket

from ._socket import _GLOBAL_DEFAULT_TIMEOUT, AF_INET, AF_INET6, SOCK_STREAM, socket
from .options import SocketOption

__all__ = ["create_connection", "create_server"]


def create_connection(
    address: tuple,
    timeout: float | None = _GLOBAL_DEFAULT_TIMEOUT,
    source_address: tuple | None = None,
    *,
    type: int = SOCK_STREAM,
    options: dict | None = None,
) -> socket:
    """Connect to (host, port) and return the connected udt socket (as
    :func:`socket.create_connection`: every address of *host* is tried in turn, IPv4 first).  *options*:
    ``{udt.UDT_MSS: 9000, …}`` applied before connecting."""
    host, port = address[0], address[1]
    errors: list[Exception] = []
    candidates = [
        info for info in _pysocket.getaddrinfo(host, port, 0, _pysocket.SOCK_DGRAM) if info[0] in (AF_INET, AF_INET6)
    ]
    # UDT learns of a dead address only by a 3 s handshake timeout (no RST as with TCP), so IPv4
    # goes first: "localhost" resolving to ::1 first would otherwise cost 3 s against a v4 server.
    candidates.sort(key=lambda info: info[0] != AF_INET)
    for family, _kind, _proto, _name, sockaddr in candidates:
        sock = None
        try:
            sock = socket(family, type)
            for option, value in (options or {}).items():
                sock.setsockopt(option, value)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
    if not errors:
        raise OSError(_errno.EADDRNOTAVAIL, f"getaddrinfo returned no usable address for {host!r}")
    if len(errors) == 1:
        raise errors[0]
    raise errors[0] from ExceptionGroup("create_connection failed", errors)


def create_server(
    address: tuple,
    *,
    family: int = AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    type: int = SOCK_STREAM,
    options: dict | None = None,
) -> socket:
    """A udt socket bound to *address* and listening (as :func:`socket.create_server`)."""
    sock = socket(family, type)
    try:
        if reuse_port:
            sock.setsockopt(SocketOption.UDT_REUSEADDR, True)
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        sock.bind(address)
        sock.listen(128 if backlog is None else backlog)
    except BaseException:
        sock.close()
        raise
    return sock
