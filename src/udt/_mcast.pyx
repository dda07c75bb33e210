# cython: language_level=3
"""Multicast and IP-level socket options that Python 3.11's ``socket`` module lacks.

Constants come from the C headers (``<netinet/in.h>``), never from hard-coded numbers, and the
option structures (``ip_mreqn``, ``ip_mreq_source``, ``ipv6_mreq``, ``group_req``,
``group_source_req``) are packed with the C compiler's own layout.  This module only *builds*
option values and resolves interfaces; the ``setsockopt`` calls themselves go through the channel
(``udt._net.Channel.setsockopt``) so that ``udt.dgram`` and the channel share one implementation of
the socket calls.

Addresses are passed in packed form (``socket.inet_pton`` output): 4 bytes for IPv4, 16 for IPv6.
"""

from libc.string cimport memset, memcpy
from libc.stdint cimport uint32_t

from udt._sys cimport in6_addr, in_addr, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage

cdef extern from "<sys/socket.h>" nogil:
    int C_SOL_SOCKET "SOL_SOCKET"
    int C_SO_BROADCAST "SO_BROADCAST"
    int C_SO_REUSEADDR "SO_REUSEADDR"
    int C_SO_REUSEPORT "SO_REUSEPORT"
    int C_SO_BINDTODEVICE "SO_BINDTODEVICE"
    int C_AF_INET "AF_INET"
    int C_AF_INET6 "AF_INET6"

cdef extern from "<netinet/in.h>" nogil:
    struct c_ip_mreqn "ip_mreqn":
        in_addr imr_multiaddr
        in_addr imr_address
        int imr_ifindex
    struct c_ip_mreq_source "ip_mreq_source":
        in_addr imr_multiaddr
        in_addr imr_interface
        in_addr imr_sourceaddr
    struct c_ipv6_mreq "ipv6_mreq":
        in6_addr ipv6mr_multiaddr
        unsigned int ipv6mr_interface
    struct c_group_req "group_req":
        uint32_t gr_interface
        sockaddr_storage gr_group
    struct c_group_source_req "group_source_req":
        uint32_t gsr_interface
        sockaddr_storage gsr_group
        sockaddr_storage gsr_source

    int C_IPPROTO_IP "IPPROTO_IP"
    int C_IPPROTO_IPV6 "IPPROTO_IPV6"
    int C_IP_TTL "IP_TTL"
    int C_IP_RECVTTL "IP_RECVTTL"
    int C_IP_MULTICAST_IF "IP_MULTICAST_IF"
    int C_IP_MULTICAST_TTL "IP_MULTICAST_TTL"
    int C_IP_MULTICAST_LOOP "IP_MULTICAST_LOOP"
    int C_IP_MULTICAST_ALL "IP_MULTICAST_ALL"
    int C_IP_ADD_MEMBERSHIP "IP_ADD_MEMBERSHIP"
    int C_IP_DROP_MEMBERSHIP "IP_DROP_MEMBERSHIP"
    int C_IP_ADD_SOURCE_MEMBERSHIP "IP_ADD_SOURCE_MEMBERSHIP"
    int C_IP_DROP_SOURCE_MEMBERSHIP "IP_DROP_SOURCE_MEMBERSHIP"
    int C_IP_BLOCK_SOURCE "IP_BLOCK_SOURCE"
    int C_IP_UNBLOCK_SOURCE "IP_UNBLOCK_SOURCE"
    int C_IPV6_V6ONLY "IPV6_V6ONLY"
    int C_IPV6_UNICAST_HOPS "IPV6_UNICAST_HOPS"
    int C_IPV6_MULTICAST_IF "IPV6_MULTICAST_IF"
    int C_IPV6_MULTICAST_HOPS "IPV6_MULTICAST_HOPS"
    int C_IPV6_MULTICAST_LOOP "IPV6_MULTICAST_LOOP"
    int C_IPV6_MULTICAST_ALL "IPV6_MULTICAST_ALL"
    int C_IPV6_JOIN_GROUP "IPV6_JOIN_GROUP"
    int C_IPV6_LEAVE_GROUP "IPV6_LEAVE_GROUP"
    int C_IPV6_RECVHOPLIMIT "IPV6_RECVHOPLIMIT"
    int C_MCAST_JOIN_GROUP "MCAST_JOIN_GROUP"
    int C_MCAST_LEAVE_GROUP "MCAST_LEAVE_GROUP"
    int C_MCAST_JOIN_SOURCE_GROUP "MCAST_JOIN_SOURCE_GROUP"
    int C_MCAST_LEAVE_SOURCE_GROUP "MCAST_LEAVE_SOURCE_GROUP"
    int C_MCAST_BLOCK_SOURCE "MCAST_BLOCK_SOURCE"
    int C_MCAST_UNBLOCK_SOURCE "MCAST_UNBLOCK_SOURCE"

