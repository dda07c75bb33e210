"""Datagram sockets with the feature set of Node.js's ``dgram`` module, in Python's idiom.

::

    from udt import dgram
    with dgram.create_socket("udp4", reuse_addr=True) as s:
        s.bind(port=0)                                            # 0.0.0.0: unicast and groups
        s.on("message", lambda data, rinfo: print(data, rinfo))   # called on another thread
        m = s.add_membership("239.1.2.3", "127.0.0.1")            # a Membership (Java-style)
        s.set_multicast_interface("127.0.0.1")                    # keep multicast on lo
        s.send(b"hi", s.address().port, "239.1.2.3")

Every socket call goes through :class:`udt._net.Channel`, the same UDP socket object the UDT
multiplexer uses, so both share one implementation of the system calls; the multicast and
source-filter options Python 3.11's ``socket`` module lacks come from the C headers via
:mod:`udt._mcast`.

**Threads.** Events (``message``, ``listening``, ``connect``, ``close``, ``error``) and ``send``
callbacks run on one worker thread per socket, never in the caller's thread, in the order they
happened.  The worker exists only while there is something to deliver or ``message`` listeners to
feed; :meth:`Socket.close` delivers the ``close`` event and joins it.  A socket whose worker is
feeding ``message`` listeners keeps the interpreter alive until closed, as a bound socket keeps
Node's event loop alive; :meth:`Socket.unref` lifts that (the socket is closed when the
interpreter shuts down).

**Receiving.** Each datagram goes to exactly one consumer: to the ``message`` listeners while any
are attached, otherwise to :meth:`Socket.recvfrom` or ``async for data, rinfo in socket``.
Pulling while listeners are attached raises :class:`RuntimeError` (as asyncio streams do for two
concurrent readers).

**Where this deviates from Node, and why.**

- Names are snake_case (``create_socket``, ``add_membership``, ``set_multicast_ttl`` ...).
- Calls are synchronous: ``bind``, ``connect`` and ``send`` do their work before returning and
  raise their errors, as Python's ``socket`` does, instead of emitting ``error``; callbacks still
  run (on the worker) for code written the Node way, and a ``send`` with a callback hands its error
  to the callback instead of raising it.  The ``error`` event carries errors nobody could be
  handed synchronously: failed receives on the worker (``ConnectionRefusedError`` after an ICMP
  port-unreachable on a connected socket) and exceptions raised by listeners.
- Data is a bytes-like or a list of them; ``str`` is refused (``TypeError``), as ``socket.send``.
- ``recvfrom(timeout)`` and asynchronous iteration are added: Python code pulls.
- Options (TTL, broadcast, multicast) can be set before ``bind``: the socket exists from
  construction, so there is no reason to refuse (Node raises EBADF there).  Buffer sizes still
  need a bound socket, as in Node.
- ``add_membership`` returns a :class:`Membership` (Java's ``MembershipKey`` rules, see there).
- ``bind(exclusive=True)`` makes the port unshareable (SO_REUSEADDR/SO_REUSEPORT cleared): Python
  has no cluster module whose handle sharing Node's flag controls.
- ``address().family`` and ``rinfo.family`` are ``"IPv4"``/``"IPv6"``, as in Node.
- ``send`` hands each datagram to the kernel before returning (waiting for buffer space like a
  blocking socket), so there is no user-space queue as in libuv: ``get_send_queue_size()`` is
  the kernel's send queue (SIOCOUTQ, bytes not yet on the wire) and ``get_send_queue_count()``
  the sends whose callback has not run yet.
- Errors are exceptions of the :class:`DgramError` family (OSError subclasses with an errno)
  instead of Node's ``ERR_SOCKET_*`` codes; each class names the Node code it stands for.
- Unknown event names raise ``ValueError`` instead of being silently accepted.
- ``create_socket``'s ``signal`` (AbortSignal) has no Python counterpart; use ``close()``.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket as _socket
import threading
import weakref
from collections import deque
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from udt import _mcast
from udt import errors as _errors
from udt._net import Channel

__all__ = [
    "create_socket",
    "Socket",
    "Membership",
    "AddressInfo",
    "RemoteInfo",
    "DgramError",
    "SocketClosedError",
    "AlreadyBoundError",
    "NotBoundError",
    "AlreadyConnectedError",
    "NotConnectedError",
    "MembershipStateError",
    "InvalidMembershipError",
]

BytesLike = Union[bytes, bytearray, memoryview]
Interface = Union[str, int, None]
Listener = Callable[..., Any]
Lookup = Callable[[str, int], str]

EVENTS = frozenset({"message", "listening", "connect", "close", "error"})
_MAX_DATAGRAM = 65536          # larger than any UDP payload (65507 IPv4, 65527 IPv6)
_READ_BURST = 64               # datagrams read per wake before queued events get a turn
_POLLIN = 0x001


# ---- results -------------------------------------------------------------------------------------
class AddressInfo(NamedTuple):
    """A socket's own or connected address, as Node's ``socket.address()``."""

    address: str
    family: str    # "IPv4" or "IPv6"
    port: int


class RemoteInfo(NamedTuple):
    """Where a datagram came from and how long it was (Node's ``rinfo``)."""

    address: str
    family: str
    port: int
    size: int


# ---- errors --------------------------------------------------------------------------------------
class DgramError(OSError):
    """Base of the errors udt.dgram raises for misuse of a socket (all carry an errno)."""

    default_errno = errno.EINVAL

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        code = self.default_errno if code is None else code
        OSError.__init__(self, code, message)  # not super(): NotConnectedError is a UDTError too


class SocketClosedError(DgramError):
    """The socket was closed (Node: ERR_SOCKET_DGRAM_NOT_RUNNING); errno EBADF."""

    default_errno = errno.EBADF


class AlreadyBoundError(DgramError):
    """``bind`` on a socket that is already bound (Node: ERR_SOCKET_ALREADY_BOUND); EINVAL,
    what the kernel answers for a second bind."""

    default_errno = errno.EINVAL


class NotBoundError(DgramError):
    """The call needs a bound socket: ``address()``, buffer sizes, ``recvfrom`` (Node:
    ERR_SOCKET_BUFFER_SIZE / getsockname EBADF); errno EBADF, the code Node reports."""

    default_errno = errno.EBADF


class AlreadyConnectedError(DgramError):
    """``connect`` twice, or ``send`` with an address on a connected socket (Node:
    ERR_SOCKET_DGRAM_IS_CONNECTED); errno EISCONN."""

    default_errno = errno.EISCONN


class NotConnectedError(DgramError, _errors.NotConnectedError):
    """``disconnect`` or ``remote_address`` on a socket that is not connected (Node:
    ERR_SOCKET_DGRAM_NOT_CONNECTED); errno ENOTCONN.  Also a :class:`udt.NotConnectedError`
    (UDT 2002), so ``except udt.NotConnectedError`` catches it as well."""

    default_errno = errno.ENOTCONN
    udt_code = _errors.ErrorCode.NO_CONNECTION
    # A DgramError first: its message-first constructor, OSError's str and pickling.
    __str__ = OSError.__str__
    __reduce__ = OSError.__reduce__


class MembershipStateError(DgramError):
    """A membership operation that the membership's state forbids — Java's
    ``IllegalStateException``: blocking a source on a source-specific membership, unblocking a
    source that is not blocked, or an any-source and a source-specific membership of the same group
    on the same interface; errno EINVAL."""


class InvalidMembershipError(MembershipStateError):
    """The Membership was dropped or its socket closed: it is invalid for ever."""


# ---- addresses -----------------------------------------------------------------------------------
def _family_name(family: int) -> str:
    return "IPv4" if family == _socket.AF_INET else "IPv6"


def _default_lookup(host: str, family: int) -> str:
    """Resolve *host* for *family* (the first answer), as Node's default ``dns.lookup``."""
    infos = _socket.getaddrinfo(host, None, family, _socket.SOCK_DGRAM)
    return infos[0][4][0]


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
    index: int


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
        _mcast.interface_name(interface)        # raises OSError when there is no such interface
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
        raise ValueError(f"interface {interface!r} is not an {_family_name(family)} address "
                         f"(mixed address families)")
    if family == _socket.AF_INET:
        return _ResolvedInterface(address.packed, 0)
    if address.is_unspecified:
        return _ResolvedInterface(zeros, 0)
    return _ResolvedInterface(zeros, _mcast.interface_index_for_address(family, address.packed))


# ---- membership ----------------------------------------------------------------------------------
class Membership:
    """One multicast group membership of a socket, with the rules of Java's ``MembershipKey``.

    ``source`` is None for an any-source membership.  ``block``/``unblock`` filter sources of an
    any-source membership (else :class:`MembershipStateError`).  ``drop`` leaves the group; the
    membership is then invalid for ever (``valid`` False, ``block``/``unblock`` raise
    :class:`InvalidMembershipError`; ``drop`` again does nothing, as in Java).  Closing the socket
    invalidates all its memberships.  Joining again with the same arguments returns the same
    object while it is valid.
    """

    __slots__ = ("_socket", "_group", "_interface", "_resolved", "_source", "_blocked", "_valid",
                 "__weakref__")

    def __init__(self, owner: "Socket", group: str, interface: Interface,
                 resolved: _ResolvedInterface, source: Optional[str]) -> None:
        self._socket = owner
        self._group = group
        self._interface = interface
        self._resolved = resolved
        self._source = source
        self._blocked: set[str] = set()
        self._valid = True

    @property
    def group(self) -> str:
        """The multicast group address."""
        return self._group

    @property
    def interface(self) -> Interface:
        """The interface as given when joining (None: the kernel chose)."""
        return self._interface

    @property
    def source(self) -> Optional[str]:
        """The source of a source-specific membership; None for any-source."""
        return self._source

    @property
    def valid(self) -> bool:
        """False once dropped or once the socket closed."""
        return self._valid

    @property
    def socket(self) -> "Socket":
        """The socket that joined (Java's ``channel()``)."""
        return self._socket

    @property
    def blocked_sources(self) -> frozenset[str]:
        """Sources currently blocked on this any-source membership."""
        return frozenset(self._blocked)

    def block(self, source: str) -> "Membership":
        """Stop receiving from *source* (IP_BLOCK_SOURCE / MCAST_BLOCK_SOURCE).  Blocking a
        source already blocked does nothing, as in Java."""
        self._socket._block(self, source, True)
        return self

    def unblock(self, source: str) -> "Membership":
        """Receive from a blocked *source* again; MembershipStateError if it is not blocked."""
        self._socket._block(self, source, False)
        return self

    def drop(self) -> None:
        """Leave the group; the membership becomes invalid.  No effect when already invalid."""
        self._socket._drop(self)

    def _check_valid(self) -> None:
        if not self._valid:
            raise InvalidMembershipError(f"{self!r} is no longer valid")

    def __repr__(self) -> str:
        state = "" if self._valid else " invalid"
        source = f" source={self._source}" if self._source else ""
        return (f"<udt.dgram.Membership group={self._group}{source} "
                f"interface={self._interface!r}{state}>")


# ---- shutdown: unref'd sockets must not keep the interpreter alive -------------------------------
_live_sockets: "weakref.WeakSet[Socket]" = weakref.WeakSet()


def _close_unreferenced() -> None:
    """At interpreter shutdown, before non-daemon threads are joined: close unref'd sockets."""
    for sock in list(_live_sockets):
        if not sock._referenced:
            try:
                sock.close()
            except Exception:  # shutting down: never block the exit on a failing close
                pass


if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_unreferenced)
else:  # pragma: no cover - every supported CPython has it
    import atexit
    atexit.register(_close_unreferenced)


