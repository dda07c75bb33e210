"""``udt.epoll``: wait on many udt sockets and OS descriptors at once (UDT4's epoll API).

Every udt member contributes its readiness eventfds (``udt._epoll``) to one kernel epoll set,
beside the plain OS descriptors added with :meth:`epoll.add_ssock`; :meth:`epoll.wait` blocks in
``epoll_wait`` with the GIL released (no tick), then reports each udt socket from its real state,
so a wake-up that raced with a ``recv`` never reports a socket that is not ready.
Semantics and costs: docs/readiness.md.
"""

from __future__ import annotations

import errno as _errno
import select
import threading
from typing import TYPE_CHECKING, Any

from .options import EpollEvent

if TYPE_CHECKING:
    from ._socket import socket

__all__ = ["epoll", "UDT_EPOLL_IN", "UDT_EPOLL_OUT", "UDT_EPOLL_ERR", "UDT_EPOLL_ET"]

UDT_EPOLL_IN = EpollEvent.IN
UDT_EPOLL_OUT = EpollEvent.OUT
UDT_EPOLL_ERR = EpollEvent.ERR
UDT_EPOLL_ET = EpollEvent.ET
_CONDITIONS = int(UDT_EPOLL_IN | UDT_EPOLL_OUT | UDT_EPOLL_ERR)
_ALL = _CONDITIONS | int(UDT_EPOLL_ET)


def _check_events(events: int) -> int:
    events = int(events)
    if events & ~_ALL or not events & _CONDITIONS:
        raise ValueError(f"invalid udt epoll events {events:#x}: UDT_EPOLL_IN/OUT/ERR (| ET)")
    return events


def _os_fd(fd_or_socket: Any) -> int:
    fd = fd_or_socket if isinstance(fd_or_socket, int) else fd_or_socket.fileno()
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    return int(fd)


class _Member:
    """A udt socket in one poller: its events and the eventfds that stand for it."""

    __slots__ = ("sock", "events", "fds")

    def __init__(self, sock: socket, events: int, fds: dict[int, int]) -> None:
        self.sock = sock
        self.events = events
        self.fds = fds  # eventfd -> the conditions it stands for (IN|ERR or OUT)


