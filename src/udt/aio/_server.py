"""``Server``: listening udt sockets whose accepts run on the loop's poller."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from ._connect import new_socket, resolve
from ._poller import Poller, acquire_poller
from ._transport import close_socket

# Accepts taken per wake-up: a burst of handshakes cannot starve established connections.
ACCEPT_BURST = 64


class Server(asyncio.AbstractServer):
    """asyncio's Server, for udt: ``async with server``, ``serve_forever``, ``close``, ``wait_closed``.

    *on_accept(sock)* is called with each accepted, non-blocking socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[Any], on_accept: Callable[[Any], None]) -> None:
        self._loop = loop
        self._sockets: list[Any] | None = sockets
        self._on_accept = on_accept
        self._serving = False
        self._active = 0  # live connections accepted here
        self._waiters: list[asyncio.Future] | None = []
        self._serving_forever: asyncio.Future | None = None
        self._poller: Poller | None = None  # held while serving

    def __repr__(self) -> str:
        return f"<udt.aio.Server sockets={self.sockets!r}>"

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._sockets or ())

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        if self._serving:
            return
        self._serving = True
        self._poller = poller = acquire_poller(self._loop)
        for sock in self._sockets:
            poller.set_reader(sock, functools.partial(self._accept_ready, sock))

    def _accept_ready(self, listener: Any) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, _address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._loop.call_exception_handler({"message": "udt.aio accept failed", "exception": exc})
                return
            try:
                sock.setblocking(False)
                self._on_accept(sock)
            except BaseException:
                close_socket(self._loop, sock, abort=True)
                raise

    def close(self) -> None:
        """Stop listening; connections already accepted go on until they close."""
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        self._serving = False
        poller, self._poller = self._poller, None
        for sock in sockets:
            if poller is not None:
                poller.discard(sock)
            sock.close()
        if poller is not None:
            poller.release()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._serving_forever = None
        self._wake()

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection it accepted has closed."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        if self._sockets is not None or self._active or self._waiters is None:
            return
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def listen(host: str | None, port: int, family: int, type: int, backlog: int, options: dict[str, Any]) -> list:
    """Listening udt sockets on every address of *host* (None: all IPv4 interfaces)."""
    loop = asyncio.get_running_loop()
    sockets: list[Any] = []
    try:
        seen = set()
        for fam, address in await resolve(loop, host, port, family, passive=True):
            if (fam, address) in seen:
                continue
            seen.add((fam, address))
            sock = new_socket(fam, type, options)
            sockets.append(sock)
            sock.bind(address)
            sock.listen(backlog)
            if port == 0 or host is None:  # one port for all families is not promised: take the first
                break
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
