"""The relay's socket layer: kernel constants Python's socket module lacks (GSO, GRO,
receive timestamps, forced buffer sizes), the options the relay sets, and address resolution."""

from __future__ import annotations

import errno
import socket
import struct
import sys

from udt.tools.impair._common import Address

MAX_DATAGRAM = 65535

#: Socket buffer the relay asks for (root gets it via SO_*BUFFORCE): the relay must not be the
#: place where bursts are lost silently, only where it decides to lose them.
SOCKET_BUFFER_BYTES = 8 << 20


# UDP GSO (Linux >= 4.18): values from <linux/udp.h>; Python 3.11's socket module lacks them.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
#: Kernel receive timestamps (struct timespec, CLOCK_REALTIME) as a control message.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
TIMESPEC = struct.Struct("@qq")
#: Room for both control messages in recvmsg: UDP_GRO (an int) and the timestamp.
CMSG_BUFFER = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(TIMESPEC.size)
GSO_AVAILABLE = sys.platform.startswith("linux")
#: Segments per GSO send (the kernel's UDP_MAX_SEGMENTS is at least 64) and payload bytes per
#: send (an IPv4 datagram holds at most 65507).
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: Larger datagrams need IP fragmentation on common MTUs, which GSO refuses: send them singly.
GSO_MAX_SEGMENT_SIZE = 8192
GSO_UNSUPPORTED_ERRNOS = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


# Python's socket module lacks the FORCE variants (values from <asm-generic/socket.h>, Linux);
# they let root exceed net.core.[rw]mem_max.
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if sys.platform.startswith("linux") else None)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)


def _set_buffers(sock: socket.socket, size: int = SOCKET_BUFFER_BYTES) -> None:
    """Ask for large socket buffers: forced if privileged, else as much as the sysctl allows."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        if force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
                continue
            except OSError:  # EPERM without CAP_NET_ADMIN
                pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
        except OSError:
            pass


def _enable_timestamps(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:  # without stamps a datagram counts as arriving when it is read
        pass


def _enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel to hand over a GSO sender's batch as one buffer (cut by us), not one
    datagram per read. False where the kernel has no UDP GRO."""
    if not GSO_AVAILABLE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _resolve(address: Address, what: str) -> tuple[int, Address]:
    """(family, sockaddr) for a (host, port) pair, IPv4 or IPv6, numeric or by name."""
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"{what} must be a (host, port) tuple, got {address!r}")
    host, port = address[0], address[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what} port must be an int in 0..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise ValueError(f"{what} host {host!r} cannot be resolved: {exc}") from None
    family, _type, _proto, _canon, resolved = infos[0]
    sockaddr: Address = resolved
    if family == socket.AF_INET6 and len(address) == 4:
        sockaddr = (sockaddr[0], port, address[2], address[3])
    return family, sockaddr
