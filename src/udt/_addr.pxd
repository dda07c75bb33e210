# cython: language_level=3
"""Address conversion between socket-module tuples and kernel sockaddrs (both raise Python
exceptions, so they need the GIL)."""
from udt._sys cimport sockaddr, sockaddr_storage, socklen_t


cdef int sockaddr_from_address(object address, int family, sockaddr_storage* out,
                               socklen_t* out_length) except -1
cdef object address_from_sockaddr(const sockaddr* addr, socklen_t length)
