"""udt: a reliable, congestion-controlled transport over UDP, wire-compatible with UDT4.

Layers, bottom up: ``udt.dgram`` (datagram sockets, multicast) over the channel in
``udt._net`` (batched, GIL-free UDP I/O with GSO/GRO); the protocol engine in ``udt._core``
(sans-IO, compiled); the multiplexer in ``udt._mux`` (one UDP port shared by many connections);
the worker pool in ``udt._pool`` (a few threads without the GIL serve every port); and the
socket API here::

    import udt
    with udt.create_server(("127.0.0.1", 9000)) as server:
        conn, address = server.accept()

See docs/architecture.md.
"""

__version__ = "0.1.0"

from ._factories import create_connection, create_server  # noqa: E402
from ._socket import (  # noqa: E402
    AF_INET,
    AF_INET6,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SOCK_DGRAM,
    SOCK_STREAM,
    PerfMon,
    socket,
)
from ._sockopt import SOL_UDT  # noqa: E402
from ._workers import set_worker_count, worker_count  # noqa: E402
from .epoll import UDT_EPOLL_ERR, UDT_EPOLL_ET, UDT_EPOLL_IN, UDT_EPOLL_OUT, epoll  # noqa: E402
from .errors import (  # noqa: E402
    BadSocketError,
    BrokenPipeUDTError,
    ConnectionBrokenError,
    ConnectionRejectedError,
    ConnectionSetupError,
    ConnectTimeoutError,
    ErrorCode,
    FileTransferError,
    InvalidOperationError,
    InvalidParameterError,
    MessageTooLargeError,
    NotConnectedError,
    OperationTimeoutError,
    PeerError,
    PortHasListenerError,
    ResourceError,
    SecurityCheckError,
    UDTError,
    UnacknowledgedDataError,
    WouldBlockError,
)
from .options import EpollEvent, SocketOption, SocketState  # noqa: E402

# Every option as a module constant, UDT4 style (spelt out so type checkers see them; a test
# checks that each SocketOption has its constant).
UDT_MSS = SocketOption.UDT_MSS
UDT_SNDSYN = SocketOption.UDT_SNDSYN
UDT_RCVSYN = SocketOption.UDT_RCVSYN
UDT_CC = SocketOption.UDT_CC
UDT_FC = SocketOption.UDT_FC
UDT_SNDBUF = SocketOption.UDT_SNDBUF
UDT_RCVBUF = SocketOption.UDT_RCVBUF
UDT_LINGER = SocketOption.UDT_LINGER
UDP_SNDBUF = SocketOption.UDP_SNDBUF
UDP_RCVBUF = SocketOption.UDP_RCVBUF
UDT_MAXMSG = SocketOption.UDT_MAXMSG
UDT_MSGTTL = SocketOption.UDT_MSGTTL
UDT_RENDEZVOUS = SocketOption.UDT_RENDEZVOUS
UDT_SNDTIMEO = SocketOption.UDT_SNDTIMEO
UDT_RCVTIMEO = SocketOption.UDT_RCVTIMEO
UDT_REUSEADDR = SocketOption.UDT_REUSEADDR
UDT_MAXBW = SocketOption.UDT_MAXBW
UDT_STATE = SocketOption.UDT_STATE
UDT_EVENT = SocketOption.UDT_EVENT
UDT_SNDDATA = SocketOption.UDT_SNDDATA
UDT_RCVDATA = SocketOption.UDT_RCVDATA
UDT_PEERIDLETIMEO = SocketOption.UDT_PEERIDLETIMEO
UDT_CONNTIMEO = SocketOption.UDT_CONNTIMEO
UDT_PASSPHRASE = SocketOption.UDT_PASSPHRASE
UDT_PMTUD = SocketOption.UDT_PMTUD

__all__ = [
    "__version__",
    "socket",
    "create_connection",
    "create_server",
    "PerfMon",
    "set_worker_count",
    "worker_count",
    "AF_INET",
    "AF_INET6",
    "SOCK_STREAM",
    "SOCK_DGRAM",
    "SHUT_RD",
    "SHUT_WR",
    "SHUT_RDWR",
    "SOL_UDT",
    "SocketOption",
    "SocketState",
    "EpollEvent",
    "ErrorCode",
    "UDT_EPOLL_IN",
    "UDT_EPOLL_OUT",
    "UDT_EPOLL_ERR",
    "UDT_EPOLL_ET",
    "epoll",
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
    "UDT_MSS",
    "UDT_SNDSYN",
    "UDT_RCVSYN",
    "UDT_CC",
    "UDT_FC",
    "UDT_SNDBUF",
    "UDT_RCVBUF",
    "UDT_LINGER",
    "UDP_SNDBUF",
    "UDP_RCVBUF",
    "UDT_MAXMSG",
    "UDT_MSGTTL",
    "UDT_RENDEZVOUS",
    "UDT_SNDTIMEO",
    "UDT_RCVTIMEO",
    "UDT_REUSEADDR",
    "UDT_MAXBW",
    "UDT_STATE",
    "UDT_EVENT",
    "UDT_SNDDATA",
    "UDT_RCVDATA",
    "UDT_PEERIDLETIMEO",
    "UDT_CONNTIMEO",
    "UDT_PMTUD",
    "UDT_PASSPHRASE",
]
