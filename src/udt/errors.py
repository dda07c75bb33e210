"""Exceptions raised by udt sockets.

Every failure is an :class:`OSError` subclass, chosen the way Python's ``socket`` module would
choose it (so ``except ConnectionRefusedError`` or ``except TimeoutError`` just work), and carries
UDT4's numeric error code (``major * 1000 + minor``, protocol.md §8) in ``udt_code`` so that code written
against UDT4's error numbers can still tell failures apart.  Bad arguments additionally subclass
:class:`ValueError`.
"""

from __future__ import annotations

import errno as _errno
from enum import IntEnum

__all__ = [
    "ErrorCode",
    "UDTError",
    "ConnectionSetupError",
    "ConnectTimeoutError",
    "ConnectionRejectedError",
    "SecurityCheckError",
    "ConnectionBrokenError",
    "BrokenPipeUDTError",
    "NotConnectedError",
    "ResourceError",
    "FileTransferError",
    "InvalidOperationError",
    "InvalidParameterError",
    "BadSocketError",
    "PortHasListenerError",
    "MessageTooLargeError",
    "WouldBlockError",
    "OperationTimeoutError",
    "PeerError",
    "UnacknowledgedDataError",
    "error_from_code",
    "unacknowledged_error",
]


class ErrorCode(IntEnum):
    """UDT4's error numbers (``CUDTException`` major·1000 + minor, protocol.md §8).

    The engine's C enum in ``udt/_core.pxd`` names each one ``ERR_`` + this name (with UDT4's
    own constant beside it); tests/test_errors.py keeps the two tables equal.
    """

    SUCCESS = 0
    CONNECTION_SETUP = 1000
    NO_SERVER = 1001  # connect timed out
    REJECTED = 1002
    SOCKET_FAILURE = 1003  # the UDP socket underneath failed
    SECURITY_FAILURE = 1004  # handshake answer did not match the request
    CONNECTION_FAILURE = 2000
    CONNECTION_BROKEN = 2001
    NO_CONNECTION = 2002
    RESOURCES = 3000
    THREAD_FAILURE = 3001
    NO_MEMORY = 3002
    FILE = 4000
    FILE_READ_OFFSET = 4001
    FILE_READ = 4002
    FILE_WRITE_OFFSET = 4003
    FILE_WRITE = 4004
    INVALID_OPERATION = 5000
    ALREADY_BOUND = 5001
    ALREADY_CONNECTED = 5002
    BAD_PARAMETER = 5003
    BAD_SOCKET = 5004
    UNBOUND = 5005
    NOT_LISTENING = 5006
    RENDEZVOUS_NO_LISTEN = 5007
    RENDEZVOUS_NEEDS_BIND = 5008
    NOT_STREAM_MODE = 5009
    NOT_MESSAGE_MODE = 5010
    PORT_HAS_LISTENER = 5011
    MESSAGE_TOO_LARGE = 5012
    BAD_POLL_ID = 5013
    WOULD_BLOCK = 6000
    NO_SEND_BUFFER = 6001
    NO_DATA = 6002
    TIMED_OUT = 6003
    PEER_ERROR = 7000


class UDTError(OSError):
    """Base class of every udt error: an ``OSError`` whose ``udt_code`` is UDT4's error number."""

    default_code: int = ErrorCode.INVALID_OPERATION
    default_errno: int = _errno.EIO
    unacknowledged: int | None = None  # bytes the peer never acknowledged, when data was lost

    def __init__(self, udt_code: int | None = None, message: str | None = None, *, errno: int | None = None) -> None:
        code = self.default_code if udt_code is None else int(udt_code)
        err = self.default_errno if errno is None else errno
        super().__init__(err, message if message is not None else _DEFAULT_MESSAGES.get(code, "UDT error"))
        self.udt_code = code

    def __reduce__(self):  # keep the code when pickled (e.g. across multiprocessing)
        return (_rebuild, (type(self), self.udt_code, self.strerror, self.errno), self.__dict__)

    def __str__(self) -> str:
        return f"[UDT {self.udt_code}] {self.strerror}"


