# cython: language_level=3
"""Address conversion for both families: socket-module tuples to kernel sockaddrs and back.

Validation, wildcard/broadcast spellings, IPv4-mapped IPv6 and name resolution follow the
``socket`` module, so every Channel method accepts and returns exactly what a socket would.
"""
import socket as _socket

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy, memset

from udt._sys cimport (AF_INET, AF_INET6, AF_UNSPEC, htonl, htons, in_addr, ntohl, ntohs, sockaddr,
                       sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t)

__all__ = ["address_to_sockaddr", "sockaddr_to_address"]


cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int family, const void* src, char* dst, socklen_t size)
    int inet_pton(int family, const char* src, void* dst)


cdef extern from "<netdb.h>" nogil:
    enum:
        NI_MAXHOST
        NI_NUMERICHOST
        NI_NUMERICSERV
    int getnameinfo(const sockaddr* addr, socklen_t addrlen, char* host, socklen_t hostlen,
                    char* serv, socklen_t servlen, int flags)


cdef int _port_from(object port) except -1:
    cdef object value
    try:
        value = port.__index__()
    except AttributeError:
        raise TypeError(f"port must be an integer, not {type(port).__name__}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be 0-65535, not {value}")
    return value


cdef bytes _host_bytes(object host):
    if isinstance(host, str):
        return (<str>host).encode("idna")
    if isinstance(host, (bytes, bytearray)):
        return bytes(host)
    raise TypeError(f"host must be str or bytes, not {type(host).__name__}")


cdef int _resolve(bytes host, int port, int family, sockaddr_storage* out,
                  socklen_t* out_length) except -1:
    """Resolve a host name (or a scoped IPv6 literal such as ``fe80::1%eth0``) with getaddrinfo;
    the first answer of ``family`` wins; socket.gaierror when there is none."""
    cdef sockaddr_in* v4 = <sockaddr_in*>out
    cdef sockaddr_in6* v6 = <sockaddr_in6*>out
    cdef bytes numeric
    infos = _socket.getaddrinfo(host, port, family, _socket.SOCK_DGRAM, _socket.IPPROTO_UDP)
    for info_family, _, _, _, sockaddr_tuple in infos:
        if info_family != family:
            continue
        # getaddrinfo answers with numeric hosts; a scoped one carries "%scope" as text and the
        # number in the tuple, so only the part before "%" is parsed here.
        numeric = (<str>sockaddr_tuple[0]).partition("%")[0].encode("ascii")
        if family == AF_INET and inet_pton(AF_INET, numeric, &v4.sin_addr) == 1:
            return 0
        if family == AF_INET6 and inet_pton(AF_INET6, numeric, &v6.sin6_addr) == 1:
            v6.sin6_scope_id = <uint32_t>sockaddr_tuple[3]
            return 0
    raise _socket.gaierror(_socket.EAI_FAMILY, "no address of the requested family")


