# cython: language_level=3
"""The kernel's socket interface as the channel units use it, and errno turned into exceptions.

Declarations plus three inline helpers (``check`` and the int socket options); only
:func:`raise_errno` has a body in ``_sys.pyx``. The GSO/GRO option numbers are defined here when
the C library is too old to know them: their values are fixed by the kernel ABI.
"""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from posix.uio cimport iovec


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr* CMSG_FIRSTHDR(msghdr* msg)
    cmsghdr* CMSG_NXTHDR(msghdr* msg, cmsghdr* cmsg)
    unsigned char* CMSG_DATA(cmsghdr* cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)

    enum:
        AF_UNSPEC
        AF_INET
        AF_INET6
        SOCK_DGRAM
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_TYPE
        SO_DOMAIN
        SO_PROTOCOL
        SO_ERROR
        SO_REUSEADDR
        SO_REUSEPORT
        SO_RCVBUF
        SO_SNDBUF
        SO_RCVBUFFORCE
        SO_SNDBUFFORCE
        MSG_DONTWAIT
        MSG_TRUNC
        MSG_CTRUNC

    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr* addr, socklen_t length)
    int connect(int fd, const sockaddr* addr, socklen_t length)
    int getsockname(int fd, sockaddr* addr, socklen_t* length)
    int getpeername(int fd, sockaddr* addr, socklen_t* length)
    int setsockopt(int fd, int level, int option, const void* value, socklen_t length)
    int getsockopt(int fd, int level, int option, void* value, socklen_t* length)
    ssize_t sendmsg(int fd, const msghdr* message, int flags)
    ssize_t recvmsg(int fd, msghdr* message, int flags)
    ssize_t sendto(int fd, const void* data, size_t length, int flags,
                   const sockaddr* addr, socklen_t addrlen)
    ssize_t recvfrom(int fd, void* data, size_t length, int flags,
                     sockaddr* addr, socklen_t* addrlen)
    int sendmmsg(int fd, mmsghdr* messages, unsigned int count, int flags)
    int recvmmsg(int fd, mmsghdr* messages, unsigned int count, int flags, void* timeout)


cdef extern from "<netinet/in.h>" nogil:
    enum:
        IPPROTO_IP
        IPPROTO_UDP
        IPPROTO_IPV6
        IP_MTU_DISCOVER             # path-MTU discovery's probes go out with DF (_sock.pyx)
        IP_PMTUDISC_PROBE
        IPV6_MTU_DISCOVER
        IPV6_PMTUDISC_PROBE
        INET_ADDRSTRLEN
        INET6_ADDRSTRLEN

    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    uint16_t htons(uint16_t value)
    uint16_t ntohs(uint16_t value)
    uint32_t htonl(uint32_t value)
    uint32_t ntohl(uint32_t value)


cdef extern from *:
    """
    #include <netinet/udp.h>
    /* Old C libraries lack the GSO/GRO options; their values are fixed by the kernel ABI. */
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    """
    enum:
        SOL_UDP
        UDP_SEGMENT
        UDP_GRO


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        C_POLLIN "POLLIN"
        C_POLLOUT "POLLOUT"
        C_POLLERR "POLLERR"
        C_POLLHUP "POLLHUP"
        C_POLLNVAL "POLLNVAL"
    int poll(pollfd* fds, unsigned long count, int timeout_ms)


cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void* data, size_t length)
    ssize_t write(int fd, const void* data, size_t length)


cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK
    int eventfd(unsigned int initial, int flags)


cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)


cdef extern from "<linux/sockios.h>" nogil:
    enum:
        SIOCOUTQ


# ---- errors: the channel's C functions return -errno; these turn it into the socket module's
# exceptions (they need the GIL) ----
cdef object raise_errno(int error)


cdef inline int check(int result) except -1:
    """Turn a ``-errno`` result into an exception; pass non-negative results through."""
    if result < 0:
        raise_errno(-result)
    return result


cdef inline int set_int_option(int fd, int level, int option, int value) noexcept nogil:
    if setsockopt(fd, level, option, &value, sizeof(int)) != 0:
        return -errno
    return 0


cdef inline int get_int_option(int fd, int level, int option, int* value) noexcept nogil:
    cdef socklen_t length = sizeof(int)
    if getsockopt(fd, level, option, value, &length) != 0:
        return -errno
    return 0