def _rebuild(cls, code, message, err):
    return cls(code, message, errno=err)


class ConnectionSetupError(UDTError):
    """Connection set-up failed (UDT 1000 family)."""

    default_code = ErrorCode.CONNECTION_SETUP
    default_errno = _errno.ECONNABORTED


class ConnectTimeoutError(ConnectionSetupError, TimeoutError):
    """No answer to the handshake within the connect timeout (UDT 1001)."""

    default_code = ErrorCode.NO_SERVER
    default_errno = _errno.ETIMEDOUT


class ConnectionRejectedError(ConnectionSetupError, ConnectionRefusedError):
    """The peer rejected the handshake (UDT 1002: version/type mismatch, full backlog)."""

    default_code = ErrorCode.REJECTED
    default_errno = _errno.ECONNREFUSED


class SecurityCheckError(ConnectionSetupError, ConnectionAbortedError):
    """The handshake answer did not match our request (UDT 1004)."""

    default_code = ErrorCode.SECURITY_FAILURE
    default_errno = _errno.ECONNABORTED


class ConnectionBrokenError(UDTError, ConnectionResetError):
    """The peer went silent past the broken-link timeout or reset the connection (UDT 2001)."""

    default_code = ErrorCode.CONNECTION_BROKEN
    default_errno = _errno.ECONNRESET


class BrokenPipeUDTError(UDTError, BrokenPipeError):
    """Sending on a connection that is broken or whose sending side was shut down (UDT 2001)."""

    default_code = ErrorCode.CONNECTION_BROKEN
    default_errno = _errno.EPIPE


class NotConnectedError(UDTError):
    """The operation needs a connection and there is none (UDT 2002)."""

    default_code = ErrorCode.NO_CONNECTION
    default_errno = _errno.ENOTCONN


class ResourceError(UDTError):
    """Out of threads or memory (UDT 3000 family)."""

    default_code = ErrorCode.NO_MEMORY
    default_errno = _errno.ENOMEM


class FileTransferError(UDTError):
    """``sendfile``/``recvfile`` failed on the local file or the peer signalled a file error (4000)."""

    default_code = ErrorCode.FILE
    default_errno = _errno.EIO


class InvalidOperationError(UDTError):
    """The call is not valid in the socket's current state (UDT 5000 family)."""

    default_code = ErrorCode.INVALID_OPERATION
    default_errno = _errno.EINVAL


class InvalidParameterError(InvalidOperationError, ValueError):
    """A bad argument (UDT 5003); also a ``ValueError``."""

    default_code = ErrorCode.BAD_PARAMETER
    default_errno = _errno.EINVAL


class BadSocketError(InvalidOperationError):
    """The socket is closed (UDT 5004); errno EBADF like a closed Python socket."""

    default_code = ErrorCode.BAD_SOCKET
    default_errno = _errno.EBADF


class PortHasListenerError(InvalidOperationError):
    """A second listener on a port whose multiplexer already has one (UDT 5011)."""

    default_code = ErrorCode.PORT_HAS_LISTENER
    default_errno = _errno.EADDRINUSE


class MessageTooLargeError(InvalidOperationError):
    """A message larger than the send buffer can ever hold (UDT 5012)."""

    default_code = ErrorCode.MESSAGE_TOO_LARGE
    default_errno = _errno.EMSGSIZE


class WouldBlockError(UDTError, BlockingIOError):
    """A non-blocking call could not proceed at once (UDT 6001 no buffer space, 6002 no data)."""

    default_code = ErrorCode.WOULD_BLOCK
    default_errno = _errno.EAGAIN


class OperationTimeoutError(UDTError, TimeoutError):
    """A blocking send/recv/accept ran past the socket's timeout (UDT 6003)."""

    default_code = ErrorCode.TIMED_OUT
    default_errno = _errno.ETIMEDOUT


