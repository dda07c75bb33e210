"""Message mode under asyncio: ``await sendmsg(data)`` / ``await recvmsg()`` on a SOCK_DGRAM udt
connection.  Each call either completes whole or, cancelled, leaves the socket untouched."""

from __future__ import annotations

import asyncio
import socket as _pysocket
from collections.abc import Awaitable, Callable
from typing import Any

from ._connect import open_socket, wait_ready
from ._poller import acquire_poller
from ._server import Server, listen
from ._transport import close_socket

DEFAULT_MAX_MESSAGE = 1 << 20


class MessageSocket:
    """A connected message-mode udt socket driven by the event loop."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._poller = acquire_poller(self._loop)
        self._closed = False
        self._pending: set[asyncio.Future] = set()  # sendmsg/recvmsg waits, ended by close()

    @property
    def socket(self) -> Any:
        return self._sock

    def getpeername(self) -> tuple:
        return self._sock.getpeername()

    def getsockname(self) -> tuple:
        return self._sock.getsockname()

    async def sendmsg(
        self, data: bytes | bytearray | memoryview, ttl: float | None = None, inorder: bool = True
    ) -> int:
        """Queue *data* as one message, waiting for send-buffer room; returns its length."""
        while True:
            self._check_open()
            try:
                return self._sock.sendmsg(data, ttl, inorder)
            except BlockingIOError:
                await wait_ready(self._loop, self._sock, True, self._pending)

    async def recvmsg(self, bufsize: int = DEFAULT_MAX_MESSAGE) -> bytes:
        """The next whole message (truncated to *bufsize*); ``b""`` once the peer has closed."""
        while True:
            self._check_open()
            try:
                return self._sock.recvmsg(bufsize)
            except BlockingIOError:
                await wait_ready(self._loop, self._sock, False, self._pending)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError("udt.aio MessageSocket is closed")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for future in self._pending:
                if not future.done():
                    future.set_result(None)  # the waiter retries and finds the socket closed
            self._poller.discard(self._sock)
            self._poller.release()
            close_socket(self._loop, self._sock)

    async def __aenter__(self) -> MessageSocket:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()


async def open_message_connection(
    host: str | None, port: int, *, local_addr: tuple | None = None, rendezvous: bool = False, **options: Any
) -> MessageSocket:
    """Connect a message-mode (``SOCK_DGRAM``) udt socket: ``await ms.sendmsg(...)``."""
    sock = await open_socket(
        host, port, type=_pysocket.SOCK_DGRAM, local_addr=local_addr, rendezvous=rendezvous, options=options
    )
    return MessageSocket(sock)


async def start_message_server(
    client_connected_cb: Callable[[MessageSocket], Awaitable[None] | None],
    host: str | None = None,
    port: int = 0,
    *,
    backlog: int = 1024,
    start_serving: bool = True,
    **options: Any,
) -> Server:
    """Accept message-mode connections; *client_connected_cb(ms)* may be a coroutine (run as a task)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def on_accept(sock: Any) -> None:
        result = client_connected_cb(MessageSocket(sock))
        if asyncio.iscoroutine(result):
            task = loop.create_task(result)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    sockets = await listen(host, port, 0, _pysocket.SOCK_DGRAM, backlog, options)
    server = Server(loop, sockets, on_accept)
    if start_serving:
        await server.start_serving()
    return server