class epoll:
    """A set of udt sockets and OS descriptors to wait on together (context manager)."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._members: dict[socket, _Member] = {}
        self._by_fd: dict[int, _Member] = {}  # eventfd -> udt member
        self._ssocks: dict[int, int] = {}  # OS fd -> events

    # ---- membership -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._ep.closed:
            raise ValueError("I/O operation on a closed udt.epoll")

    def add_usock(self, sock: socket, events: int = _CONDITIONS) -> None:
        """Watch udt socket *sock* (connected, connecting or listening) for *events*."""
        events = _check_events(events)
        with self._lock:
            self._check_open()
            if sock in self._members:
                raise FileExistsError(_errno.EEXIST, "udt socket already in this epoll")
            self._attach(sock, events)

    def modify_usock(self, sock: socket, events: int) -> None:
        """Change the events watched on *sock*."""
        events = _check_events(events)
        with self._lock:
            self._check_open()
            if sock not in self._members:
                raise FileNotFoundError(_errno.ENOENT, "udt socket not in this epoll")
            self._detach(sock)
            self._attach(sock, events)

    def remove_usock(self, sock: socket) -> None:
        """Stop watching *sock* (a socket not in the set is ignored, as in UDT4)."""
        with self._lock:
            if sock in self._members:
                self._detach(sock)

    def add_ssock(self, fd: Any, events: int = int(UDT_EPOLL_IN)) -> None:
        """Watch a plain OS descriptor (an int or anything with ``fileno()``) for *events*."""
        events = _check_events(events)
        fd = _os_fd(fd)
        with self._lock:
            self._check_open()
            if fd in self._by_fd:
                raise FileExistsError(_errno.EEXIST, "this fd is a udt socket's readiness fd")
            mask = select.EPOLLERR | select.EPOLLHUP
            if events & UDT_EPOLL_IN:
                mask |= select.EPOLLIN
            if events & UDT_EPOLL_OUT:
                mask |= select.EPOLLOUT
            if events & UDT_EPOLL_ET:
                mask |= select.EPOLLET
            self._ep.register(fd, mask)
            self._ssocks[fd] = events

    def modify_ssock(self, fd: Any, events: int) -> None:
        """Change the events watched on an OS descriptor."""
        fd = _os_fd(fd)
        self.remove_ssock(fd)
        self.add_ssock(fd, events)

    def remove_ssock(self, fd: Any) -> None:
        """Stop watching an OS descriptor (one not in the set is ignored)."""
        fd = _os_fd(fd)
        with self._lock:
            if self._ssocks.pop(fd, None) is not None and not self._ep.closed:
                try:
                    self._ep.unregister(fd)
                except OSError:
                    pass  # already closed by its owner: the kernel dropped it

    def _attach(self, sock: socket, events: int) -> None:
        fds: dict[int, int] = {}
        flag = select.EPOLLIN | (select.EPOLLET if events & UDT_EPOLL_ET else 0)
        try:
            if events & (UDT_EPOLL_IN | UDT_EPOLL_ERR):
                fd = sock._readiness_fd(False)
                assert fd is not None
                fds[fd] = events & int(UDT_EPOLL_IN | UDT_EPOLL_ERR)
                # the read eventfd is set for data too: ERR alone listens to its edges only
                self._ep.register(fd, flag if events & UDT_EPOLL_IN else select.EPOLLIN | select.EPOLLET)
            write_fd = sock._readiness_fd(True) if events & UDT_EPOLL_OUT else None
            if write_fd is not None:  # (a listener is never writable)
                fds[write_fd] = int(UDT_EPOLL_OUT)
                self._ep.register(write_fd, flag)
        except BaseException:
            for fd in fds:
                try:
                    self._ep.unregister(fd)
                except OSError:
                    pass
            raise
        member = _Member(sock, events, fds)
        self._members[sock] = member
        for fd in fds:
            self._by_fd[fd] = member
        sock._pollers.add(self)

    def _detach(self, sock: socket) -> None:
        member = self._members.pop(sock)
        for fd in member.fds:
            self._by_fd.pop(fd, None)
            try:
                self._ep.unregister(fd)
            except OSError:
                pass  # the socket closed: the kernel already dropped its eventfd
        sock._pollers.discard(self)

    def _forget(self, sock: socket) -> None:
        """The socket is closing (called by it before its eventfds close)."""
        with self._lock:
            if sock in self._members and not self._ep.closed:
                self._detach(sock)

    # ---- waiting --------------------------------------------------------------------------
    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[Any, int]]:
        """``[(udt socket or OS fd, UDT_EPOLL_* mask), ...]`` ready now or within *timeout*
        seconds (None or < 0: no limit; 0: just look); ``[]`` when the time runs out."""
        self._check_open()
        if timeout is None or timeout < 0:
            timeout = -1
        found = self._ep.poll(timeout, maxevents)
        result: list[tuple[Any, int]] = []
        udt_masks: dict[socket, int] = {}
        watched: dict[socket, int] = {}
        with self._lock:
            for fd, kernel_mask in found:
                member = self._by_fd.get(fd)
                if member is not None:
                    udt_masks[member.sock] = udt_masks.get(member.sock, 0) | member.fds[fd]
                    watched[member.sock] = member.events
                    continue
                events = self._ssocks.get(fd)
                if events is None:
                    continue  # removed while we waited
                mask = 0
                if kernel_mask & select.EPOLLIN and events & UDT_EPOLL_IN:
                    mask |= int(UDT_EPOLL_IN)
                if kernel_mask & select.EPOLLOUT and events & UDT_EPOLL_OUT:
                    mask |= int(UDT_EPOLL_OUT)
                if kernel_mask & (select.EPOLLERR | select.EPOLLHUP) and events & UDT_EPOLL_ERR:
                    mask |= int(UDT_EPOLL_ERR)
                if mask:
                    result.append((fd, mask))
        for sock, candidates in udt_masks.items():
            # the real state decides (a recv may have drained it since the wake-up)
            real = sock._readiness()
            if real & UDT_EPOLL_ERR:
                # an error raises both eventfds, one after the other: a wake-up between the two
                # still reports every watched condition the error sets
                candidates |= watched[sock] & _CONDITIONS
            mask = real & candidates
            if mask:
                result.append((sock, mask))
        return result

    def wait(self, timeout: float | None = None) -> tuple[list[Any], list[Any], list[int], list[int]]:
        """``(udt readable, udt writable, OS fds readable, OS fds writable)``; a udt socket in
        error is in the lists it was watched for (UDT_EPOLL_ERR alone puts it in the readable)."""
        readable: list[Any] = []
        writable: list[Any] = []
        sreadable: list[int] = []
        swritable: list[int] = []
        for key, mask in self.poll(timeout):
            udt = not isinstance(key, int)
            if mask & (UDT_EPOLL_IN | UDT_EPOLL_ERR):
                (readable if udt else sreadable).append(key)
            if mask & UDT_EPOLL_OUT:
                (writable if udt else swritable).append(key)
        return readable, writable, sreadable, swritable

    # ---- the poller itself ----------------------------------------------------------------
    def fileno(self) -> int:
        """The kernel epoll fd: readable when :meth:`poll` may have something to report (an
        event loop watches this one fd and calls ``poll(0)``)."""
        self._check_open()
        return self._ep.fileno()

    @property
    def closed(self) -> bool:
        return self._ep.closed

    def close(self) -> None:
        """Release the poller; its sockets stay open."""
        with self._lock:
            if self._ep.closed:
                return
            for sock in list(self._members):
                self._detach(sock)
            self._ssocks.clear()
            self._ep.close()

    def __enter__(self) -> epoll:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_ep", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ep.closed else f"{len(self._members)} udt, {len(self._ssocks)} os"
        return f"<udt.epoll {state}>"