class PeerError(UDTError, ConnectionAbortedError):
    """The peer sent an error signal (UDT 7000; 4000 when it was a file error on its side)."""

    default_code = ErrorCode.PEER_ERROR
    default_errno = _errno.ECONNABORTED


class UnacknowledgedDataError(UDTError):
    """close() gave up with data the peer never acknowledged: the linger time passed with no ACK
    or NAK from it.  errno EWOULDBLOCK, as BSD's close() under ``SO_LINGER``; ``unacknowledged``
    is the byte count.  The socket is released all the same."""

    default_code = ErrorCode.WOULD_BLOCK
    default_errno = _errno.EWOULDBLOCK


_UNACKNOWLEDGED: dict[str, tuple[type[UDTError], int, str]] = {
    "linger": (UnacknowledgedDataError, ErrorCode.WOULD_BLOCK, "close gave up after the linger time without progress"),
    "broken": (ConnectionBrokenError, ErrorCode.CONNECTION_BROKEN, "connection broken"),
    "send": (BrokenPipeUDTError, ErrorCode.CONNECTION_BROKEN, "connection broken"),
    "timeout": (OperationTimeoutError, ErrorCode.TIMED_OUT, "flush timed out"),
}


def unacknowledged_error(count: int, cause: str) -> UDTError:
    """The error for data the peer did not acknowledge (*count* bytes), by *cause*: ``linger``
    (close gave up), ``broken`` (the connection ended), ``send`` (it ended under a send), or
    ``timeout`` (flush ran out of time).  Its ``unacknowledged`` attribute holds the count."""
    cls, code, what = _UNACKNOWLEDGED[cause]
    error = cls(code, f"{what}: {count} bytes sent were not acknowledged by the peer")
    error.unacknowledged = count
    return error


_DEFAULT_MESSAGES: dict[int, str] = {
    ErrorCode.CONNECTION_SETUP: "connection setup failure",
    ErrorCode.NO_SERVER: "connection timed out: no answer from the peer",
    ErrorCode.REJECTED: "connection rejected by the peer",
    ErrorCode.SOCKET_FAILURE: "the UDP socket failed",
    ErrorCode.SECURITY_FAILURE: "handshake security check failed",
    ErrorCode.CONNECTION_FAILURE: "connection failure",
    ErrorCode.CONNECTION_BROKEN: "connection broken",
    ErrorCode.NO_CONNECTION: "socket is not connected",
    ErrorCode.RESOURCES: "system resource failure",
    ErrorCode.THREAD_FAILURE: "cannot start a thread",
    ErrorCode.NO_MEMORY: "out of memory",
    ErrorCode.FILE: "file transfer error",
    ErrorCode.FILE_READ_OFFSET: "bad offset for reading the file",
    ErrorCode.FILE_READ: "cannot read the file",
    ErrorCode.FILE_WRITE_OFFSET: "bad offset for writing the file",
    ErrorCode.FILE_WRITE: "cannot write the file",
    ErrorCode.INVALID_OPERATION: "invalid operation",
    ErrorCode.ALREADY_BOUND: "socket is already bound",
    ErrorCode.ALREADY_CONNECTED: "socket is already connected",
    ErrorCode.BAD_PARAMETER: "invalid argument",
    ErrorCode.BAD_SOCKET: "socket is closed",
    ErrorCode.UNBOUND: "socket is not bound",
    ErrorCode.NOT_LISTENING: "socket is not listening",
    ErrorCode.RENDEZVOUS_NO_LISTEN: "a rendezvous socket cannot listen or accept",
    ErrorCode.RENDEZVOUS_NEEDS_BIND: "a rendezvous connect needs a bound socket",
    ErrorCode.NOT_STREAM_MODE: "operation needs a SOCK_STREAM socket",
    ErrorCode.NOT_MESSAGE_MODE: "operation needs a SOCK_DGRAM (message mode) socket",
    ErrorCode.PORT_HAS_LISTENER: "another udt socket already listens on this port",
    ErrorCode.MESSAGE_TOO_LARGE: "message too large for the send buffer",
    ErrorCode.BAD_POLL_ID: "invalid poll id",
    ErrorCode.WOULD_BLOCK: "operation would block",
    ErrorCode.NO_SEND_BUFFER: "no send buffer space: operation would block",
    ErrorCode.NO_DATA: "no data available: operation would block",
    ErrorCode.TIMED_OUT: "timed out",
    ErrorCode.PEER_ERROR: "the peer signalled an error",
}

