"""udt: a reliable, congestion-controlled transport over UDP, wire-compatible with UDT4.

Layers, bottom up: ``udt.dgram`` (datagram sockets, multicast) over the channel in
``udt._net`` (batched, GIL-free UDP I/O with GSO/GRO); the protocol engine in ``udt._core``
(sans-IO, compiled); the multiplexer in ``udt._mux`` (one UDP port shared by many connections,
two worker threads without the GIL); and the socket API here::

    import udt
    with udt.create_server(("127.0.0.1", 9000)) as server:
        conn, address = server.accept()

See docs/architecture.md.
"""

__version__ = "0.1.0"

from ._socket import (  # noqa: E402
    AF_INET,
    AF_INET6,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SOCK_DGRAM,
    SOCK_STREAM,
    PerfMon,
    create_connection,
    create_server,
    socket,
)
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

# Every option as a module constant, UDT4 style: udt.UDT_MSS, udt.UDP_RCVBUF, …
globals().update({option.name: option for option in SocketOption})
UDT_EPOLL_IN = EpollEvent.IN
UDT_EPOLL_OUT = EpollEvent.OUT
UDT_EPOLL_ERR = EpollEvent.ERR

__all__ = [
    "__version__",
    "socket",
    "create_connection",
    "create_server",
    "PerfMon",
    "AF_INET",
    "AF_INET6",
    "SOCK_STREAM",
    "SOCK_DGRAM",
    "SHUT_RD",
    "SHUT_WR",
    "SHUT_RDWR",
    "SocketOption",
    "SocketState",
    "EpollEvent",
    "ErrorCode",
    "UDT_EPOLL_IN",
    "UDT_EPOLL_OUT",
    "UDT_EPOLL_ERR",
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
] + [option.name for option in SocketOption]