_thread_buffers = threading.local()


def _receive_buffer() -> memoryview:
    """A per-thread buffer large enough for any datagram (pull-mode receives share nothing)."""
    buffer = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _thread_buffers.buffer = memoryview(bytearray(_MAX_DATAGRAM))
    return buffer



# ---- the socket ----------------------------------------------------------------------------------
class Socket:
    """A UDP socket: Node's ``dgram.Socket`` with snake_case names (see the module docstring).

    ``type`` is ``"udp4"`` or ``"udp6"``; *callback*, when given, is attached as a ``message``
    listener.  ``lookup(host, family) -> address`` resolves host names (default: getaddrinfo).
    ``recv_buffer_size``/``send_buffer_size`` are applied when the socket is bound.
    """

    def __init__(self, type: str = "udp4", callback: Optional[Listener] = None, *,
                 reuse_addr: bool = False, reuse_port: bool = False, ipv6_only: bool = False,
                 recv_buffer_size: Optional[int] = None, send_buffer_size: Optional[int] = None,
                 lookup: Optional[Lookup] = None) -> None:
        if type == "udp4":
            family = _socket.AF_INET
        elif type == "udp6":
            family = _socket.AF_INET6
        else:
            raise ValueError(f"type must be 'udp4' or 'udp6', not {type!r}")
        if ipv6_only and family != _socket.AF_INET6:
            raise ValueError("ipv6_only needs a 'udp6' socket")
        for name, size in (("recv_buffer_size", recv_buffer_size),
                           ("send_buffer_size", send_buffer_size)):
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
        self._closed = True                   # until the channel exists
        self._bound = False
        self._peer: Optional[tuple] = None
        self._memberships: dict[tuple, Membership] = {}
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {event: [] for event in EVENTS}
        self._queue: deque = deque()          # (callable, args) for the worker, in order
        self._worker: Optional[threading.Thread] = None
        self._worker_polling = False
        self._reader_failed = False           # poll() itself failed: stop feeding listeners
        self._work_ready = threading.Condition(self._lock)
        self._pending_sends = 0
        self._last_destination: Optional[tuple] = None           # (address, port) as given
        self._last_destination_resolved: Optional[tuple] = None  # ... with the address looked up
        self._family_text = _family_name(family)
        self._referenced = True
        self._async_waiter: Optional[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = None
        self._channel = Channel(family, reuse_addr=reuse_addr, reuse_port=reuse_port,
                                gso=False, gro=False)
        try:
            if family == _socket.AF_INET6:
                self._channel.setsockopt(_mcast.IPPROTO_IPV6, _mcast.IPV6_V6ONLY,
                                         int(bool(ipv6_only)))
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
                state = "bound=%s:%d" % self.address()[::2]
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
            return host                  # an IPv4 literal on 'udp6' becomes ::ffff:a.b.c.d
        resolved = self._lookup(host, self._family)
        if not isinstance(resolved, str):
            raise TypeError(f"lookup() must return an address string, not {resolved!r}")
        return resolved

    def bind(self, port: int = 0, address: Optional[str] = None,
             callback: Optional[Listener] = None, *, exclusive: bool = False,
             fd: Optional[int] = None) -> "Socket":
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

    def _after_bind(self, callback: Optional[Listener]) -> None:
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

    def close(self, callback: Optional[Listener] = None) -> None:
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
        self._channel.close()                   # also ends a worker's poll (EBADF)
        _live_sockets.discard(self)
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def __enter__(self) -> "Socket":
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

    def ref(self) -> "Socket":
        """Let this socket keep the interpreter alive while its worker feeds ``message``
        listeners (the default)."""
        self._referenced = True
        return self

    def unref(self) -> "Socket":
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

    def connect(self, port: int, address: Optional[str] = None,
                callback: Optional[Listener] = None) -> "Socket":
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
    def send(self, data: Union[BytesLike, Sequence[BytesLike]], port: Optional[int] = None,
             address: Optional[str] = None, callback: Optional[Listener] = None, *,
             offset: int = 0, length: Optional[int] = None) -> int:
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
                    raise AlreadyConnectedError(
                        "send() with a destination on a connected socket")
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
                    destination = self._last_destination_resolved    # the channel caches it
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

    def _finish_send(self, callback: Listener, error: Optional[BaseException], sent: int) -> None:
        with self._lock:
            self._pending_sends -= 1
        callback(error, sent)

    @staticmethod
    def _payload(data: Any, offset: int, length: Optional[int]) -> Any:
        """Validate *data* and apply offset/length (Node allows them on one buffer only)."""
        if data.__class__ is bytes and offset == 0 and length is None:
            return data                                  # the common case, checked cheaply
        if isinstance(data, str) or (isinstance(data, (list, tuple))
                                     and any(isinstance(part, str) for part in data)):
            raise TypeError("data must be bytes-like (encode str first)")
        if isinstance(data, (list, tuple)):
            if offset != 0 or length is not None:
                raise ValueError("offset/length apply to a single bytes-like, not a list")
            for part in data:
                memoryview(part)            # TypeError for anything that is not a buffer
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
        return view[offset:offset + length]

    # ---- receiving ----
    def _rinfo(self, size: int, source: tuple) -> RemoteInfo:
        return _new_rinfo(RemoteInfo, (source[0], self._family_text, source[1], size))

    def _check_pull(self) -> None:
        self._check_open()
        if not self._bound:
            raise NotBoundError("the socket is not bound: nothing can arrive")
        if self._listeners["message"]:
            raise RuntimeError("datagrams go to the 'message' listeners; remove them to pull")

    def recvfrom(self, timeout: Optional[float] = 1.0) -> tuple[bytes, RemoteInfo]:
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

    def __aiter__(self) -> "Socket":
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
    def setsockopt(self, level: int, option: int, value: Union[int, bytes]) -> None:
        """Set any socket option (escape hatch, as ``socket.setsockopt``)."""
        with self._lock:
            self._check_open()
            self._channel.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> Union[int, bytes]:
        """Read any socket option (as ``socket.getsockopt``)."""
        with self._lock:
            self._check_open()
            return self._channel.getsockopt(level, option, buflen)

    def _ip_option(self, v4_option: int, v6_option: int, value: Union[int, bytes]) -> None:
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
            value = _mcast.ip_mreqn(bytes(4), resolved.address, resolved.index)
            self.setsockopt(_mcast.IPPROTO_IP, _mcast.IP_MULTICAST_IF, value)
        else:
            self.setsockopt(_mcast.IPPROTO_IPV6, _mcast.IPV6_MULTICAST_IF, resolved.index)

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

    # ---- multicast ----
    def _group(self, group: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = _ip(group, "group")
        if address.version != (4 if self._family == _socket.AF_INET else 6):
            raise ValueError(f"group {group} is not an {_family_name(self._family)} address "
                             f"(mixed address families)")
        if not address.is_multicast:
            raise ValueError(f"group {group} is not a multicast address")
        return address

    def _source(self, source: Any, group: ipaddress.IPv4Address | ipaddress.IPv6Address
                ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = _ip(source, "source")
        if address.version != group.version:
            raise ValueError(f"source {source} and group {group} are of mixed address families")
        if address.is_unspecified:
            raise ValueError(f"source {source} is a wildcard address")
        if address.is_multicast:
            raise ValueError(f"source {source} is a multicast address")
        return address

    def _membership_key(self, group: Any, interface: Interface, source: Any):
        group_address = self._group(group)
        source_address = None if source is None else self._source(source, group_address)
        resolved = _resolve_interface(self._family, interface)
        return group_address, source_address, resolved

    def add_membership(self, group: str, interface: Interface = None) -> Membership:
        """Join *group* for every source on *interface* (None: the kernel's choice)."""
        return self._join(group, interface, None)

    def add_source_specific_membership(self, source: str, group: str,
                                       interface: Interface = None) -> Membership:
        """Join *group* for datagrams from *source* only (source-specific multicast)."""
        if source is None:
            raise TypeError("source must be an IP address string, not None")
        return self._join(group, interface, source)

    def drop_membership(self, group: str, interface: Interface = None) -> None:
        """Leave an any-source membership; OSError(EADDRNOTAVAIL) if there is none."""
        self._find(group, interface, None).drop()

    def drop_source_specific_membership(self, source: str, group: str,
                                        interface: Interface = None) -> None:
        """Leave a source-specific membership; OSError(EADDRNOTAVAIL) if there is none."""
        if source is None:
            raise TypeError("source must be an IP address string, not None")
        self._find(group, interface, source).drop()

    def memberships(self) -> list[Membership]:
        """The socket's valid memberships."""
        with self._lock:
            return list(self._memberships.values())

    def _find(self, group: Any, interface: Interface, source: Any) -> Membership:
        group_address, source_address, resolved = self._membership_key(group, interface, source)
        with self._lock:
            self._check_open()
            key = (group_address, resolved, source_address)
            membership = self._memberships.get(key)
        if membership is None:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"{os.strerror(errno.EADDRNOTAVAIL)}: no such membership "
                          f"(group {group}, source {source}, interface {interface!r})")
        return membership

    def _join(self, group: Any, interface: Interface, source: Any) -> Membership:
        group_address, source_address, resolved = self._membership_key(group, interface, source)
        with self._lock:
            self._check_open()
            key = (group_address, resolved, source_address)
            existing = self._memberships.get(key)
            if existing is not None:
                return existing
            for other_group, other_resolved, other_source in self._memberships:
                if other_group == group_address and other_resolved == resolved and (
                        (other_source is None) != (source_address is None)):
                    kind = "any-source" if other_source is None else "source-specific"
                    raise MembershipStateError(
                        f"the socket already has a {kind} membership of {group_address} "
                        f"on this interface")
            self._membership_call(True, group_address, resolved, source_address)
            membership = Membership(self, str(group_address), interface, resolved,
                                    None if source_address is None else str(source_address))
            self._memberships[key] = membership
            return membership

    def _drop(self, membership: Membership) -> None:
        with self._lock:
            if not membership._valid:
                return
            group_address = ipaddress.ip_address(membership._group)
            source_address = (None if membership._source is None
                              else ipaddress.ip_address(membership._source))
            self._membership_call(False, group_address, membership._resolved, source_address)
            membership._valid = False
            self._memberships.pop((group_address, membership._resolved, source_address), None)

    def _block(self, membership: Membership, source: Any, block: bool) -> None:
        with self._lock:
            membership._check_valid()
            if membership._source is not None:
                raise MembershipStateError(
                    "block/unblock apply to any-source memberships only")
            group_address = ipaddress.ip_address(membership._group)
            source_address = self._source(source, group_address)
            text = str(source_address)
            if block and text in membership._blocked:
                return
            if not block and text not in membership._blocked:
                raise MembershipStateError(f"source {text} is not blocked")
            self._filter_call(block, group_address, membership._resolved, source_address)
            if block:
                membership._blocked.add(text)
            else:
                membership._blocked.discard(text)

    def _membership_call(self, join: bool, group, resolved: _ResolvedInterface, source) -> None:
        """Issue the kernel option that joins or leaves (caller holds the lock)."""
        if self._family == _socket.AF_INET:
            level = _mcast.IPPROTO_IP
            if source is None:
                option = _mcast.IP_ADD_MEMBERSHIP if join else _mcast.IP_DROP_MEMBERSHIP
                value = _mcast.ip_mreqn(group.packed, resolved.address, resolved.index)
            elif resolved.index:
                # ip_mreq_source names the interface by address only: use the
                # protocol-independent request, which takes an index.
                option = _mcast.MCAST_JOIN_SOURCE_GROUP if join else _mcast.MCAST_LEAVE_SOURCE_GROUP
                value = _mcast.group_source_req(_socket.AF_INET, group.packed, source.packed,
                                                resolved.index)
            else:
                option = (_mcast.IP_ADD_SOURCE_MEMBERSHIP if join
                          else _mcast.IP_DROP_SOURCE_MEMBERSHIP)
                value = _mcast.ip_mreq_source(group.packed, resolved.address, source.packed)
        else:
            level = _mcast.IPPROTO_IPV6
            if source is None:
                option = _mcast.IPV6_JOIN_GROUP if join else _mcast.IPV6_LEAVE_GROUP
                value = _mcast.ipv6_mreq(group.packed, resolved.index)
            else:
                option = _mcast.MCAST_JOIN_SOURCE_GROUP if join else _mcast.MCAST_LEAVE_SOURCE_GROUP
                value = _mcast.group_source_req(_socket.AF_INET6, group.packed, source.packed,
                                                resolved.index)
        self._channel.setsockopt(level, option, value)

    def _filter_call(self, block: bool, group, resolved: _ResolvedInterface, source) -> None:
        """Issue the kernel option that blocks or unblocks a source (caller holds the lock)."""
        if self._family == _socket.AF_INET and not resolved.index:
            option = _mcast.IP_BLOCK_SOURCE if block else _mcast.IP_UNBLOCK_SOURCE
            self._channel.setsockopt(_mcast.IPPROTO_IP, option, _mcast.ip_mreq_source(
                group.packed, resolved.address, source.packed))
            return
        level = _mcast.IPPROTO_IP if self._family == _socket.AF_INET else _mcast.IPPROTO_IPV6
        option = _mcast.MCAST_BLOCK_SOURCE if block else _mcast.MCAST_UNBLOCK_SOURCE
        self._channel.setsockopt(level, option, _mcast.group_source_req(
            self._family, group.packed, source.packed, resolved.index))

    # ---- events ----
    @staticmethod
    def _check_event(event: str, listener: Any = None, need_listener: bool = True) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {sorted(EVENTS)}")
        if need_listener and not callable(listener):
            raise TypeError("listener must be callable")

    def on(self, event: str, listener: Listener) -> "Socket":
        """Call *listener* for every *event* (on the worker thread).  Signatures:
        ``message(data, rinfo)``, ``error(exception)``, ``listening()``, ``connect()``,
        ``close()``."""
        self._check_event(event, listener)
        with self._lock:
            self._listeners[event].append((listener, False))
            if event == "message":
                self._update_reading()
        return self

    add_listener = on

    def once(self, event: str, listener: Listener) -> "Socket":
        """Like :meth:`on`, for the next *event* only."""
        self._check_event(event, listener)
        with self._lock:
            self._listeners[event].append((listener, True))
            if event == "message":
                self._update_reading()
        return self

    def off(self, event: str, listener: Listener) -> "Socket":
        """Remove the most recently added registration of *listener* for *event*."""
        self._check_event(event, listener)
        with self._lock:
            entries = self._listeners[event]
            for index in range(len(entries) - 1, -1, -1):
                if entries[index][0] is listener or entries[index][0] == listener:
                    del entries[index]
                    break
            if event == "message":
                self._update_reading()
        return self

    remove_listener = off

    def remove_all_listeners(self, event: Optional[str] = None) -> "Socket":
        """Remove every listener of *event*, or of all events."""
        with self._lock:
            if event is None:
                for entries in self._listeners.values():
                    entries.clear()
            else:
                self._check_event(event, need_listener=False)
                self._listeners[event].clear()
            self._update_reading()
        return self

    def listeners(self, event: str) -> list[Listener]:
        self._check_event(event, need_listener=False)
        with self._lock:
            return [listener for listener, _ in self._listeners[event]]

    def listener_count(self, event: str) -> int:
        self._check_event(event, need_listener=False)
        with self._lock:
            return len(self._listeners[event])

    def _emit(self, event: str, *args: Any) -> None:
        """Queue *event* for the worker if anyone listens (caller may hold the lock)."""
        with self._lock:
            if self._listeners[event]:
                self._queue_call(self._dispatch, event, *args)

    def _queue_call(self, function: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._queue.append((function, args))
            self._wake_worker()

    def _update_reading(self) -> None:
        """Start or wake the worker so it starts or stops feeding ``message`` listeners."""
        with self._lock:
            if self._reading() or self._worker is not None:
                self._wake_worker()

    def _reading(self) -> bool:
        return (self._bound and not self._closed and not self._reader_failed
                and bool(self._listeners["message"]))

    def _wake_worker(self) -> None:
        """Caller holds the lock."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run_worker, daemon=False,
                                            name=f"udt-dgram-{self._type}")
            self._worker.start()
            return
        self._work_ready.notify()
        if self._worker_polling:
            try:
                self._channel.interrupt()
            except OSError:   # closed meanwhile: the poll ends with EBADF anyway
                pass

    def _dispatch(self, event: str, *args: Any) -> None:
        """Call the listeners of *event* (worker thread)."""
        with self._lock:
            entries = list(self._listeners[event])
            for entry in entries:
                if entry[1]:
                    try:
                        self._listeners[event].remove(entry)
                    except ValueError:
                        pass
        for listener, _ in entries:
            try:
                listener(*args)
            except Exception as error:   # a failing listener must not stop the delivery
                self._listener_failed(event, error)

    def _listener_failed(self, event: str, error: BaseException) -> None:
        with self._lock:
            handlers = [listener for listener, _ in self._listeners["error"]]
        if event != "error" and handlers:
            self._dispatch("error", error)
        else:
            _report_unhandled(error)

    def _run_worker(self) -> None:
        """Deliver queued events and callbacks; feed ``message`` listeners while any exist."""
        buffer = memoryview(bytearray(_MAX_DATAGRAM))
        while True:
            with self._lock:
                while True:
                    if self._queue:
                        function, args = self._queue.popleft()
                        break
                    if self._reading():
                        function = None
                        self._worker_polling = True
                        break
                    # Nothing to deliver and nobody to feed: stop; a later event restarts us.
                    self._worker = None
                    self._work_ready.notify_all()
                    return
            if function is not None:
                try:
                    function(*args)
                except Exception as error:   # send callbacks raising
                    self._listener_failed("send callback", error)
                continue
            try:
                ready = self._channel.poll(_POLLIN, None)
            except OSError as error:
                ready = 0
                if not self._closed:
                    # Not a datagram error but the wait itself: retrying would spin.
                    with self._lock:
                        self._reader_failed = True
                    self._emit("error", error)
            finally:
                with self._lock:
                    self._worker_polling = False
            if ready:
                self._read_burst(buffer)

    def _read_burst(self, buffer: memoryview) -> None:
        """Hand the datagrams waiting now (up to a burst) to the ``message`` listeners."""
        for _ in range(_READ_BURST):
            with self._lock:
                if not self._reading():
                    return
            try:
                size, source = self._channel.recvfrom_into(buffer, 0)
            except BlockingIOError:
                return
            except OSError as error:
                if not self._closed:
                    self._emit("error", error)
                return
            self._dispatch("message", buffer[:size].tobytes(), self._rinfo(size, source))


_new_rinfo = tuple.__new__      # RemoteInfo without the Python-level __new__ (per datagram)


def _resolve_future(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _report_unhandled(error: BaseException) -> None:
    """An error no listener took: report it as an uncaught thread exception would be."""
    threading.excepthook(threading.ExceptHookArgs(
        (type(error), error, error.__traceback__, threading.current_thread())))


def create_socket(type: str = "udp4", callback: Optional[Listener] = None, **options: Any
                  ) -> Socket:
    """Node's ``dgram.createSocket``: a :class:`Socket` of *type* ``"udp4"`` or ``"udp6"``,
    *callback* attached to ``message``; *options* as :class:`Socket` (``reuse_addr``,
    ``reuse_port``, ``ipv6_only``, ``recv_buffer_size``, ``send_buffer_size``, ``lookup``)."""
    return Socket(type, callback, **options)
