"""UDT sockets with Python's ``socket`` conventions.

``udt.socket`` behaves like :class:`socket.socket` where the two overlap (bind, listen, accept,
connect, send/recv, timeouts, shutdown, context manager, makefile) and adds UDT's powers: message
mode (``SOCK_DGRAM``) with ``sendmsg``/``recvmsg`` and time-to-live, ``sendfile``/``recvfile``
moving data in large blocks with the GIL released, rendezvous connections, every UDT4 option
(:mod:`udt.options`) and UDT4's ``perfmon`` statistics.

A udt socket has no descriptor of its own (many share one UDP socket, and a few worker threads
serve every port): ``fileno()`` returns a readiness eventfd, readable exactly while the socket is readable,
made on first use (``select``/``selectors``/``add_reader`` take it); ``udt.epoll`` waits on many
sockets (docs/readiness.md).

``close()`` drains queued data, then shuts the connection down.  The linger time
(``UDT_LINGER``, 3 s by default; UDT4 waits 180 s in all) bounds a *stall*: any ACK from the peer
that says something new is progress, so a live transfer is never cut short.  Giving up with
data unacknowledged, or closing a broken connection that had some, releases the socket and raises
(:class:`udt.UnacknowledgedDataError`, ``ConnectionResetError``; ``unacknowledged`` = bytes);
``flush()`` waits for every byte to be acknowledged.  Linger 0 aborts: data dropped, no error.
Whenever a close drops data the peer is told (an error signal before SHUTDOWN), so its reads end
with ``ConnectionResetError``, never a clean EOF; SHUTDOWN waits (≤ 200 ms) for the peer's reader
to catch up, because UDT4's blocking ``recvmsg`` loses messages when SHUTDOWN overtakes it.
"""

from __future__ import annotations

import atexit
import errno as _errno
import io
import os
import socket as _pysocket
import threading
import time
import warnings
import weakref
from typing import IO, Any, Literal, NoReturn, cast

import udt._mux as _mux
from udt._connection import RingLease
from udt._digest import Sha256

from . import _sockopt
from ._files import FileHandle, check_file_range
from ._rendezvous import rendezvous_failure_message
from .config import ConnectionConfiguration
from .errors import (
    BadSocketError,
    ConnectTimeoutError,
    ErrorCode,
    FileTransferError,
    InvalidParameterError,
    NotConnectedError,
    error_from_code,
)
from .options import OPTION_SPECS, Phase, SocketOption, SocketState, defaults, validate

__all__ = [
    "socket",
    "PerfMon",
    "AF_INET",
    "AF_INET6",
    "SOCK_STREAM",
    "SOCK_DGRAM",
    "SHUT_RD",
    "SHUT_WR",
    "SHUT_RDWR",
]

AF_INET = _pysocket.AF_INET
AF_INET6 = _pysocket.AF_INET6
SOCK_STREAM = _pysocket.SOCK_STREAM  # UDT_STREAM: a byte stream
SOCK_DGRAM = _pysocket.SOCK_DGRAM  # UDT_DGRAM: reliable messages with boundaries (message mode)
SHUT_RD = _pysocket.SHUT_RD
SHUT_WR = _pysocket.SHUT_WR
SHUT_RDWR = _pysocket.SHUT_RDWR

_Buffer = bytes | bytearray | memoryview  # what send() takes (any C-contiguous buffer works)
_File = str | bytes | os.PathLike[str] | IO[bytes]  # a path or a binary file object
# bytes per step of sendfile (all steps run in C without the GIL): small enough that a block is
# still in the L2 cache when it is copied the second time (pread, then into the send ring).
# Against 8 MiB, 1 GiB files on tmpfs, 9 interleaved runs: CPU per GB -3 % (3.10 vs 3.18 s/GB).
# recvfile writes from the receive ring's slots, 256 KiB per pwritev (udt/_connection.pyx).
_FILE_BLOCK = 256 << 10
_GLOBAL_DEFAULT_TIMEOUT = _pysocket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]

_live_sockets: weakref.WeakSet[socket] = weakref.WeakSet()


def _close_live_sockets() -> None:
    """atexit: close what the program left open, each bounded by its linger time, so queued data
    still drains and the interpreter never hangs (``udt._mux`` then stops what is left)."""
    for sock in list(_live_sockets):
        try:
            sock.close()
        except Exception:
            pass


atexit.register(_close_live_sockets)