cdef extern from "<net/if.h>" nogil:
    unsigned int if_nametoindex(const char *ifname)
    char *if_indextoname(unsigned int ifindex, char *ifname)
    int IF_NAMESIZE

cdef extern from "<ifaddrs.h>" nogil:
    struct ifaddrs:
        ifaddrs *ifa_next
        char *ifa_name
        unsigned int ifa_flags
        sockaddr *ifa_addr
    int getifaddrs(ifaddrs **ifap)
    void freeifaddrs(ifaddrs *ifa)

cdef extern from "<errno.h>" nogil:
    int errno

# --- constants re-exported as Python ints (values from the C headers) ---------------------------
SOL_SOCKET = C_SOL_SOCKET
SO_BROADCAST = C_SO_BROADCAST
SO_REUSEADDR = C_SO_REUSEADDR
SO_REUSEPORT = C_SO_REUSEPORT
SO_BINDTODEVICE = C_SO_BINDTODEVICE
IPPROTO_IP = C_IPPROTO_IP
IPPROTO_IPV6 = C_IPPROTO_IPV6
IP_TTL = C_IP_TTL
IP_RECVTTL = C_IP_RECVTTL
IP_MULTICAST_IF = C_IP_MULTICAST_IF
IP_MULTICAST_TTL = C_IP_MULTICAST_TTL
IP_MULTICAST_LOOP = C_IP_MULTICAST_LOOP
IP_MULTICAST_ALL = C_IP_MULTICAST_ALL
IP_ADD_MEMBERSHIP = C_IP_ADD_MEMBERSHIP
IP_DROP_MEMBERSHIP = C_IP_DROP_MEMBERSHIP
IP_ADD_SOURCE_MEMBERSHIP = C_IP_ADD_SOURCE_MEMBERSHIP
IP_DROP_SOURCE_MEMBERSHIP = C_IP_DROP_SOURCE_MEMBERSHIP
IP_BLOCK_SOURCE = C_IP_BLOCK_SOURCE
IP_UNBLOCK_SOURCE = C_IP_UNBLOCK_SOURCE
IPV6_V6ONLY = C_IPV6_V6ONLY
IPV6_UNICAST_HOPS = C_IPV6_UNICAST_HOPS
IPV6_MULTICAST_IF = C_IPV6_MULTICAST_IF
IPV6_MULTICAST_HOPS = C_IPV6_MULTICAST_HOPS
IPV6_MULTICAST_LOOP = C_IPV6_MULTICAST_LOOP
IPV6_MULTICAST_ALL = C_IPV6_MULTICAST_ALL
IPV6_JOIN_GROUP = C_IPV6_JOIN_GROUP
IPV6_LEAVE_GROUP = C_IPV6_LEAVE_GROUP
IPV6_RECVHOPLIMIT = C_IPV6_RECVHOPLIMIT
MCAST_JOIN_GROUP = C_MCAST_JOIN_GROUP
MCAST_LEAVE_GROUP = C_MCAST_LEAVE_GROUP
MCAST_JOIN_SOURCE_GROUP = C_MCAST_JOIN_SOURCE_GROUP
MCAST_LEAVE_SOURCE_GROUP = C_MCAST_LEAVE_SOURCE_GROUP
MCAST_BLOCK_SOURCE = C_MCAST_BLOCK_SOURCE
MCAST_UNBLOCK_SOURCE = C_MCAST_UNBLOCK_SOURCE