_CLASS_BY_CODE: dict[int, type[UDTError]] = {
    ErrorCode.CONNECTION_SETUP: ConnectionSetupError,
    ErrorCode.NO_SERVER: ConnectTimeoutError,
    ErrorCode.REJECTED: ConnectionRejectedError,
    ErrorCode.SOCKET_FAILURE: ConnectionSetupError,
    ErrorCode.SECURITY_FAILURE: SecurityCheckError,
    ErrorCode.CONNECTION_FAILURE: ConnectionBrokenError,
    ErrorCode.CONNECTION_BROKEN: ConnectionBrokenError,
    ErrorCode.NO_CONNECTION: NotConnectedError,
    ErrorCode.RESOURCES: ResourceError,
    ErrorCode.THREAD_FAILURE: ResourceError,
    ErrorCode.NO_MEMORY: ResourceError,
    ErrorCode.FILE: FileTransferError,
    ErrorCode.FILE_READ_OFFSET: FileTransferError,
    ErrorCode.FILE_READ: FileTransferError,
    ErrorCode.FILE_WRITE_OFFSET: FileTransferError,
    ErrorCode.FILE_WRITE: FileTransferError,
    ErrorCode.BAD_PARAMETER: InvalidParameterError,
    ErrorCode.BAD_SOCKET: BadSocketError,
    ErrorCode.PORT_HAS_LISTENER: PortHasListenerError,
    ErrorCode.MESSAGE_TOO_LARGE: MessageTooLargeError,
    ErrorCode.WOULD_BLOCK: WouldBlockError,
    ErrorCode.NO_SEND_BUFFER: WouldBlockError,
    ErrorCode.NO_DATA: WouldBlockError,
    ErrorCode.TIMED_OUT: OperationTimeoutError,
    ErrorCode.PEER_ERROR: PeerError,
}

# errno for the invalid-operation codes that share InvalidOperationError, as the socket module uses
_ERRNO_BY_CODE: dict[int, int] = {
    ErrorCode.THREAD_FAILURE: _errno.EAGAIN,
    ErrorCode.ALREADY_BOUND: _errno.EINVAL,
    ErrorCode.ALREADY_CONNECTED: _errno.EISCONN,
    ErrorCode.UNBOUND: _errno.EINVAL,
    ErrorCode.NOT_LISTENING: _errno.EINVAL,
    ErrorCode.RENDEZVOUS_NO_LISTEN: _errno.EOPNOTSUPP,
    ErrorCode.RENDEZVOUS_NEEDS_BIND: _errno.EINVAL,
    ErrorCode.NOT_STREAM_MODE: _errno.EOPNOTSUPP,
    ErrorCode.NOT_MESSAGE_MODE: _errno.EOPNOTSUPP,
    ErrorCode.BAD_POLL_ID: _errno.EINVAL,
}


def error_from_code(udt_code: int, message: str | None = None, *, errno: int | None = None) -> UDTError:
    """The exception instance for UDT error number *udt_code* (not raised, returned)."""
    code = int(udt_code)
    cls = _CLASS_BY_CODE.get(code)
    if cls is None:
        cls = InvalidOperationError if 5000 <= code < 6000 else UDTError
    if errno is None:
        errno = _ERRNO_BY_CODE.get(code)
    return cls(code, message, errno=errno)
