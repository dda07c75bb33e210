# cython: language_level=3
"""C declarations of the UDP channel, shared with every Cython unit that does socket I/O.

Other units ``cimport`` from here: the kernel structures (sockaddr_storage, iovec, mmsghdr),
the address helpers, the preallocated batch structures and the :class:`Channel` whose
``c_*`` methods run without the GIL and return ``-errno`` instead of raising.
"""
from libc.errno cimport ENOBUFS
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
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
        IPPROTO_UDP
        IPPROTO_IPV6
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


# Limits of one UDP datagram and of one GSO send (the kernel refuses more segments per call on
# older releases, and the whole GSO payload must fit one IP datagram).
cpdef enum:
    MAX_UDP_PAYLOAD_V4 = 65507
    MAX_UDP_PAYLOAD_V6 = 65527
    GSO_MAX_SEGMENTS = 64
    GRO_BUFFER_SIZE = 65536
    # A looped-back GSO send reaches a GRO socket whole: up to 128 segments on current kernels.
    GRO_MAX_SEGMENTS = 128
    MAX_IOVECS_PER_MESSAGE = 1024


cdef struct CSendBatch:
    # Datagrams queued for ONE destination, each made of one or more consecutive iovecs.
    int max_datagrams
    int max_iovecs
    int count                  # datagrams queued
    int iov_count              # iovecs used
    int done                   # datagrams already handed to the kernel (progress across calls)
    iovec* iov                 # [max_iovecs]
    int* first_iov             # [max_datagrams + 1]: datagram i uses iov[first_iov[i]:first_iov[i+1]]
    uint32_t* length           # [max_datagrams]: bytes of datagram i
    mmsghdr* messages          # [max_datagrams]: one per GSO run or per datagram
    int* message_datagrams     # [max_datagrams]: datagrams carried by messages[k]
    char* control              # [max_datagrams * CMSG_SPACE(sizeof(uint16_t))]
    sockaddr_storage address   # destination; address_length 0 = the connected peer
    socklen_t address_length


cdef struct CRecvBatch:
    # A reusable block of GRO-sized receive buffers and the datagrams found in them.
    int slots                  # receive buffers, one message each
    size_t slot_size
    char* area                 # [slots * slot_size]
    mmsghdr* messages          # [slots]
    iovec* iov                 # [slots]
    sockaddr_storage* sources  # [slots]
    char* control              # [slots * control_size]
    size_t control_size
    int max_datagrams          # capacity of the arrays below
    int count                  # datagrams delivered by the last receive
    char** data                # [max_datagrams]: start of datagram i (inside area)
    uint32_t* length           # [max_datagrams]
    int* source_slot           # [max_datagrams]: index into sources / messages of datagram i
    # Messages received but not yet split because the arrays above were full.
    int pending_message
    int pending_messages
    uint32_t pending_offset
    # Counters of datagrams the batch dropped: longer than a slot (MSG_TRUNC).
    uint64_t truncated



# ---- address helpers (raise Python exceptions; need the GIL) ----
cdef int sockaddr_from_address(object address, int family, sockaddr_storage* out,
                               socklen_t* out_length) except -1
cdef object address_from_sockaddr(const sockaddr* addr, socklen_t length)
cdef object raise_errno(int error)

# ---- batch structures (no GIL; NULL on ENOMEM) ----
cdef CSendBatch* send_batch_new(int max_datagrams, int max_iovecs) noexcept nogil
cdef void send_batch_free(CSendBatch* batch) noexcept nogil
cdef CRecvBatch* recv_batch_new(int slots, size_t slot_size, int max_datagrams) noexcept nogil
cdef void recv_batch_free(CRecvBatch* batch) noexcept nogil


cdef inline void send_batch_clear(CSendBatch* batch) noexcept nogil:
    batch.count = 0
    batch.iov_count = 0
    batch.done = 0
    batch.first_iov[0] = 0


cdef inline int send_batch_add(CSendBatch* batch, const void* data, size_t length) noexcept nogil:
    """Queue one datagram made of one buffer; -ENOBUFS when the batch is full."""
    if batch.count >= batch.max_datagrams or batch.iov_count >= batch.max_iovecs:
        return -ENOBUFS
    batch.iov[batch.iov_count].iov_base = <void*>data
    batch.iov[batch.iov_count].iov_len = length
    batch.iov_count += 1
    batch.length[batch.count] = <uint32_t>length
    batch.count += 1
    batch.first_iov[batch.count] = batch.iov_count
    return 0