# --- helpers --------------------------------------------------------------------------------------
cdef inline void _copy_packed(void *dst, object packed, Py_ssize_t size) except *:
    """Copy a packed address (bytes-like of exactly *size* bytes) into *dst*."""
    cdef const unsigned char[::1] view = packed
    if view.shape[0] != size:
        raise ValueError(f"packed address must be {size} bytes, got {view.shape[0]}")
    memcpy(dst, &view[0], size)


cdef inline int _family_size(int family) except -1:
    if family == C_AF_INET:
        return 4
    if family == C_AF_INET6:
        return 16
    raise ValueError(f"unsupported address family {family}")


cdef void _fill_sockaddr(sockaddr_storage *storage, int family, object packed) except *:
    """Write a port-less sockaddr of *family* holding *packed* into *storage*."""
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    memset(storage, 0, sizeof(sockaddr_storage))
    if family == C_AF_INET:
        v4 = <sockaddr_in *> storage
        v4.sin_family = C_AF_INET
        _copy_packed(&v4.sin_addr, packed, 4)
    elif family == C_AF_INET6:
        v6 = <sockaddr_in6 *> storage
        v6.sin6_family = C_AF_INET6
        _copy_packed(&v6.sin6_addr, packed, 16)
    else:
        raise ValueError(f"unsupported address family {family}")


# --- option values --------------------------------------------------------------------------------
def ip_mreqn(group, address, int ifindex=0) -> bytes:
    """``struct ip_mreqn`` for IP_ADD/DROP_MEMBERSHIP and IP_MULTICAST_IF (interface by address
    or by index; the kernel prefers the index when it is non-zero)."""
    cdef c_ip_mreqn req
    memset(&req, 0, sizeof(req))
    _copy_packed(&req.imr_multiaddr, group, 4)
    _copy_packed(&req.imr_address, address, 4)
    req.imr_ifindex = ifindex
    return (<char *> &req)[:sizeof(req)]


def ip_mreq_source(group, interface, source) -> bytes:
    """``struct ip_mreq_source`` for IP_ADD/DROP_SOURCE_MEMBERSHIP and IP_(UN)BLOCK_SOURCE."""
    cdef c_ip_mreq_source req
    memset(&req, 0, sizeof(req))
    _copy_packed(&req.imr_multiaddr, group, 4)
    _copy_packed(&req.imr_interface, interface, 4)
    _copy_packed(&req.imr_sourceaddr, source, 4)
    return (<char *> &req)[:sizeof(req)]


def ipv6_mreq(group, unsigned int ifindex=0) -> bytes:
    """``struct ipv6_mreq`` for IPV6_JOIN_GROUP / IPV6_LEAVE_GROUP."""
    cdef c_ipv6_mreq req
    memset(&req, 0, sizeof(req))
    _copy_packed(&req.ipv6mr_multiaddr, group, 16)
    req.ipv6mr_interface = ifindex
    return (<char *> &req)[:sizeof(req)]


def group_req(int family, group, unsigned int ifindex=0) -> bytes:
    """``struct group_req`` for the protocol-independent MCAST_JOIN_GROUP / MCAST_LEAVE_GROUP."""
    cdef c_group_req req
    memset(&req, 0, sizeof(req))
    req.gr_interface = ifindex
    _fill_sockaddr(&req.gr_group, family, group)
    return (<char *> &req)[:sizeof(req)]


