"""One ``udt.epoll`` per event loop: its descriptor sits in the loop (``add_reader``) and each
wake-up dispatches ``ep.poll(0)`` to the transports' callbacks.

Interest is registered only while somebody waits: IN while a transport reads (or a server
accepts), OUT only while a writer has bytes queued or a connect is pending.  ERR comes with
either, so a broken connection wakes whoever is registered.  Transports, servers and waits hold
a reference (``acquire_poller``/``release``); the poller closes itself and leaves the loop when
the last one is released, so an idle program holds no descriptor.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import udt as _udt

_IN = int(_udt.UDT_EPOLL_IN)
_OUT = int(_udt.UDT_EPOLL_OUT)
_ERR = int(_udt.UDT_EPOLL_ERR)

Callback = Callable[[], None]

_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


def acquire_poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """The loop's poller (created on first use), with one more reference to :meth:`Poller.release`."""
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = Poller(loop)
    poller._users += 1
    return poller


class Poller:
    """Maps udt sockets to a reader and a writer callback, as a selector maps descriptors."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep: Any = _udt.epoll()
        self._fd = self._ep.fileno()
        # sock -> [reader, writer]; a key is present exactly while the socket is in the epoll
        self._entries: dict[Any, list[Callback | None]] = {}
        self._users = 0
        loop.add_reader(self._fd, self._dispatch)

    def set_reader(self, sock: Any, callback: Callback | None) -> None:
        self._update(sock, 0, callback)

    def set_writer(self, sock: Any, callback: Callback | None) -> None:
        self._update(sock, 1, callback)

    def discard(self, sock: Any) -> None:
        """Forget *sock* entirely (call before closing it)."""
        if self._entries.pop(sock, None) is not None:
            self._ep.remove_usock(sock)

    def _update(self, sock: Any, slot: int, callback: Callback | None) -> None:
        entry = self._entries.get(sock)
        if entry is None:
            if callback is None:
                return
            entry = [None, None]
            entry[slot] = callback
            self._entries[sock] = entry
            self._ep.add_usock(sock, self._mask(entry))
            return
        had = entry[slot] is not None
        entry[slot] = callback
        if entry[0] is None and entry[1] is None:
            self.discard(sock)
        elif had != (callback is not None):
            self._ep.modify_usock(sock, self._mask(entry))

    @staticmethod
    def _mask(entry: list[Callback | None]) -> int:
        return (_IN if entry[0] is not None else 0) | (_OUT if entry[1] is not None else 0) | _ERR

    def _dispatch(self) -> None:
        if self._ep is None:
            return
        for sock, mask in self._ep.poll(0):
            entry = self._entries.get(sock)
            if entry is not None and entry[1] is not None and mask & (_OUT | _ERR):
                self._run(entry[1])
            entry = self._entries.get(sock)  # the writer may have closed the socket
            if entry is not None and entry[0] is not None and mask & (_IN | _ERR):
                self._run(entry[0])

    def _run(self, callback: Callback) -> None:
        try:
            callback()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": "udt.aio readiness callback failed", "exception": exc, "callback": callback}
            )

    def release(self) -> None:
        """Drop one reference; the last one closes the poller (its owners discarded their sockets)."""
        self._users -= 1
        if self._users > 0 or self._ep is None:
            return
        for sock in list(self._entries):
            self.discard(sock)
        if _pollers.get(self._loop) is self:
            del _pollers[self._loop]
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._ep.close()
        self._ep = None