class PerfMon(dict):
    """UDT4's TRACEINFO in snake_case (``pkt_sent_total``, ``ms_rtt`` …) as a dict whose keys are
    also attributes, plus udt's counters of invalid datagrams dropped (``invalid_*``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self):
        return list(self.keys()) + list(super().__dir__())


def _check_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"timeout must be a number or None, not {type(value).__name__}") from None
    if value != value or value < 0.0:
        raise ValueError("Timeout value out of range")
    return value


class socket:
    """A UDT socket: ``socket(family=AF_INET, type=SOCK_STREAM, proto=0)``."""

    def __init__(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> None:
        if family not in (AF_INET, AF_INET6):
            raise InvalidParameterError(
                ErrorCode.BAD_PARAMETER,
                f"family must be AF_INET or AF_INET6, got {family!r}",
                errno=_errno.EAFNOSUPPORT,
            )
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise InvalidParameterError(
                ErrorCode.BAD_PARAMETER,
                f"type must be SOCK_STREAM or SOCK_DGRAM, got {type!r}",
                errno=_errno.ESOCKTNOSUPPORT,
            )
        if proto not in (0, _pysocket.IPPROTO_UDP):
            raise InvalidParameterError(
                ErrorCode.BAD_PARAMETER, f"unsupported protocol {proto!r}", errno=_errno.EPROTONOSUPPORT
            )
        self._family = int(family)
        self._type = int(type)
        self._options: dict[SocketOption, Any] = defaults()
        default_timeout = _pysocket.getdefaulttimeout()
        self._send_timeout: float | None = default_timeout  # seconds; 0 = non-blocking
        self._recv_timeout: float | None = default_timeout
        self._state = SocketState.INIT
        # The compiled units have no stubs: these are Multiplexer, Listener and Connection or None.
        self._mux: Any = None
        self._listener: Any = None
        self._conn: Any = None
        self._lock = threading.RLock()  # serialises state changes; never held while waiting on data
        self._closed = False
        self._io_refs = 0
        self._read_shut = False
        self._local_used: tuple | None = None  # getsockname() of a connection, once learnt
        self._pinned = False  # our private port, connect()ed to the peer (see connect)
        self._connect_started = 0.0  # time.monotonic() of the connect in progress
        self._pollers: weakref.WeakSet = weakref.WeakSet()  # the udt.epoll sets watching it
        _live_sockets.add(self)

    @classmethod
    def _from_connection(cls, listener: socket, conn: _mux.Connection) -> socket:
        sock = cls(listener._family, listener._type)
        sock._options = dict(listener._options)  # UDT4: accepted sockets inherit the options
        sock._options[SocketOption.UDT_RENDEZVOUS] = False
        # Python: accepted sockets are blocking unless a default timeout is set.
        sock._send_timeout = sock._recv_timeout = _pysocket.getdefaulttimeout()
        sock._options[SocketOption.UDT_SNDSYN] = sock._options[SocketOption.UDT_RCVSYN] = True
        sock._mux = listener._mux
        sock._mux.retain()
        sock._conn = conn
        sock._state = SocketState.CONNECTED
        return sock

    # ---- properties -----------------------------------------------------------------------
    @property
    def family(self) -> _pysocket.AddressFamily:
        return _pysocket.AddressFamily(self._family)

    @property
    def type(self) -> _pysocket.SocketKind:
        return _pysocket.SocketKind(self._type)

    @property
    def proto(self) -> int:
        return 0

    @property
    def socket_id(self) -> int | None:
        """UDT's 32-bit socket ID of this socket (None before it is connected or listening)."""
        if self._conn is not None:
            return self._conn.socket_id
        return None

    def fileno(self) -> int:
        """A descriptor readable exactly while this socket is readable (data, EOF, error, a
        pending accept): an eventfd made on the first call, closed with the socket.  Only for
        waiting (select, selectors, add_reader); read and write through the socket."""
        fd = self._readiness_fd(False)
        assert fd is not None
        return fd

    def _readiness_fd(self, writable: bool) -> int | None:
        """The read (or write) eventfd; None for a listener's write side (never writable)."""
        with self._lock:
            self._check_open()
            if self._listener is not None:
                return None if writable else self._listener.readiness_fd()
            if self._conn is not None:
                return self._conn.readiness_fd(writable)
        raise OSError(_errno.ENOTCONN, "no readiness before connect() or listen()")

    def _readiness(self) -> int:
        """The EpollEvent bits of this socket now (0 once closed)."""
        listener, conn = self._listener, self._conn
        try:
            if listener is not None:
                return listener.readiness()
            return conn.readiness() if conn is not None else 0
        except OSError:
            return 0

    def _leave_pollers(self) -> None:
        for poller in list(self._pollers):
            poller._forget(self)

    def __repr__(self) -> str:
        parts = [f"state={self._state.name}", f"family={self.family.name}", f"type={self.type.name}"]
        if self._closed:
            return f"<udt.socket [closed] {' '.join(parts[1:])}>"
        try:
            parts.append(f"laddr={self.getsockname()}")
        except OSError:
            pass
        if self._conn is not None:
            try:
                parts.append(f"raddr={self._conn.peer_address}")
            except OSError:
                pass
            parts.append(f"id={self._conn.socket_id:#010x}")
        return f"<udt.socket {' '.join(parts)}>"

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            try:
                self._close(abort=True)
            except Exception:
                pass

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    # ---- helpers --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "Bad file descriptor: socket is closed")

    def _connected(self) -> _mux.Connection:
        self._check_open()
        conn = self._conn
        if conn is None or self._state not in (SocketState.CONNECTED, SocketState.BROKEN, SocketState.CONNECTING):
            raise NotConnectedError(ErrorCode.NO_CONNECTION, "socket is not connected")
        if self._state == SocketState.CONNECTING:
            self._finish_connect(self._send_timeout if self._send_timeout != 0 else 0.0)
        return conn

    def _resolve(self, address: Any, *, passive: bool = False) -> tuple:
        """A numeric address tuple of our family for *address* (host names resolved)."""
        if not isinstance(address, tuple) or len(address) not in ((2,) if self._family == AF_INET else (2, 3, 4)):
            want = "(host, port)" if self._family == AF_INET else "(host, port[, flowinfo, scope_id])"
            raise TypeError(f"{self.family.name} address must be a tuple {want}, got {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"port must be an int, got {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535.")
        if host is None or host == "":
            host = "0.0.0.0" if self._family == AF_INET else "::"
        if isinstance(host, (bytes, bytearray)):
            host = host.decode("idna")
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__}")
        if host == "<broadcast>":
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "UDT cannot use the broadcast address")
        flags = _pysocket.AI_PASSIVE if passive else 0
        infos = _pysocket.getaddrinfo(host, port, self._family, _pysocket.SOCK_DGRAM, 0, flags)
        sockaddr: tuple[Any, ...] = infos[0][4]
        if self._family == AF_INET6:
            flowinfo = address[2] if len(address) > 2 else 0
            scope_id = address[3] if len(address) > 3 else sockaddr[3]
            return (sockaddr[0].split("%")[0], sockaddr[1], flowinfo, scope_id)
        return (sockaddr[0], sockaddr[1])

    def _mux_options(self) -> dict:
        o = self._options
        return {
            "reuse_addr": o[SocketOption.UDT_REUSEADDR],
            "udp_sndbuf": o[SocketOption.UDP_SNDBUF],
            "udp_rcvbuf": o[SocketOption.UDP_RCVBUF],
        }

    def _engine_config(self) -> ConnectionConfiguration:
        return ConnectionConfiguration.from_options(self._options, message_mode=self._type == SOCK_DGRAM)

    def _send_wait(self) -> float | None:
        return self._send_timeout if self._options[SocketOption.UDT_SNDSYN] else 0.0

    def _recv_wait(self) -> float | None:
        return self._recv_timeout if self._options[SocketOption.UDT_RCVSYN] else 0.0

    # ---- addresses ------------------------------------------------------------------------
    def bind(self, address: tuple) -> None:
        """Bind to a local (host, port); sockets binding the same address share its UDP port
        when ``UDT_REUSEADDR`` is on (the default)."""
        with self._lock:
            self._check_open()
            if self._state != SocketState.INIT:
                raise error_from_code(ErrorCode.ALREADY_BOUND)
            local = self._resolve(address, passive=True)
            self._mux = _mux.Multiplexer.acquire(self._family, local, **self._mux_options())
            self._state = SocketState.OPENED

    def bind_socket(self, udp_socket: _pysocket.socket) -> None:
        """Bind to an existing UDP socket (UDT4's ``bind(UDPSOCKET)``), e.g. one that punched a
        NAT.  The udt socket takes ownership: *udp_socket* is detached and must not be used."""
        with self._lock:
            self._check_open()
            if self._state != SocketState.INIT:
                raise error_from_code(ErrorCode.ALREADY_BOUND)
            if not isinstance(udp_socket, _pysocket.socket):
                raise InvalidParameterError(
                    ErrorCode.BAD_PARAMETER, f"expected a socket.socket, got {type(udp_socket).__name__}"
                )
            if udp_socket.type != _pysocket.SOCK_DGRAM:
                raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "bind_socket needs a UDP socket")
            if udp_socket.family != self._family:
                raise InvalidParameterError(
                    ErrorCode.BAD_PARAMETER,
                    f"the UDP socket is {udp_socket.family.name}, this udt socket is {self.family.name}",
                )
            self._mux = _mux.Multiplexer.adopt(udp_socket, **self._mux_options())
            self._state = SocketState.OPENED

    def getsockname(self) -> tuple:
        """The local address; a connection on a wildcard port reports the address its packets
        leave from (the kernel's route to the peer, asked once through a connected UDP socket)."""
        self._check_open()
        if self._mux is None:
            return ("0.0.0.0", 0) if self._family == AF_INET else ("::", 0, 0, 0)
        conn = self._conn
        if conn is None or self._state not in (SocketState.CONNECTED, SocketState.BROKEN):
            return self._mux.local_address
        if self._local_used is None:
            self._local_used = _sockopt.route_source(self._family, self._mux.local_address, conn.peer_address)
        return self._local_used

    def getpeername(self) -> tuple:
        self._check_open()
        if self._conn is None or self._state not in (SocketState.CONNECTED, SocketState.BROKEN):
            raise NotConnectedError(ErrorCode.NO_CONNECTION, "Transport endpoint is not connected")
        return self._conn.peer_address

    # ---- server side ----------------------------------------------------------------------
    def listen(self, backlog: int = 128) -> None:
        """Accept connections (at most *backlog* waiting); one listener per port (else UDT 5011)."""
        with self._lock:
            self._check_open()
            if self._options[SocketOption.UDT_RENDEZVOUS]:
                raise error_from_code(ErrorCode.RENDEZVOUS_NO_LISTEN)
            if self._state == SocketState.LISTENING:
                if self._listener is not None:
                    self._listener.set_backlog(max(1, int(backlog)))
                return
            if self._state == SocketState.INIT:
                raise error_from_code(ErrorCode.UNBOUND, "bind() before listen()")
            if self._state != SocketState.OPENED:
                raise error_from_code(ErrorCode.ALREADY_CONNECTED)
            if isinstance(backlog, bool) or not isinstance(backlog, int):
                raise TypeError("backlog must be an int")
            self._listener = self._mux.listen(self._engine_config(), max(1, backlog))
            self._state = SocketState.LISTENING

    def accept(self) -> tuple[socket, tuple]:
        """Wait for a connection: returns ``(socket, address)``."""
        self._check_open()
        if self._options[SocketOption.UDT_RENDEZVOUS]:
            raise error_from_code(ErrorCode.RENDEZVOUS_NO_LISTEN)
        listener = self._listener
        if self._state != SocketState.LISTENING or listener is None:
            raise error_from_code(ErrorCode.NOT_LISTENING)
        conn = listener.accept(self._recv_wait())
        with self._lock:
            if self._closed:
                conn.close(0.0)
                raise BadSocketError(ErrorCode.BAD_SOCKET, "socket closed while accepting")
            sock = socket._from_connection(self, conn)
        return sock, conn.peer_address

    # ---- client side ----------------------------------------------------------------------
    def connect(self, address: tuple) -> None:
        """Connect to a listening peer, or with ``UDT_RENDEZVOUS`` meet a peer connecting back.
        Fails with ``ConnectionRefusedError`` when rejected and ``TimeoutError`` when nobody
        answers (3 s client/server, 30 s rendezvous, bounded by the socket timeout).  An unbound
        socket gets a private port pinned to the peer, so a closed port's ICMP refuses at once
        (a socket bound first, or ICMP filtered on the way, waits for the timeout)."""
        rendezvous = self._options[SocketOption.UDT_RENDEZVOUS]
        with self._lock:
            self._check_open()
            if self._state == SocketState.LISTENING:
                raise error_from_code(ErrorCode.ALREADY_CONNECTED, "a listening socket cannot connect")
            if self._state in (SocketState.CONNECTING, SocketState.CONNECTED, SocketState.BROKEN):
                if self._state == SocketState.CONNECTING and self._recv_wait() == 0:
                    raise BlockingIOError(_errno.EALREADY, "connection already in progress")
                raise error_from_code(ErrorCode.ALREADY_CONNECTED)
            peer = self._resolve(address)
            if self._state == SocketState.INIT:
                if rendezvous:
                    raise error_from_code(ErrorCode.RENDEZVOUS_NEEDS_BIND)
                wildcard = ("0.0.0.0", 0) if self._family == AF_INET else ("::", 0, 0, 0)
                private = {**self._mux_options(), "reuse_addr": False}  # one peer: pinned to it
                self._mux = _mux.Multiplexer.acquire(self._family, wildcard, **private)
                self._pinned = True
                self._state = SocketState.OPENED
            if self._pinned:  # (again after a failed attempt: the next peer may differ)
                self._mux.pin_peer(peer)  # a closed port's ICMP now refuses the connect at once
            connect_ms = self._options[SocketOption.UDT_CONNTIMEO] * (10 if rendezvous else 1)
            self._conn = self._mux.connect(self._engine_config(), peer, rendezvous, connect_ms)
            self._connect_started = time.monotonic()
            self._state = SocketState.CONNECTING
        wait = self._recv_wait()
        if wait == 0:
            raise BlockingIOError(_errno.EINPROGRESS, "Operation now in progress")
        self._finish_connect(wait)

    def _finish_connect(self, timeout: float | None) -> None:
        conn = self._conn
        try:
            conn.wait_connected(timeout)
        except (BlockingIOError, InterruptedError, KeyboardInterrupt):
            raise
        except TimeoutError as exc:
            rendezvous_failed = self._rendezvous_failure(conn)
            if self._state == SocketState.CONNECTING and not isinstance(exc, ConnectTimeoutError):
                # the user's timeout ran out first: abandon the attempt, as socket.connect does
                self._abandon_connect()
                raise ConnectTimeoutError(ErrorCode.NO_SERVER, rendezvous_failed or "timed out") from None
            self._abandon_connect()
            if rendezvous_failed:
                raise ConnectTimeoutError(ErrorCode.NO_SERVER, rendezvous_failed) from None
            raise
        except OSError:
            self._abandon_connect()
            raise
        with self._lock:
            if self._state == SocketState.CONNECTING:
                self._state = SocketState.CONNECTED

    def _rendezvous_failure(self, conn: Any) -> str | None:
        """What a rendezvous that timed out tried (None for a client connect)."""
        if not self._options[SocketOption.UDT_RENDEZVOUS]:
            return None
        return rendezvous_failure_message(
            self._mux.local_address,
            conn.peer_address,
            conn.handshakes_sent,
            time.monotonic() - self._connect_started,
            conn.peer_handshake_seen,
        )

    def _abandon_connect(self) -> None:
        self._leave_pollers()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close(0.0)
            if self._state == SocketState.CONNECTING:
                self._state = SocketState.OPENED

    def connect_ex(self, address: tuple) -> int:
        """Like :meth:`connect` but returns an errno (0 on success) instead of raising."""
        try:
            self.connect(address)
        except BlockingIOError as exc:
            return exc.errno or _errno.EINPROGRESS
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    # ---- timeouts -------------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        """None: block forever; 0: non-blocking; > 0: seconds (sets UDT_SNDTIMEO/RCVTIMEO too)."""
        value = _check_timeout(value)
        self._send_timeout = self._recv_timeout = value
        blocking = value != 0.0
        self._options[SocketOption.UDT_SNDSYN] = self._options[SocketOption.UDT_RCVSYN] = blocking
        ms = -1 if value is None or value == 0.0 else max(1, round(value * 1000))
        self._options[SocketOption.UDT_SNDTIMEO] = self._options[SocketOption.UDT_RCVTIMEO] = ms

    def gettimeout(self) -> float | None:
        return self._recv_wait()

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._recv_wait() != 0.0

    # ---- options --------------------------------------------------------------------------
    def setsockopt(self, *args: Any) -> None:
        """``setsockopt(UDT_option, value)``, or ``setsockopt(level, option, value)`` as for
        :mod:`socket` (level ``udt.SOL_UDT``, or SOL_SOCKET's mapped options; :mod:`udt._sockopt`).
        Units: protocol.md §8 and :mod:`udt.options`."""
        opt, value = _sockopt.set_arguments(args)
        self._check_open()
        spec = OPTION_SPECS[opt]
        canonical = validate(opt, value)
        with self._lock:
            state = self._state
            if spec.phase is Phase.BEFORE_BIND and state != SocketState.INIT:
                raise error_from_code(ErrorCode.ALREADY_BOUND, f"{opt.name} must be set before bind()")
            if spec.phase is Phase.BEFORE_CONNECT and state not in (SocketState.INIT, SocketState.OPENED):
                code = ErrorCode.ALREADY_CONNECTED if state != SocketState.LISTENING else ErrorCode.INVALID_OPERATION
                raise error_from_code(code, f"{opt.name} must be set before connect()/listen()")
            if opt == SocketOption.UDT_RCVBUF:
                mss = self._options[SocketOption.UDT_MSS]
                limit = self._options[SocketOption.UDT_FC] * (mss - 28 - 16)
                if canonical > limit:  # protocol.md §8: RCVBUF ≤ FC packets
                    canonical = limit
            self._options[opt] = canonical
            if opt == SocketOption.UDT_MSS:  # a fixed MSS: no discovery (UDT_PMTUD may turn it back on)
                self._options[SocketOption.UDT_PMTUD] = False
            if opt == SocketOption.UDT_SNDTIMEO:
                self._send_timeout = None if canonical < 0 else canonical / 1000.0
            elif opt == SocketOption.UDT_RCVTIMEO:
                self._recv_timeout = None if canonical < 0 else canonical / 1000.0
            elif opt == SocketOption.UDT_MAXBW and self._conn is not None:
                self._conn.set_max_bandwidth(canonical)
            elif opt == SocketOption.UDT_RENDEZVOUS and canonical and state == SocketState.LISTENING:
                raise error_from_code(ErrorCode.RENDEZVOUS_NO_LISTEN)

    def getsockopt(self, *args: Any) -> Any:
        """``getsockopt(UDT_option)`` or ``getsockopt(level, option[, buflen])`` (see setsockopt);
        read-only options report live state (UDT_STATE, UDT_EVENT, UDT_SNDDATA/RCVDATA in bytes)."""
        level, opt, buflen = _sockopt.get_arguments(args)
        value = self._getsockopt(opt)
        return value if level is None else _sockopt.from_udt_value(level, opt, value, buflen)

    def _getsockopt(self, opt: SocketOption) -> Any:
        if opt == SocketOption.UDT_STATE:
            return self._live_state()
        self._check_open()
        conn = self._conn
        if opt == SocketOption.UDT_EVENT:
            if self._listener is not None:
                return self._listener.events()
            return conn.events() if conn is not None else 0
        if opt == SocketOption.UDT_SNDDATA:
            return conn.send_buffered() if conn is not None else 0
        if opt == SocketOption.UDT_RCVDATA:
            return conn.recv_buffered() if conn is not None else 0
        if opt == SocketOption.UDT_MSS and conn is not None and self._state == SocketState.CONNECTED:
            return conn.mss  # the negotiated value
        if opt in (SocketOption.UDP_SNDBUF, SocketOption.UDP_RCVBUF) and self._mux is not None:
            return self._mux.udp_buffer_size(opt == SocketOption.UDP_SNDBUF)
        return self._options[opt]

    def _live_state(self) -> SocketState:
        if self._closed:
            return SocketState.CLOSED
        if self._conn is not None and self._state in (SocketState.CONNECTED, SocketState.CONNECTING):
            return SocketState(self._conn.state)
        return self._state

    # ---- stream data ----------------------------------------------------------------------
    def send(self, data: _Buffer, flags: int = 0) -> int:
        """Queue as much of *data* as the send buffer takes (waiting for some room while it is
        full); returns the bytes taken.  On a ``SOCK_DGRAM`` socket: ``sendmsg(data)``."""
        if flags:
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "send flags are not supported")
        if self._type == SOCK_DGRAM:
            return self.sendmsg(data)
        return self._connected().send(data, self._send_wait(), False)

    def sendall(self, data: _Buffer, flags: int = 0) -> None:
        """Queue all of *data*; the timeout bounds the whole call (as in Python's socket)."""
        if flags:
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "send flags are not supported")
        if self._type == SOCK_DGRAM:
            self.sendmsg(data)
            return None
        self._connected().send(data, self._send_wait(), True)
        return None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to *bufsize* bytes; ``b""`` at orderly end of stream.  ``SOCK_DGRAM``: one message."""
        if flags:
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "recv flags are not supported")
        if isinstance(bufsize, bool) or not isinstance(bufsize, int):
            raise TypeError("bufsize must be an int")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        buffer = bytearray(bufsize)
        n = self.recv_into(buffer, bufsize)
        del buffer[n:]
        return bytes(buffer)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """Receive into *buffer* (at most *nbytes* bytes when given); returns the count, 0 at EOF."""
        if flags:
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, "recv flags are not supported")
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes:
            if nbytes > len(view):
                raise ValueError("buffer too small for requested bytes")
            view = view[:nbytes]
        conn = self._connected()
        if self._read_shut:
            return 0
        if self._type == SOCK_DGRAM:
            return conn.recvmsg_into(view, self._recv_wait())
        return conn.recv_into(view, self._recv_wait())

    # ---- messages -------------------------------------------------------------------------
    def sendmsg(self, data: _Buffer, ttl: float | None = None, inorder: bool = True) -> int:
        """Send *data* as one message (``SOCK_DGRAM`` only).  *ttl* seconds: drop it if not
        delivered in time (None: UDT_MSGTTL, default forever); *inorder*: deliver in order."""
        if self._type != SOCK_DGRAM:
            raise error_from_code(ErrorCode.NOT_MESSAGE_MODE)
        if ttl is None:
            ttl_ms = self._options[SocketOption.UDT_MSGTTL]
        else:
            ttl_ms = max(1, round(cast(float, _check_timeout(ttl)) * 1000))
        view = memoryview(data).cast("B")
        limit = self._options[SocketOption.UDT_MAXMSG]
        if limit > 0 and len(view) > limit:
            raise error_from_code(
                ErrorCode.MESSAGE_TOO_LARGE, f"message of {len(view)} bytes exceeds UDT_MAXMSG = {limit}"
            )
        return self._connected().sendmsg(view, ttl_ms, bool(inorder), self._send_wait())

    def recvmsg(self, bufsize: int) -> bytes:
        """The next whole message, truncated to *bufsize* bytes (``SOCK_DGRAM`` only); ``b""``
        once the peer has closed."""
        if self._type != SOCK_DGRAM:
            raise error_from_code(ErrorCode.NOT_MESSAGE_MODE)
        return self.recv(bufsize)

    # ---- files ----------------------------------------------------------------------------
    def sendfile(self, file: _File, offset: int = 0, count: int | None = None) -> int:
        """Send *count* bytes (None: to the end) of *file* (a path or a binary file object)
        starting at *offset*, in large blocks with the GIL released; returns the bytes sent and,
        for a file object, leaves its position just after them (like ``socket.sendfile``)."""
        if self._type != SOCK_STREAM:
            raise error_from_code(ErrorCode.NOT_STREAM_MODE)
        offset, count = check_file_range(offset, count)
        conn = self._connected()
        with FileHandle(file, writing=False) as handle:
            size = os.fstat(handle.fd).st_size
            if offset > size:
                raise FileTransferError(
                    ErrorCode.FILE_READ_OFFSET, f"offset {offset} is beyond the end of the file ({size} bytes)"
                )
            todo = size - offset if count is None else count
            if count is not None and offset + count > size:
                raise FileTransferError(
                    ErrorCode.FILE_READ,
                    f"count {count} from offset {offset} runs past the end of the file ({size} bytes)",
                )
            sent = conn.sendfile(handle.fd, offset, todo, self._send_wait(), _FILE_BLOCK)
            handle.advance(offset + sent)
        return sent

    def recvfile(self, file: _File, offset: int = 0, count: int | None = None) -> int:
        """Receive *count* bytes (None: until the peer closes) into *file* (a path, created if
        needed and not truncated, or a binary file object) at *offset*; returns the bytes written.
        Raises ``ConnectionResetError`` if the stream ends before *count* bytes."""
        if self._type != SOCK_STREAM:
            raise error_from_code(ErrorCode.NOT_STREAM_MODE)
        offset, count = check_file_range(offset, count)
        conn = self._connected()
        with FileHandle(file, writing=True) as handle:
            received = conn.recvfile(handle.fd, offset, -1 if count is None else count, self._recv_wait())
            handle.advance(offset + received)
        if count is not None and received < count:
            raise error_from_code(ErrorCode.CONNECTION_BROKEN, f"stream ended after {received} of {count} bytes")
        return received

    def _recvfile_into(self, fd: int, offset: int, count: int, digest: Sha256 | None = None) -> int:
        """Receive up to *count* bytes into the file descriptor *fd* at *offset*, written
        straight from the receive ring (no copy of ours, GIL released) and fed to *digest* (a
        ``udt._digest.Sha256``) from the same bytes; returns the bytes written, fewer than
        *count* only at end of stream.  An error raised after some bytes were written (the
        connection broke, the file could not be written) carries their count as
        ``bytes_written``.  ``udt-recv``'s file path; the fd's position does not move."""
        if self._type != SOCK_STREAM:
            raise error_from_code(ErrorCode.NOT_STREAM_MODE)
        offset, _ = check_file_range(offset, count)
        conn = self._connected()
        if self._read_shut or not count:
            return 0
        return conn.recvfile(fd, offset, count, self._recv_wait(), digest)

    def _recvfile_lend(self, fd: int, offset: int, count: int) -> RingLease | None:
        """Like ``_recvfile_into`` for at most 1 MiB, but the bytes written stay in the receive
        ring, lent: a ``RingLease`` whose ``feed(digest)`` hashes them from there (GIL released)
        and whose ``release()`` gives them back, in the order they were lent and from any
        thread, so that hashing runs beside receiving (``udt-recv``'s hashing thread); None at
        end of stream.  It waits for min(*count*, 256 KiB) bytes (less only at end of stream or
        when half the receive buffer is held), not for each few datagrams a paced peer sends.
        Other reads of this socket are refused until every lease is released.  A file error is
        raised only when nothing could be written."""
        if self._type != SOCK_STREAM:
            raise error_from_code(ErrorCode.NOT_STREAM_MODE)
        offset, _ = check_file_range(offset, count)
        conn = self._connected()
        if self._read_shut or not count:
            return None
        return conn.recvfile_lend(fd, offset, count, self._recv_wait())

    # ---- statistics -----------------------------------------------------------------------
    def perfmon(self, clear: bool = False) -> PerfMon:
        """UDT4's performance counters (TRACEINFO) in snake_case; *clear* restarts the interval."""
        self._check_open()
        if self._conn is None:
            raise NotConnectedError(ErrorCode.NO_CONNECTION, "perfmon needs a connected socket")
        return PerfMon(self._conn.perfmon(bool(clear)))

    def listener_stats(self) -> dict[str, int]:
        """A listening socket's refusals that never reach accept() (protocol.md §12): offered
        encryption without our passphrase, none offered to ours, a wrong passphrase."""
        self._check_open()
        if self._listener is None:
            raise error_from_code(ErrorCode.NOT_LISTENING, "listener_stats needs a listening socket")
        return dict(self._listener.crypto_stats())

    # ---- ending ---------------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        """SHUT_WR: send what is queued, then tell the peer (it reads EOF).  Between two udt peers
        (negotiated in the handshake) that is a half-close: the peer can still send and we still
        receive; a UDT4/SRT peer gets a full close.  Sending afterwards raises BrokenPipeError.
        SHUT_RD: further recv returns EOF."""
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise InvalidParameterError(ErrorCode.BAD_PARAMETER, f"invalid shutdown mode {how!r}")
        conn = self._connected()
        if how in (SHUT_RD, SHUT_RDWR):
            self._read_shut = True
            conn.shutdown_read()
        if how in (SHUT_WR, SHUT_RDWR):
            conn.shutdown_write(self._linger_seconds())

    def _half_close_negotiated(self) -> bool:
        """Does shutdown(SHUT_WR) leave the peer able to send (both ends udt, protocol.md §11)?"""
        return bool(self._connected().half_close)

    def flush(self, timeout: float | None = None) -> None:
        """Block (GIL released) until the peer acknowledged every byte sent (None: no limit).
        Raises ``TimeoutError`` or the broken-connection error, ``unacknowledged`` = bytes."""
        self._connected().flush(_check_timeout(timeout))

    def _linger_seconds(self) -> float:
        on, seconds = self._options[SocketOption.UDT_LINGER]
        return float(seconds) if on else 0.0

    def close(self) -> None:
        """Drain queued data (linger: the longest stall), shut down, free the port; raise if
        data stayed unacknowledged (see the module docstring)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._io_refs > 0:  # makefile() streams still open: close when the last one does
                self._deferred_close = True
                return
        self._real_close(abort=False)

    def _close(self, abort: bool) -> None:
        with self._lock:
            if getattr(self, "_really_closed", False):
                return
            self._closed = True
        self._real_close(abort)

    def _real_close(self, abort: bool) -> None:
        self._leave_pollers()
        with self._lock:
            if getattr(self, "_really_closed", False):
                return
            self._really_closed = True
            conn, self._conn = self._conn, None
            listener, self._listener = self._listener, None
            mux, self._mux = self._mux, None
            self._state = SocketState.CLOSED
        try:
            if listener is not None:
                listener.close()
            if conn is not None:
                conn.close(0.0 if abort else self._linger_seconds())
        finally:
            if mux is not None:
                mux.release()

    def detach(self) -> NoReturn:
        raise OSError(_errno.EOPNOTSUPP, "udt sockets have no file descriptor to detach")

    # ---- file objects ---------------------------------------------------------------------
    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:  # text or binary by *mode*, as socket.makefile's overloads say
        """A file object reading/writing the stream (as :meth:`socket.socket.makefile`)."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        raw_mode = cast(Literal["r", "w", "rw"], ("r" if reading else "") + ("w" if writing else ""))
        raw = _pysocket.SocketIO(cast(_pysocket.socket, self), raw_mode)  # duck-typed: recv_into, send
        self._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: io.BufferedIOBase
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(cast(Any, buffer), io.text_encoding(encoding), errors, newline)
        text.mode = mode  # type: ignore[misc]  # as socket.socket.makefile does
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0 and getattr(self, "_deferred_close", False):
            self._real_close(abort=False)