def group_source_req(int family, group, source, unsigned int ifindex=0) -> bytes:
    """``struct group_source_req`` for MCAST_JOIN/LEAVE_SOURCE_GROUP and MCAST_(UN)BLOCK_SOURCE."""
    cdef c_group_source_req req
    memset(&req, 0, sizeof(req))
    req.gsr_interface = ifindex
    _fill_sockaddr(&req.gsr_group, family, group)
    _fill_sockaddr(&req.gsr_source, family, source)
    return (<char *> &req)[:sizeof(req)]


# --- interfaces -----------------------------------------------------------------------------------
def interface_index(name: str) -> int:
    """Index of the interface called *name* (``if_nametoindex``); OSError(ENODEV) if none."""
    cdef bytes encoded = name.encode()
    cdef unsigned int index
    if len(encoded) >= IF_NAMESIZE or b"\0" in encoded:
        raise ValueError(f"invalid interface name {name!r}")
    index = if_nametoindex(encoded)
    if index == 0:
        import errno as _errno, os as _os
        raise OSError(_errno.ENODEV, f"{_os.strerror(_errno.ENODEV)}: interface {name!r}")
    return index


def interface_name(unsigned int index) -> str:
    """Name of the interface with *index* (``if_indextoname``); OSError(ENXIO) if none."""
    cdef char buffer[64]
    if if_indextoname(index, buffer) == NULL:
        import os as _os
        code = errno
        raise OSError(code, f"{_os.strerror(code)}: interface index {index}")
    return buffer.decode()


def interface_addresses():
    """Every (interface name, family, packed address) the host has (``getifaddrs``), for mapping
    an interface given by address to its index (IPv6 joins need the index) and back."""
    cdef ifaddrs *head = NULL
    cdef ifaddrs *entry
    cdef int family
    result = []
    if getifaddrs(&head) != 0:
        import os as _os
        code = errno
        raise OSError(code, _os.strerror(code))
    try:
        entry = head
        while entry != NULL:
            if entry.ifa_addr != NULL:
                family = entry.ifa_addr.sa_family
                if family == C_AF_INET:
                    result.append((entry.ifa_name.decode(), C_AF_INET,
                                   (<char *> &(<sockaddr_in *> entry.ifa_addr).sin_addr)[:4]))
                elif family == C_AF_INET6:
                    result.append((entry.ifa_name.decode(), C_AF_INET6,
                                   (<char *> &(<sockaddr_in6 *> entry.ifa_addr).sin6_addr)[:16]))
            entry = entry.ifa_next
    finally:
        freeifaddrs(head)
    return result


def interface_index_for_address(int family, packed) -> int:
    """Index of the interface holding the address *packed* of *family*;
    OSError(EADDRNOTAVAIL) when no local interface has it (as the kernel would answer)."""
    cdef int size = _family_size(family)
    wanted = bytes(packed)
    if len(wanted) != size:
        raise ValueError(f"packed address must be {size} bytes, got {len(wanted)}")
    for name, entry_family, address in interface_addresses():
        if entry_family == family and address == wanted:
            return interface_index(name)
    import errno as _errno, os as _os, socket as _socket
    raise OSError(_errno.EADDRNOTAVAIL,
                  f"{_os.strerror(_errno.EADDRNOTAVAIL)}: no interface has address "
                  f"{_socket.inet_ntop(family, wanted)}")


def ipv4_address_for_interface(unsigned int index) -> bytes:
    """The first IPv4 address (packed) of the interface with *index*; OSError(EADDRNOTAVAIL) if it
    has none.  IP_(UN)BLOCK_SOURCE and friends name the interface by address only."""
    name = interface_name(index)
    for entry_name, family, address in interface_addresses():
        if entry_name == name and family == C_AF_INET:
            return address
    import errno as _errno, os as _os
    raise OSError(_errno.EADDRNOTAVAIL,
                  f"{_os.strerror(_errno.EADDRNOTAVAIL)}: interface {name!r} has no IPv4 address")