cdef inline int send_batch_add_pair(CSendBatch* batch, const void* header, size_t header_length,
                                    const void* payload, size_t payload_length) noexcept nogil:
    """Queue one datagram sent as header + payload without copying them together."""
    if batch.count >= batch.max_datagrams or batch.iov_count + 2 > batch.max_iovecs:
        return -ENOBUFS
    batch.iov[batch.iov_count].iov_base = <void*>header
    batch.iov[batch.iov_count].iov_len = header_length
    batch.iov[batch.iov_count + 1].iov_base = <void*>payload
    batch.iov[batch.iov_count + 1].iov_len = payload_length
    batch.iov_count += 2
    batch.length[batch.count] = <uint32_t>(header_length + payload_length)
    batch.count += 1
    batch.first_iov[batch.count] = batch.iov_count
    return 0


cdef inline const sockaddr* recv_batch_source(CRecvBatch* batch, int index) noexcept nogil:
    return <const sockaddr*>&batch.sources[batch.source_slot[index]]


cdef inline socklen_t recv_batch_source_length(CRecvBatch* batch, int index) noexcept nogil:
    return batch.messages[batch.source_slot[index]].msg_hdr.msg_namelen


cdef class SendBatch:
    """Python owner of a :c:type:`CSendBatch` (tests, bench, and the Python send path)."""
    cdef CSendBatch* c
    cdef list _keep          # the objects whose buffers the iovecs point into
    cdef void* _views        # Py_buffer array, one per kept object
    cdef int _view_count
    cdef int _view_capacity
    cdef void _release_views(self) noexcept


cdef class RecvBatch:
    """Python owner of a :c:type:`CRecvBatch`."""
    cdef CRecvBatch* c


cdef class Channel:
    cdef int fd
    cdef int wake_fd
    cdef readonly int family
    # Lifetime: operations register in _users; close() sets _closed and wakes waiters; whoever
    # sees the count drop to zero after close releases the descriptors exactly once.
    cdef int _users
    cdef int _closed
    cdef int _released
    cdef bint _gso_supported
    cdef bint _gro_supported
    cdef bint _gso
    cdef bint _gro
    cdef int _max_payload
    cdef uint32_t _gso_segment_limit    # lowered when a GSO run of larger segments got EINVAL
    # Python-level receive path when GRO is on: one shared GRO batch under a lock.
    cdef RecvBatch _rx
    cdef int _rx_next
    cdef void* _rx_lock
    # Python-level send path: the last destination converted (avoids re-parsing the tuple).
    cdef object _last_address
    cdef sockaddr_storage _last_sockaddr
    cdef socklen_t _last_sockaddr_length
    cdef object _last_source
    cdef sockaddr_storage _last_source_sockaddr
    cdef socklen_t _last_source_length
    cdef object __weakref__

    cdef int c_acquire(self) noexcept nogil
    cdef void c_release(self) noexcept nogil
    cdef int c_wait(self, short events, int64_t timeout_us) noexcept nogil
    cdef int c_send_batch(self, CSendBatch* batch, int64_t timeout_us) noexcept nogil
    cdef int c_recv_batch(self, CRecvBatch* batch, int64_t timeout_us) noexcept nogil
    cdef int c_interrupt(self) noexcept nogil
    cdef object _source_tuple(self, const sockaddr* addr, socklen_t length)
    cdef _setup(self, int fd, int family, bint reuse_addr, bint reuse_port, bint gso, bint gro,
                object rcvbuf, object sndbuf)
    cdef void _close_descriptors(self) noexcept nogil
    cdef int _wait(self, short events, long long deadline_us) noexcept nogil
    cdef int _plan_messages(self, CSendBatch* batch, bint use_gso) noexcept nogil
    cdef _sockaddr_call(self, object address, int which)
    cdef _name(self, bint peer)
    cdef int _destination(self, object address, socklen_t* length) except -1
    cdef object _recvfrom_gro(self, Py_buffer* view, int64_t wait_us)
    cdef CRecvBatch* _shared_rx(self) except NULL
    cdef bint _rx_has_datagrams(self) noexcept
    cdef int _set_buffer(self, int forced, int plain, object value) except -1
