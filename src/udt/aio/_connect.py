"""Making udt sockets for asyncio: options from keywords, non-blocking connect on OUT readiness."""

from __future__ import annotations

import asyncio
import socket as _pysocket
from typing import Any

import udt as _udt
from udt.options import SocketOption

from ._poller import acquire_poller

# The loop owns blocking: a caller cannot ask for a blocking socket under asyncio.
_LOOP_OWNED = {"UDT_SNDSYN", "UDT_RCVSYN", "UDT_SNDTIMEO", "UDT_RCVTIMEO"}


def new_socket(family: int, type: int, options: dict[str, Any]) -> Any:
    """A non-blocking udt socket with *options* (``UDT_MSS=9000``, any SocketOption name) set."""
    parsed = []
    for name, value in options.items():
        key = name.upper()
        if key not in _udt.SocketOption.__members__:
            raise TypeError(f"unknown udt option {name!r} (expected a udt.SocketOption name such as UDT_MSS)")
        if key in _LOOP_OWNED:
            raise ValueError(f"{key} cannot be set under asyncio: the event loop decides blocking")
        parsed.append((_udt.SocketOption[key], value))
    sock = _udt.socket(family, type)
    try:
        for option, value in parsed:
            sock.setsockopt(option, value)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def wait_ready(
    loop: asyncio.AbstractEventLoop, sock: Any, writable: bool, pending: set[asyncio.Future] | None = None
) -> None:
    """Wait until *sock* is readable (or writable): one registration, removed however we leave.
    The wait's future sits in *pending* meanwhile, so that closing the socket can end it."""
    poller = acquire_poller(loop)
    future = loop.create_future()
    if pending is not None:
        pending.add(future)

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    setter = poller.set_writer if writable else poller.set_reader
    setter(sock, wake)
    try:
        await future
    finally:
        if pending is not None:
            pending.discard(future)
        setter(sock, None)
        poller.release()


async def connect(loop: asyncio.AbstractEventLoop, sock: Any, address: tuple) -> None:
    """Non-blocking connect: start the handshake, wait for OUT (done) or ERR (failed)."""
    try:
        sock.connect(address)
    except BlockingIOError:
        pass
    while True:
        try:
            sock._finish_connect(0.0)  # raises the handshake's failure, or BlockingIOError
            return
        except BlockingIOError:
            await wait_ready(loop, sock, writable=True)


async def resolve(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, family: int, *, passive: bool = False
) -> list[tuple[int, tuple]]:
    """(family, sockaddr) for *host*, IPv4 first (udt learns of a dead address only by timeout)."""
    flags = _pysocket.AI_PASSIVE if passive else 0
    infos = await loop.getaddrinfo(host, port, family=family, type=_pysocket.SOCK_DGRAM, flags=flags)
    found: list[tuple[int, tuple]] = [
        (info[0], info[4]) for info in infos if info[0] in (_pysocket.AF_INET, _pysocket.AF_INET6)
    ]
    if not found:
        raise OSError(f"getaddrinfo({host!r}) returned no IPv4 or IPv6 address")
    found.sort(key=lambda item: item[0] != _pysocket.AF_INET)
    return found


async def open_socket(
    host: str | None,
    port: int,
    *,
    family: int = 0,
    type: int = _pysocket.SOCK_STREAM,
    local_addr: tuple | None = None,
    rendezvous: bool = False,
    options: dict[str, Any],
) -> Any:
    """A connected non-blocking udt socket: every address of *host* is tried in turn.
    ``rendezvous=True`` meets a peer connecting back from *host*:*port* (needs *local_addr*)."""
    if rendezvous and local_addr is None:
        raise ValueError("rendezvous=True needs local_addr: both peers bind the port the other connects to")
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for fam, address in await resolve(loop, host, port, family):
        sock = new_socket(fam, type, options)
        try:
            if rendezvous:
                sock.setsockopt(SocketOption.UDT_RENDEZVOUS, True)
            if local_addr is not None:
                sock.bind(local_addr)
            await connect(loop, sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            sock.setsockopt(SocketOption.UDT_LINGER, (False, 0))
            sock.close()
        except BaseException:  # cancelled (asyncio.timeout, wait_for): leave no socket behind
            sock.setsockopt(SocketOption.UDT_LINGER, (False, 0))
            sock.close()
            raise
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"could not connect to {host!r}:{port}: {errors}") from ExceptionGroup("connect failed", errors)
