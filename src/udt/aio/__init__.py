"""asyncio streams and transports for udt connections.

``reader, writer = await udt.aio.open_connection(host, port)`` and
``await udt.aio.start_server(cb, host, port)`` give the stdlib ``asyncio.StreamReader`` /
``StreamWriter`` over a udt :class:`Transport`; ``create_connection`` / ``create_server`` are the
protocol-level calls.  Keyword options are udt socket options by name (``UDT_MSS=9000``).  All
sockets of one event loop share one ``udt.epoll`` whose descriptor the loop watches.
"""

from __future__ import annotations

import asyncio
import socket as _pysocket
from collections.abc import Awaitable, Callable
from typing import Any

from ._connect import open_socket
from ._messages import MessageSocket, open_message_connection, start_message_server
from ._server import Server, listen
from ._transport import Transport

__all__ = [
    "MessageSocket",
    "Server",
    "Transport",
    "create_connection",
    "create_server",
    "open_connection",
    "open_message_connection",
    "start_message_server",
    "start_server",
]

_STREAM_LIMIT = 2**16  # asyncio's default StreamReader limit


async def create_connection(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int = 0,
    *,
    family: int = 0,
    local_addr: tuple | None = None,
    rendezvous: bool = False,
    **options: Any,
) -> tuple[Transport, asyncio.BaseProtocol]:
    """Connect a udt stream (``rendezvous=True``: meet a peer connecting back, from *local_addr*)."""
    loop = asyncio.get_running_loop()
    sock = await open_socket(host, port, family=family, local_addr=local_addr, rendezvous=rendezvous, options=options)
    try:
        protocol = protocol_factory()
        transport = Transport(loop, sock, protocol)
    except BaseException:
        sock.close()
        raise
    return transport, protocol


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int = 0,
    *,
    family: int = 0,
    backlog: int = 1024,
    start_serving: bool = True,
    **options: Any,
) -> Server:
    """Listen on *host*:*port*; each accepted connection gets ``protocol_factory()``."""
    loop = asyncio.get_running_loop()
    server: Server

    def on_accept(sock: Any) -> None:
        Transport(loop, sock, protocol_factory(), server=server)

    sockets = await listen(host, port, family, _pysocket.SOCK_STREAM, backlog, options)
    server = Server(loop, sockets, on_accept)
    if start_serving:
        await server.start_serving()
    return server


async def open_connection(
    host: str | None = None, port: int = 0, *, limit: int = _STREAM_LIMIT, **kwds: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over udt."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, **kwds)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None],
    host: str | None = None,
    port: int = 0,
    *,
    limit: int = _STREAM_LIMIT,
    **kwds: Any,
) -> Server:
    """``asyncio.start_server`` over udt."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, **kwds)