cdef int sockaddr_from_address(object address, int family, sockaddr_storage* out,
                               socklen_t* out_length) except -1:
    """Convert a socket-module address tuple to a sockaddr of ``family``.

    AF_INET takes ``(host, port)``; AF_INET6 takes ``(host, port[, flowinfo[, scope_id]])``.
    ``''`` is the wildcard, ``'<broadcast>'`` the IPv4 broadcast address, an IPv4 literal given
    to an AF_INET6 channel becomes its IPv4-mapped form, and any other non-literal (a name, or a
    link-local literal with a ``%scope``) is resolved with getaddrinfo.
    """
    cdef sockaddr_in* v4 = <sockaddr_in*>out
    cdef sockaddr_in6* v6 = <sockaddr_in6*>out
    cdef bytes host
    cdef int port
    cdef in_addr mapped
    cdef object flowinfo = 0, scope_id = 0
    if not isinstance(address, tuple):
        raise TypeError(f"{'AF_INET' if family == AF_INET else 'AF_INET6'} address must be "
                        f"tuple, not {type(address).__name__}")
    memset(out, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        if len(address) != 2:
            raise TypeError("AF_INET address must be a pair (host, port)")
        host = _host_bytes(address[0])
        port = _port_from(address[1])
        v4.sin_family = AF_INET
        v4.sin_port = htons(<uint16_t>port)
        out_length[0] = sizeof(sockaddr_in)
        if host == b"":
            v4.sin_addr.s_addr = htonl(0)
        elif host == b"<broadcast>":
            v4.sin_addr.s_addr = htonl(0xFFFFFFFF)
        elif inet_pton(AF_INET, host, &v4.sin_addr) != 1:
            _resolve(host, port, AF_INET, out, out_length)
        return 0
    if family == AF_INET6:
        if not 2 <= len(address) <= 4:
            raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
        host = _host_bytes(address[0])
        port = _port_from(address[1])
        if len(address) > 2:
            flowinfo = address[2].__index__()
            if not 0 <= flowinfo <= 0xFFFFF:
                raise ValueError(f"flowinfo must be 0-1048575, not {flowinfo}")
        if len(address) > 3:
            scope_id = address[3].__index__()
            if not 0 <= scope_id <= 0xFFFFFFFF:
                raise ValueError(f"scope_id must be 0-4294967295, not {scope_id}")
        out_length[0] = sizeof(sockaddr_in6)
        if host == b"":
            pass
        elif inet_pton(AF_INET6, host, &v6.sin6_addr) == 1:
            pass
        elif inet_pton(AF_INET, host, &mapped) == 1:
            v6.sin6_addr.s6_addr[10] = 0xFF
            v6.sin6_addr.s6_addr[11] = 0xFF
            memcpy(&v6.sin6_addr.s6_addr[12], &mapped, 4)
        else:
            _resolve(host, port, AF_INET6, out, out_length)
        v6.sin6_family = AF_INET6
        v6.sin6_port = htons(<uint16_t>port)
        v6.sin6_flowinfo = htonl(<uint32_t>flowinfo)
        if scope_id:
            v6.sin6_scope_id = <uint32_t>scope_id
        return 0
    raise ValueError(f"unsupported address family {family}")


cdef object address_from_sockaddr(const sockaddr* addr, socklen_t length):
    """The socket-module tuple for a kernel address: (host, port) or (host, port, flow, scope)."""
    cdef char host[NI_MAXHOST]
    cdef const sockaddr_in* v4
    cdef const sockaddr_in6* v6
    if length == 0 or addr.sa_family == AF_UNSPEC:
        return None
    if addr.sa_family == AF_INET:
        v4 = <const sockaddr_in*>addr
        inet_ntop(AF_INET, &v4.sin_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v4.sin_port))
    if addr.sa_family == AF_INET6:
        v6 = <const sockaddr_in6*>addr
        if v6.sin6_scope_id == 0 or getnameinfo(addr, length, host, sizeof(host), NULL, 0,
                                                NI_NUMERICHOST | NI_NUMERICSERV) != 0:
            # getnameinfo adds "%interface" to scoped addresses, exactly as the socket module.
            inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    raise ValueError(f"unsupported address family {addr.sa_family}")


def address_to_sockaddr(address, int family=AF_INET) -> bytes:
    """The kernel's ``struct sockaddr_in``/``sockaddr_in6`` bytes for a socket-module address
    (validated and resolved exactly as every Channel method does)."""
    cdef sockaddr_storage storage
    cdef socklen_t length = 0
    sockaddr_from_address(address, family, &storage, &length)
    return PyBytes_FromStringAndSize(<char*>&storage, length)


def sockaddr_to_address(raw) -> tuple | None:
    """The socket-module address tuple for raw sockaddr bytes (the inverse of the above)."""
    cdef sockaddr_storage storage
    cdef const unsigned char[:] view = raw
    cdef socklen_t length = view.shape[0]
    if length > sizeof(storage):
        raise ValueError("longer than a sockaddr_storage")
    memset(&storage, 0, sizeof(storage))
    if length:
        memcpy(&storage, &view[0], length)
    if (storage.ss_family == AF_INET and length < sizeof(sockaddr_in)) or (
            storage.ss_family == AF_INET6 and length < sizeof(sockaddr_in6)):
        raise ValueError("sockaddr bytes too short for their family")
    return address_from_sockaddr(<sockaddr*>&storage, length)
