"""The udt.dgram :class:`Socket`: lifecycle, binding and connecting, sending, receiving (pull and
``async for``), options and buffers.  Event delivery and multicast membership are its mixins
(:mod:`udt.dgram._events`, :mod:`udt.dgram.membership`)."""

from __future__ import annotations

import asyncio
import errno
import socket as _socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import udt._mcast as _mcast
from udt._net import Channel
from udt.dgram._addresses import (
    AddressInfo,
    Interface,
    Lookup,
    RemoteInfo,
    _check_flag,
    _check_hops,
    _check_port,
    _default_lookup,
    _family_name,
    _literal_version,
    _resolve_interface,
)
from udt.dgram._events import EVENTS, EventsMixin, Listener
from udt.dgram._shared import _live_sockets, _receive_buffer
from udt.dgram.errors import (
    AlreadyBoundError,
    AlreadyConnectedError,
    NotBoundError,
    NotConnectedError,
    SocketClosedError,
)
from udt.dgram.membership import Membership, MembershipsMixin

BytesLike = bytes | bytearray | memoryview

_new_rinfo = tuple.__new__  # RemoteInfo without the Python-level __new__ (per datagram)


class Socket(MembershipsMixin, EventsMixin):
    """A UDP socket: Node's ``dgram.Socket`` with snake_case names (see :mod:`udt.dgram`).

    ``type`` is ``"udp4"`` or ``"udp6"``; *callback*, when given, is attached as a ``message``
    listener.  ``lookup(host, family) -> address`` resolves host names (default: getaddrinfo).
    ``recv_buffer_size``/``send_buffer_size`` are applied when the socket is bound.
    """

    def __init__(
        self,
        type: str = "udp4",
        callback: Listener | None = None,
        *,
        reuse_addr: bool = False,
        reuse_port: bool = False,
        ipv6_only: bool = False,
        recv_buffer_size: int | None = None,
        send_buffer_size: int | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        if type == "udp4":
            family = _socket.AF_INET
        elif type == "udp6":
            family = _socket.AF_INET6
        else:
            raise ValueError(f"type must be 'udp4' or 'udp6', not {type!r}")
        if ipv6_only and family != _socket.AF_INET6:
            raise ValueError("ipv6_only needs a 'udp6' socket")
        for name, size in (("recv_buffer_size", recv_buffer_size), ("send_buffer_size", send_buffer_size)):
            if size is not None:
                self._check_buffer_size(size, name)
        if lookup is not None and not callable(lookup):
            raise TypeError("lookup must be callable")
        self._type = type
        self._family = family
        self._lookup: Lookup = lookup or _default_lookup
        self._recv_buffer_size = recv_buffer_size
        self._send_buffer_size = send_buffer_size
        self._lock = threading.RLock()
        self._closed = True  # until the channel exists
        self._bound = False
        self._peer: tuple | None = None
        self._memberships: dict[tuple, Membership] = {}
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {event: [] for event in EVENTS}
        self._queue: deque = deque()  # (callable, args) for the worker, in order
        self._worker: threading.Thread | None = None
        self._worker_polling = False
        self._reader_failed = False  # poll() itself failed: stop feeding listeners
        self._work_ready = threading.Condition(self._lock)
        self._pending_sends = 0
        self._last_destination: tuple | None = None  # (address, port) as given
        self._last_destination_resolved: tuple | None = None  # ... with the address looked up
        self._family_text = _family_name(family)
        self._referenced = True
        self._async_waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None
        self._channel = Channel(family, reuse_addr=reuse_addr, reuse_port=reuse_port, gso=False, gro=False)
        try:
            if family == _socket.AF_INET6:
                self._channel.setsockopt(_mcast.IPPROTO_IPV6, _mcast.IPV6_V6ONLY, int(bool(ipv6_only)))
        except BaseException:
            self._channel.close()
            raise
        self._closed = False
        _live_sockets.add(self)
        if callback is not None:
            self.on("message", callback)

    # ---- properties ----
    @property
    def type(self) -> str:
        """``"udp4"`` or ``"udp6"``."""
        return self._type

    @property
    def family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return self._family

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._closed else self._channel.fileno()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._bound:
            try:
                state = "bound={}:{}".format(*self.address()[::2])
            except OSError:
                state = "bound"
        else:
            state = "unbound"
        return f"<udt.dgram.Socket {self._type} {state}>"

    # ---- lifecycle ----
    def _check_open(self) -> None:
        if self._closed:
            raise SocketClosedError("the socket is closed")

    def _resolve(self, host: str) -> str:
        """An IP literal for *host* (names go through ``lookup``)."""
        if not isinstance(host, str):
            raise TypeError(f"address must be a str, not {type(host).__name__}")
        version = _literal_version(host)
        if version:
            if version == 6 and self._family == _socket.AF_INET:
                raise ValueError(f"{host} is an IPv6 address; this is a 'udp4' socket")
            return host  # an IPv4 literal on 'udp6' becomes ::ffff:a.b.c.d
        resolved = self._lookup(host, self._family)
        if not isinstance(resolved, str):
            raise TypeError(f"lookup() must return an address string, not {resolved!r}")
        return resolved

    def bind(
        self,
        port: int = 0,
        address: str | None = None,
        callback: Listener | None = None,
        *,
        exclusive: bool = False,
        fd: int | None = None,
    ) -> Socket:
        """Bind to *address*:*port* (defaults: the wildcard address, a free port), then emit
        ``listening`` (*callback* is attached as a once-listener for it).

        ``exclusive=True`` clears SO_REUSEADDR/SO_REUSEPORT so nobody can share the port.
        ``fd`` adopts an already bound UDP socket descriptor instead (Node's ``bind({fd})``);
        the Socket owns it from then on.
        """
        with self._lock:
            self._check_open()
            if self._bound:
                raise AlreadyBoundError("the socket is already bound")
            if fd is not None:
                self._adopt(fd)
            else:
                port = _check_port(port, allow_zero=True)
                if address is None:
                    address = "0.0.0.0" if self._family == _socket.AF_INET else "::"
                host = self._resolve(address)
                if exclusive:
                    self._channel.setsockopt(_mcast.SOL_SOCKET, _mcast.SO_REUSEADDR, 0)
                    self._channel.setsockopt(_mcast.SOL_SOCKET, _mcast.SO_REUSEPORT, 0)
                self._channel.bind((host, port))
            self._after_bind(callback)
        return self

    def _adopt(self, fd: int) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"fd must be a non-negative int, not {fd!r}")
        sock = _socket.socket(fileno=fd)
        if sock.family != self._family or sock.type != _socket.SOCK_DGRAM:
            sock.detach()
            raise ValueError(f"fd {fd} is not a {self._type} socket")
        channel = Channel.adopt(sock, gso=False, gro=False)
        self._channel.close()
        self._channel = channel

    def _after_bind(self, callback: Listener | None) -> None:
        """Mark bound, apply the buffer sizes asked at creation, emit ``listening``."""
        self._bound = True
        if self._recv_buffer_size is not None:
            self._channel.rcvbuf = self._recv_buffer_size
        if self._send_buffer_size is not None:
            self._channel.sndbuf = self._send_buffer_size
        if callback is not None:
            self.once("listening", callback)
        self._emit("listening")
        self._update_reading()

    def _implicit_bind(self) -> None:
        """Bind to the wildcard address and a free port, as Node does on the first send."""
        if not self._bound:
            self.bind()

    def close(self, callback: Listener | None = None) -> None:
        """Close the socket (idempotent): memberships become invalid, pending events and the
        ``close`` event are delivered, and the worker thread is joined before returning (unless
        called from a listener, on the worker itself).  *callback* is a once ``close`` listener.
        """
        with self._lock:
            if self._closed:
                return
            if callback is not None:
                self.once("close", callback)
            self._closed = True
            for membership in self._memberships.values():
                membership._valid = False
            self._memberships.clear()
            waiter = self._async_waiter
            self._emit("close")
            worker = self._worker
            self._work_ready.notify_all()
        if waiter is not None:
            self._wake_async_waiter(waiter)
        self._channel.close()  # also ends a worker's poll (EBADF)
        _live_sockets.discard(self)
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            import warnings

            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            try:
                self.close()
            except Exception:
                pass

    def ref(self) -> Socket:
        """Let this socket keep the interpreter alive while its worker feeds ``message``
        listeners (the default)."""
        self._referenced = True
        return self

    def unref(self) -> Socket:
        """Do not keep the interpreter alive: the socket is closed at interpreter shutdown."""
        self._referenced = False
        return self

    # ---- addresses ----
    def address(self) -> AddressInfo:
        """The bound address (NotBoundError before ``bind`` or the first send)."""
        with self._lock:
            self._check_open()
            if not self._bound:
                raise NotBoundError("the socket is not bound")
            name = self._channel.getsockname()
        return AddressInfo(name[0], _family_name(self._family), name[1])

    def remote_address(self) -> AddressInfo:
        """The connected peer (NotConnectedError when not connected)."""
        with self._lock:
            self._check_open()
            if self._peer is None:
                raise NotConnectedError("the socket is not connected")
            peer = self._peer
        return AddressInfo(peer[0], _family_name(self._family), peer[1])

    def connect(self, port: int, address: str | None = None, callback: Listener | None = None) -> Socket:
        """Fix the peer (default address: localhost): ``send`` then takes no address and only
        the peer's datagrams arrive.  Binds implicitly first.  Emits ``connect`` (*callback* is a
        once-listener for it)."""
        port = _check_port(port, allow_zero=False)
        with self._lock:
            self._check_open()
            if self._peer is not None:
                raise AlreadyConnectedError("the socket is already connected")
            if address is None:
                address = "127.0.0.1" if self._family == _socket.AF_INET else "::1"
            host = self._resolve(address)
            self._implicit_bind()
            self._channel.connect((host, port))
            self._peer = self._channel.getpeername()
            if callback is not None:
                self.once("connect", callback)
            self._emit("connect")
        return self

    def disconnect(self) -> None:
        """Forget the peer (NotConnectedError when not connected); the binding stays."""
        with self._lock:
            self._check_open()
            if self._peer is None:
                raise NotConnectedError("the socket is not connected")
            self._channel.disconnect()
            self._peer = None

    # ---- sending ----
    def send(
        self,
        data: BytesLike | Sequence[BytesLike],
        port: int | None = None,
        address: str | None = None,
        callback: Listener | None = None,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> int:
        """Send one datagram; returns the bytes sent.

        *data* is a bytes-like, or a list of them sent as ONE datagram (scatter/gather).
        *offset*/*length* select part of a single bytes-like.  On a connected socket give neither
        port nor address (else AlreadyConnectedError); otherwise *port* is required and
        *address* defaults to localhost.  An unbound socket is bound first (``listening``).
        With *callback*, ``callback(error, nbytes)`` runs on the worker and errors go there
        instead of being raised (0 is returned then).
        """
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        payload = self._payload(data, offset, length)
        with self._lock:
            self._check_open()
            if self._peer is not None:
                if port is not None or address is not None:
                    raise AlreadyConnectedError("send() with a destination on a connected socket")
                destination = None
            else:
                if port is None:
                    raise ValueError("send() needs a port on an unconnected socket")
                port = _check_port(port, allow_zero=False)
                if address is None:
                    address = "127.0.0.1" if self._family == _socket.AF_INET else "::1"
                destination = (address, port)
            if callback is not None:
                self._pending_sends += 1
        try:
            if destination is not None:
                if destination == self._last_destination:
                    destination = self._last_destination_resolved  # the channel caches it
                else:
                    key = destination
                    destination = (self._resolve(destination[0]), destination[1])
                    self._last_destination, self._last_destination_resolved = key, destination
            if not self._bound:
                with self._lock:
                    self._check_open()
                    self._implicit_bind()
            sent = self._channel.sendto(payload, destination)
        except OSError as error:
            if self._closed and not isinstance(error, SocketClosedError):
                error = SocketClosedError("the socket was closed during send")
            if callback is None:
                raise error
            self._queue_call(self._finish_send, callback, error, 0)
            return 0
        except BaseException:
            if callback is not None:
                with self._lock:
                    self._pending_sends -= 1
            raise
        if callback is not None:
            self._queue_call(self._finish_send, callback, None, sent)
        return sent

    def _finish_send(self, callback: Listener, error: BaseException | None, sent: int) -> None:
        with self._lock:
            self._pending_sends -= 1
        callback(error, sent)

    @staticmethod
    def _payload(data: Any, offset: int, length: int | None) -> Any:
        """Validate *data* and apply offset/length (Node allows them on one buffer only)."""
        if data.__class__ is bytes and offset == 0 and length is None:
            return data  # the common case, checked cheaply
        if isinstance(data, str) or (isinstance(data, (list, tuple)) and any(isinstance(part, str) for part in data)):
            raise TypeError("data must be bytes-like (encode str first)")
        if isinstance(data, (list, tuple)):
            if offset != 0 or length is not None:
                raise ValueError("offset/length apply to a single bytes-like, not a list")
            for part in data:
                memoryview(part)  # TypeError for anything that is not a buffer
            return data
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError("offset must be an int")
        if not 0 <= offset <= len(view):
            raise ValueError(f"offset must be 0-{len(view)}, not {offset}")
        if length is None:
            length = len(view) - offset
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError("length must be an int")
        if not 0 <= length <= len(view) - offset:
            raise ValueError(f"length must be 0-{len(view) - offset}, not {length}")
        if offset == 0 and length == len(view):
            return data
        return view[offset : offset + length]

    # ---- receiving ----
    def _rinfo(self, size: int, source: tuple) -> RemoteInfo:
        return _new_rinfo(RemoteInfo, (source[0], self._family_text, source[1], size))

    def _check_pull(self) -> None:
        self._check_open()
        if not self._bound:
            raise NotBoundError("the socket is not bound: nothing can arrive")
        if self._listeners["message"]:
            raise RuntimeError("datagrams go to the 'message' listeners; remove them to pull")

    def recvfrom(self, timeout: float | None = 1.0) -> tuple[bytes, RemoteInfo]:
        """Wait for one datagram: ``(data, rinfo)``.  ``timeout`` None waits for ever, 0 never
        waits (BlockingIOError); expiry raises TimeoutError; a close from another thread raises
        SocketClosedError."""
        with self._lock:
            self._check_pull()
        buffer = _receive_buffer()
        try:
            size, source = self._channel.recvfrom_into(buffer, timeout)
        except OSError as error:
            if self._closed and error.errno == errno.EBADF:
                raise SocketClosedError("the socket was closed") from None
            raise
        return buffer[:size].tobytes(), self._rinfo(size, source)

    def __aiter__(self) -> Socket:
        return self

    async def __anext__(self) -> tuple[bytes, RemoteInfo]:
        """Next datagram for ``async for``; the iteration ends when the socket closes."""
        loop = asyncio.get_running_loop()
        buffer = _receive_buffer()
        while True:
            with self._lock:
                if self._closed:
                    raise StopAsyncIteration
                self._check_pull()
                if self._async_waiter is not None:
                    raise RuntimeError("another coroutine is already waiting for a datagram")
                try:
                    size, source = self._channel.recvfrom_into(buffer, 0)
                    return buffer[:size].tobytes(), self._rinfo(size, source)
                except BlockingIOError:
                    pass
                future = loop.create_future()
                fd = self._channel.fileno()
                self._async_waiter = (loop, future)
            loop.add_reader(fd, _resolve_future, future)
            try:
                await future
            finally:
                with self._lock:
                    self._async_waiter = None
                loop.remove_reader(fd)

    @staticmethod
    def _wake_async_waiter(waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future]) -> None:
        loop, future = waiter
        try:
            loop.call_soon_threadsafe(_resolve_future, future)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    # ---- options ----
    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        """Set any socket option (escape hatch, as ``socket.setsockopt``)."""
        with self._lock:
            self._check_open()
            self._channel.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        """Read any socket option (as ``socket.getsockopt``)."""
        with self._lock:
            self._check_open()
            return self._channel.getsockopt(level, option, buflen)

    def _ip_option(self, v4_option: int, v6_option: int, value: int | bytes) -> None:
        if self._family == _socket.AF_INET:
            self.setsockopt(_mcast.IPPROTO_IP, v4_option, value)
        else:
            self.setsockopt(_mcast.IPPROTO_IPV6, v6_option, value)

    def set_broadcast(self, flag: bool) -> None:
        """Allow sending to broadcast addresses (SO_BROADCAST); without it the kernel refuses
        them with EACCES (PermissionError)."""
        self.setsockopt(_mcast.SOL_SOCKET, _mcast.SO_BROADCAST, int(_check_flag(flag, "flag")))

    def set_ttl(self, ttl: int) -> int:
        """Unicast hop limit, 1-255 (IP_TTL / IPV6_UNICAST_HOPS)."""
        ttl = _check_hops(ttl, "ttl", 1)
        self._ip_option(_mcast.IP_TTL, _mcast.IPV6_UNICAST_HOPS, ttl)
        return ttl

    def set_multicast_ttl(self, ttl: int) -> int:
        """Multicast hop limit, 0-255 (0: this host only)."""
        ttl = _check_hops(ttl, "ttl", 0)
        self._ip_option(_mcast.IP_MULTICAST_TTL, _mcast.IPV6_MULTICAST_HOPS, ttl)
        return ttl

    def set_multicast_loopback(self, flag: bool) -> bool:
        """Whether this host's own group members get our multicast datagrams."""
        flag = _check_flag(flag, "flag")
        self._ip_option(_mcast.IP_MULTICAST_LOOP, _mcast.IPV6_MULTICAST_LOOP, int(flag))
        return flag

    def set_multicast_all(self, flag: bool) -> bool:
        """Linux's IP_MULTICAST_ALL / IPV6_MULTICAST_ALL (default on): receive every group joined
        by any socket on this port, not only our own.  Not in Node; needed to isolate sockets."""
        flag = _check_flag(flag, "flag")
        self._ip_option(_mcast.IP_MULTICAST_ALL, _mcast.IPV6_MULTICAST_ALL, int(flag))
        return flag

    def set_multicast_interface(self, interface: Interface) -> None:
        """Send multicast out of *interface*: an address of the socket's family, a name, an
        index, or for IPv6 Node's ``"::%name"`` form; None, ``"0.0.0.0"`` or ``"::"`` restores
        the kernel's choice."""
        resolved = _resolve_interface(self._family, interface)
        if self._family == _socket.AF_INET:
            value = _mcast.ip_mreqn(bytes(4), resolved.address, resolved.ifindex)
            self.setsockopt(_mcast.IPPROTO_IP, _mcast.IP_MULTICAST_IF, value)
        else:
            self.setsockopt(_mcast.IPPROTO_IPV6, _mcast.IPV6_MULTICAST_IF, resolved.ifindex)

    # ---- buffers and queues ----
    @staticmethod
    def _check_buffer_size(size: Any, what: str = "size") -> int:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{what} must be an int, not {type(size).__name__}")
        if not 0 < size <= 0x7FFFFFFF // 2:
            raise ValueError(f"{what} must be 1-{0x7FFFFFFF // 2}, not {size}")
        return size

    def _check_bound_for_buffers(self) -> None:
        self._check_open()
        if not self._bound:
            raise NotBoundError("buffer sizes need a bound socket")

    def get_recv_buffer_size(self) -> int:
        """SO_RCVBUF as the kernel reports it (on Linux twice the size set: bookkeeping)."""
        with self._lock:
            self._check_bound_for_buffers()
            return self._channel.rcvbuf

    def set_recv_buffer_size(self, size: int) -> None:
        """Ask for a receive buffer of *size* bytes (forced past the sysctl cap when root)."""
        size = self._check_buffer_size(size)
        with self._lock:
            self._check_bound_for_buffers()
            self._channel.rcvbuf = size

    def get_send_buffer_size(self) -> int:
        """SO_SNDBUF as the kernel reports it."""
        with self._lock:
            self._check_bound_for_buffers()
            return self._channel.sndbuf

    def set_send_buffer_size(self, size: int) -> None:
        """Ask for a send buffer of *size* bytes."""
        size = self._check_buffer_size(size)
        with self._lock:
            self._check_bound_for_buffers()
            self._channel.sndbuf = size

    def get_send_queue_size(self) -> int:
        """Bytes accepted by ``send`` that have not left the host yet.  ``send`` hands each
        datagram to the kernel before returning, so this is the kernel's send queue (SIOCOUTQ)."""
        with self._lock:
            self._check_open()
            return self._channel.outq()

    def get_send_queue_count(self) -> int:
        """Sends made with a callback whose callback has not run yet."""
        with self._lock:
            self._check_open()
            return self._pending_sends


def _resolve_future(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
