# cython: language_level=3
"""The UDP channel: one socket, batched I/O without the GIL, UDP GSO/GRO when the kernel has them.

``Channel`` is what ``udt.dgram`` and the multiplexer send and receive through. The Python
methods mirror the ``socket`` module (names, address tuples, exceptions); the ``c_*`` methods
declared in ``_net.pxd`` are the multiplexer's hot path: they run without the GIL, never allocate,
and return ``-errno``.

Waiting is always ``poll()`` on the socket plus an eventfd: ``close()`` (or ``interrupt()``)
signals the eventfd, so a thread blocked in a receive returns at once instead of hanging on a
descriptor another thread closed. The descriptors themselves are released only when the last
operation in flight has left, so a concurrent close can never make an operation touch a reused
descriptor number.
"""
import socket as _socket

cimport cython
from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport (EAGAIN, EBADF, ENOBUFS, EINTR, EINVAL, EIO, EMSGSIZE, ENOMEM, EPERM, ETIMEDOUT,
                         errno)
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset, strerror

__all__ = ["Channel", "SendBatch", "RecvBatch", "GSO_MAX_SEGMENTS", "GRO_BUFFER_SIZE",
           "POLLIN", "POLLOUT", "address_to_sockaddr", "sockaddr_to_address"]


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


cdef extern from *:
    """
    #include <pthread.h>
    #include <time.h>
    static inline int udt_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void udt_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int udt_atomic_add(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
    static inline int udt_atomic_claim(int *p) {
        int expected = 0;
        return __atomic_compare_exchange_n(p, &expected, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    static inline long long udt_monotonic_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
    }
    static inline void *udt_mutex_new(void) {
        pthread_mutex_t *m = (pthread_mutex_t *)malloc(sizeof(pthread_mutex_t));
        if (m) pthread_mutex_init(m, NULL);
        return m;
    }
    static inline void udt_mutex_free(void *m) {
        if (m) { pthread_mutex_destroy((pthread_mutex_t *)m); free(m); }
    }
    static inline void udt_mutex_lock(void *m) { pthread_mutex_lock((pthread_mutex_t *)m); }
    static inline void udt_mutex_unlock(void *m) { pthread_mutex_unlock((pthread_mutex_t *)m); }
    """
    int udt_atomic_load(int* p) nogil
    void udt_atomic_store(int* p, int v) nogil
    int udt_atomic_add(int* p, int v) nogil
    int udt_atomic_claim(int* p) nogil
    long long udt_monotonic_us() nogil
    void* udt_mutex_new() nogil
    void udt_mutex_free(void* m) nogil
    void udt_mutex_lock(void* m) nogil
    void udt_mutex_unlock(void* m) nogil


POLLIN = C_POLLIN
POLLOUT = C_POLLOUT

cdef enum:
    # Room for the UDP_GRO cmsg plus what other enabled options (packet info, timestamps) add.
    GRO_CONTROL_SPACE = 256
    DEFAULT_SEND_DATAGRAMS = 1024
    PY_SCATTER_ON_STACK = 16


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

cdef object raise_errno(int error):
    """Raise the OSError subclass the socket module would raise for ``error``."""
    if error == ETIMEDOUT:
        raise TimeoutError("timed out")
    raise OSError(error, strerror(error).decode("utf-8", "replace"))


cdef inline int check(int result) except -1:
    """Turn a ``-errno`` result into an exception; pass non-negative results through."""
    if result < 0:
        raise_errno(-result)
    return result


# ---------------------------------------------------------------------------------------------
# addresses
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# batch structures
# ---------------------------------------------------------------------------------------------

cdef CSendBatch* send_batch_new(int max_datagrams, int max_iovecs) noexcept nogil:
    """A send batch for up to ``max_datagrams`` datagrams built from ``max_iovecs`` iovecs."""
    cdef CSendBatch* batch
    if max_datagrams <= 0 or max_iovecs < max_datagrams:
        return NULL
    batch = <CSendBatch*>calloc(1, sizeof(CSendBatch))
    if batch == NULL:
        return NULL
    batch.max_datagrams = max_datagrams
    batch.max_iovecs = max_iovecs
    batch.iov = <iovec*>calloc(max_iovecs, sizeof(iovec))
    batch.first_iov = <int*>calloc(max_datagrams + 1, sizeof(int))
    batch.length = <uint32_t*>calloc(max_datagrams, sizeof(uint32_t))
    batch.messages = <mmsghdr*>calloc(max_datagrams, sizeof(mmsghdr))
    batch.message_datagrams = <int*>calloc(max_datagrams, sizeof(int))
    batch.control = <char*>calloc(max_datagrams, CMSG_SPACE(sizeof(uint16_t)))
    if (batch.iov == NULL or batch.first_iov == NULL or batch.length == NULL
            or batch.messages == NULL or batch.message_datagrams == NULL or batch.control == NULL):
        send_batch_free(batch)
        return NULL
    send_batch_clear(batch)
    return batch


cdef void send_batch_free(CSendBatch* batch) noexcept nogil:
    if batch == NULL:
        return
    free(batch.iov)
    free(batch.first_iov)
    free(batch.length)
    free(batch.messages)
    free(batch.message_datagrams)
    free(batch.control)
    free(batch)


cdef CRecvBatch* recv_batch_new(int slots, size_t slot_size, int max_datagrams) noexcept nogil:
    """``slots`` receive buffers of ``slot_size`` bytes (GRO needs GRO_BUFFER_SIZE) delivering at
    most ``max_datagrams`` datagrams per receive (0: every datagram a full GRO buffer can hold;
    never fewer than ``slots``; what does not fit stays pending for the next receive)."""
    cdef CRecvBatch* batch
    cdef int i
    if slots <= 0 or slot_size == 0:
        return NULL
    batch = <CRecvBatch*>calloc(1, sizeof(CRecvBatch))
    if batch == NULL:
        return NULL
    batch.slots = slots
    batch.slot_size = slot_size
    batch.control_size = GRO_CONTROL_SPACE
    if max_datagrams <= 0:
        max_datagrams = slots * (GRO_MAX_SEGMENTS if slot_size >= GRO_BUFFER_SIZE else 1)
    elif max_datagrams < slots:
        max_datagrams = slots                  # every receive buffer needs an entry at least
    batch.max_datagrams = max_datagrams
    batch.area = <char*>malloc(slots * slot_size)
    batch.messages = <mmsghdr*>calloc(slots, sizeof(mmsghdr))
    batch.iov = <iovec*>calloc(slots, sizeof(iovec))
    batch.sources = <sockaddr_storage*>calloc(slots, sizeof(sockaddr_storage))
    batch.control = <char*>calloc(slots, batch.control_size)
    batch.data = <char**>calloc(batch.max_datagrams, sizeof(char*))
    batch.length = <uint32_t*>calloc(batch.max_datagrams, sizeof(uint32_t))
    batch.source_slot = <int*>calloc(batch.max_datagrams, sizeof(int))
    if (batch.area == NULL or batch.messages == NULL or batch.iov == NULL
            or batch.sources == NULL or batch.control == NULL or batch.data == NULL
            or batch.length == NULL or batch.source_slot == NULL):
        recv_batch_free(batch)
        return NULL
    for i in range(slots):
        batch.iov[i].iov_base = batch.area + <size_t>i * slot_size
        batch.messages[i].msg_hdr.msg_iov = &batch.iov[i]
        batch.messages[i].msg_hdr.msg_iovlen = 1
        batch.messages[i].msg_hdr.msg_name = &batch.sources[i]
        batch.messages[i].msg_hdr.msg_control = batch.control + <size_t>i * batch.control_size
    return batch


cdef void recv_batch_free(CRecvBatch* batch) noexcept nogil:
    if batch == NULL:
        return
    free(batch.area)
    free(batch.messages)
    free(batch.iov)
    free(batch.sources)
    free(batch.control)
    free(batch.data)
    free(batch.length)
    free(batch.source_slot)
    free(batch)


cdef inline int _gro_segment_size(msghdr* header) noexcept nogil:
    """The UDP_GRO segment size the kernel attached to a message, 0 when it is one datagram."""
    cdef cmsghdr* cmsg = CMSG_FIRSTHDR(header)
    cdef int size = 0
    while cmsg != NULL:
        if cmsg.cmsg_level == SOL_UDP and cmsg.cmsg_type == UDP_GRO:
            memcpy(&size, CMSG_DATA(cmsg), sizeof(int))
            return size
        cmsg = CMSG_NXTHDR(header, cmsg)
    return 0


cdef void _recv_batch_split(CRecvBatch* batch) noexcept nogil:
    """Cut the received messages into datagrams until the output arrays are full."""
    cdef int k, segment
    cdef uint32_t total, offset
    cdef msghdr* header
    batch.count = 0
    k = batch.pending_message
    offset = batch.pending_offset
    while k < batch.pending_messages:
        header = &batch.messages[k].msg_hdr
        total = batch.messages[k].msg_len
        if header.msg_flags & MSG_TRUNC:
            batch.truncated += 1             # longer than a slot: its tail is gone, drop it
            k += 1
            offset = 0
            continue
        segment = _gro_segment_size(header)
        if segment <= 0 or <uint32_t>segment >= total:
            segment = total
        if total == 0:                         # an empty datagram is still one datagram
            if batch.count == batch.max_datagrams:
                break
            batch.data[batch.count] = <char*>batch.iov[k].iov_base
            batch.length[batch.count] = 0
            batch.source_slot[batch.count] = k
            batch.count += 1
            k += 1
            continue
        while offset < total:
            if batch.count == batch.max_datagrams:
                batch.pending_message = k
                batch.pending_offset = offset
                return
            batch.data[batch.count] = <char*>batch.iov[k].iov_base + offset
            batch.length[batch.count] = segment if offset + segment <= total else total - offset
            batch.source_slot[batch.count] = k
            batch.count += 1
            offset += segment
        k += 1
        offset = 0
    batch.pending_message = k
    batch.pending_offset = offset


cdef class SendBatch:
    """Datagrams queued for one destination, sent by :meth:`Channel.send_batch` in one call.

    Buffers are referenced, not copied: each added object stays alive (and, for a bytearray,
    unresizable) until :meth:`clear`. A datagram may be several buffers (header + payload).
    """

    def __cinit__(self, int max_datagrams=DEFAULT_SEND_DATAGRAMS, max_iovecs=None):
        cdef int iovecs = max_datagrams * 2 if max_iovecs is None else max_iovecs
        if max_datagrams <= 0:
            raise ValueError("max_datagrams must be positive")
        if iovecs < max_datagrams:
            raise ValueError("max_iovecs must be at least max_datagrams")
        self.c = send_batch_new(max_datagrams, iovecs)
        if self.c == NULL:
            raise MemoryError()
        self._views = calloc(iovecs, sizeof(Py_buffer))
        if self._views == NULL:
            raise MemoryError()
        self._view_capacity = iovecs
        self._view_count = 0
        self._keep = []

    def __dealloc__(self):
        self._release_views()
        free(self._views)
        send_batch_free(self.c)

    cdef void _release_views(self) noexcept:
        cdef Py_buffer* views = <Py_buffer*>self._views
        cdef int i
        for i in range(self._view_count):
            PyBuffer_Release(&views[i])
        self._view_count = 0

    def add(self, data) -> None:
        """Queue one datagram: a bytes-like, or a sequence of bytes-likes sent back to back."""
        cdef Py_buffer* views = <Py_buffer*>self._views
        cdef int first_view = self._view_count
        cdef int pieces, i
        cdef size_t total = 0
        cdef CSendBatch* c = self.c
        parts = (data,) if PyObject_CheckBuffer(data) else tuple(data)
        pieces = len(parts)
        if pieces == 0:
            raise ValueError("a datagram needs at least one buffer")
        if c.count >= c.max_datagrams or c.iov_count + pieces > c.max_iovecs:
            raise_errno(ENOBUFS)  # the batch is full
        try:
            for i in range(pieces):
                PyObject_GetBuffer(parts[i], &views[self._view_count], PyBUF_SIMPLE)
                self._view_count += 1
        except BaseException:
            while self._view_count > first_view:      # not a bytes-like: undo this datagram
                self._view_count -= 1
                PyBuffer_Release(&views[self._view_count])
            raise
        for i in range(pieces):
            c.iov[c.iov_count + i].iov_base = views[first_view + i].buf
            c.iov[c.iov_count + i].iov_len = views[first_view + i].len
            total += views[first_view + i].len
        c.iov_count += pieces
        c.length[c.count] = <uint32_t>total
        c.count += 1
        c.first_iov[c.count] = c.iov_count
        self._keep.append(parts)

    def clear(self) -> None:
        """Forget every queued datagram and release their buffers."""
        self._release_views()
        self._keep.clear()
        send_batch_clear(self.c)

    def rewind(self) -> None:
        """Mark every queued datagram unsent again, so the same batch can be sent once more."""
        self.c.done = 0

    def __len__(self) -> int:
        return self.c.count

    @property
    def pending(self) -> int:
        """Datagrams queued but not yet handed to the kernel."""
        return self.c.count - self.c.done

    @property
    def capacity(self) -> int:
        return self.c.max_datagrams


cdef class RecvBatch:
    """A reusable receive area: ``slots`` buffers of ``slot_size`` bytes (64 KiB for GRO).

    After :meth:`Channel.recv_batch` it holds ``len(batch)`` datagrams, valid until the next
    receive into it; ``batch[i]`` is ``(bytes, address)``.
    """

    def __cinit__(self, int slots=64, size_t slot_size=GRO_BUFFER_SIZE, int max_datagrams=0):
        # max_datagrams: the most datagrams one receive delivers (0: all a GRO buffer can hold).
        if slots <= 0:
            raise ValueError("slots must be positive")
        if slot_size == 0 or slot_size > GRO_BUFFER_SIZE:
            raise ValueError(f"slot_size must be 1-{GRO_BUFFER_SIZE}")
        if max_datagrams < 0:
            raise ValueError("max_datagrams must be positive (or 0 for the default)")
        self.c = recv_batch_new(slots, slot_size, max_datagrams)
        if self.c == NULL:
            raise MemoryError()

    def __dealloc__(self):
        recv_batch_free(self.c)

    def __len__(self) -> int:
        return self.c.count

    def __getitem__(self, int index):
        if index < 0:
            index += self.c.count
        if not 0 <= index < self.c.count:
            raise IndexError("datagram index out of range")
        return (PyBytes_FromStringAndSize(self.c.data[index], self.c.length[index]),
                address_from_sockaddr(recv_batch_source(self.c, index),
                                      recv_batch_source_length(self.c, index)))

    def length(self, int index) -> int:
        if not 0 <= index < self.c.count:
            raise IndexError("datagram index out of range")
        return self.c.length[index]

    @property
    def nbytes(self) -> int:
        """Total payload bytes of the datagrams now in the batch."""
        cdef int i
        cdef size_t total = 0
        for i in range(self.c.count):
            total += self.c.length[i]
        return total

    @property
    def truncated(self) -> int:
        """Datagrams dropped so far because they did not fit one slot."""
        return self.c.truncated

    @property
    def has_pending(self) -> bool:
        """Datagrams already received but not yet delivered (the next receive returns them)."""
        return self.c.pending_message < self.c.pending_messages

    @property
    def slots(self) -> int:
        return self.c.slots

    @property
    def slot_size(self) -> int:
        return self.c.slot_size


# ---------------------------------------------------------------------------------------------
# the channel
# ---------------------------------------------------------------------------------------------

cdef inline int64_t _timeout_us(object timeout) except? -2:
    """Seconds (None = forever) to microseconds (-1 = forever), validated like socket.settimeout."""
    cdef double seconds
    if timeout is None:
        return -1
    seconds = timeout
    if seconds != seconds or seconds < 0:
        raise ValueError("timeout must be a non-negative number or None")
    if seconds > 2000000.0:  # ~23 days: beyond that, waiting forever is what was meant
        return -1
    if seconds == 0:
        return 0
    return max(<int64_t>(seconds * 1e6 + 0.5), 1)   # a positive timeout never means "don't wait"


cdef inline int _set_int_option(int fd, int level, int option, int value) noexcept nogil:
    if setsockopt(fd, level, option, &value, sizeof(int)) != 0:
        return -errno
    return 0


cdef inline int _get_int_option(int fd, int level, int option, int* value) noexcept nogil:
    cdef socklen_t length = sizeof(int)
    if getsockopt(fd, level, option, value, &length) != 0:
        return -errno
    return 0


cdef class Channel:
    """One UDP socket with batched, GIL-free I/O (see the module docstring).

    ``gso``/``gro`` turn the offloads off even where the kernel has them; ``rcvbuf``/``sndbuf``
    ask for socket buffers of that many bytes (forced past the sysctl limits when permitted).
    """

    def __cinit__(self, *args, **kwargs):
        self.fd = -1
        self.wake_fd = -1
        self._closed = 1        # until a socket is set up, everything answers EBADF
        self._released = 1
        self._rx_lock = udt_mutex_new()
        if self._rx_lock == NULL:
            raise MemoryError()

    def __init__(self, int family=AF_INET, *, bint reuse_addr=False, bint reuse_port=False,
                 bint gso=True, bint gro=True, rcvbuf=None, sndbuf=None):
        cdef int fd
        if self.fd != -1 or not self._released:
            raise RuntimeError("Channel is already initialised")
        if family != AF_INET and family != AF_INET6:
            raise ValueError(f"family must be AF_INET or AF_INET6, not {family}")
        fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP)
        if fd < 0:
            raise_errno(errno)
        self._setup(fd, family, reuse_addr, reuse_port, gso, gro, rcvbuf, sndbuf)

    @classmethod
    def adopt(cls, sock, *, bint reuse_addr=False, bint reuse_port=False, bint gso=True,
              bint gro=True, rcvbuf=None, sndbuf=None):
        """Take over an existing UDP socket (it is detached: ``sock`` no longer owns the fd)."""
        cdef int fd, kind = 0, protocol = 0, domain = 0
        cdef Channel channel
        if not isinstance(sock, _socket.socket):
            raise TypeError(f"adopt() needs a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise_errno(EBADF)
        check(_get_int_option(fd, SOL_SOCKET, SO_TYPE, &kind))
        check(_get_int_option(fd, SOL_SOCKET, SO_PROTOCOL, &protocol))
        check(_get_int_option(fd, SOL_SOCKET, SO_DOMAIN, &domain))
        if kind != SOCK_DGRAM or protocol != IPPROTO_UDP or (domain != AF_INET
                                                             and domain != AF_INET6):
            raise ValueError(f"adopt() needs an AF_INET/AF_INET6 UDP socket, not {sock!r}")
        channel = cls.__new__(cls)
        channel._setup(sock.detach(), domain, reuse_addr, reuse_port, gso, gro, rcvbuf, sndbuf)
        return channel

    cdef _setup(self, int fd, int family, bint reuse_addr, bint reuse_port, bint gso, bint gro,
                object rcvbuf, object sndbuf):
        cdef int value = 0
        self.fd = fd
        self.family = family
        self.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.wake_fd < 0:
            value = errno
            close(fd)
            self.fd = -1
            raise_errno(value)
        self._users = 0
        self._closed = 0
        self._released = 0
        self._max_payload = MAX_UDP_PAYLOAD_V4 if family == AF_INET else MAX_UDP_PAYLOAD_V6
        self._gso_segment_limit = self._max_payload
        try:
            if reuse_addr:
                check(_set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1))
            if reuse_port:
                check(_set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1))
            # Offloads are probed on this very socket: the option exists or it does not.
            self._gso_supported = _get_int_option(fd, SOL_UDP, UDP_SEGMENT, &value) == 0
            self._gro_supported = _get_int_option(fd, SOL_UDP, UDP_GRO, &value) == 0
            self._gso = gso and self._gso_supported
            self._gro = False
            if gro and self._gro_supported:
                self._gro = _set_int_option(fd, SOL_UDP, UDP_GRO, 1) == 0
            if rcvbuf is not None:
                self.rcvbuf = rcvbuf
            if sndbuf is not None:
                self.sndbuf = sndbuf
        except BaseException:
            self.close()
            raise

    def __dealloc__(self):
        if udt_atomic_claim(&self._released):
            self._close_descriptors()
        udt_mutex_free(self._rx_lock)

    cdef void _close_descriptors(self) noexcept nogil:
        if self.fd >= 0:
            close(self.fd)
        if self.wake_fd >= 0:
            close(self.wake_fd)

    # ---- lifetime (usable without the GIL) ----

    cdef int c_acquire(self) noexcept nogil:
        """Register an operation; -EBADF once the channel is closed."""
        udt_atomic_add(&self._users, 1)
        if udt_atomic_load(&self._closed):
            self.c_release()
            return -EBADF
        return 0

    cdef void c_release(self) noexcept nogil:
        if udt_atomic_add(&self._users, -1) == 0 and udt_atomic_load(&self._closed):
            if udt_atomic_claim(&self._released):
                self._close_descriptors()

    cdef int c_interrupt(self) noexcept nogil:
        """Wake one round of waiters (they return -EINTR); the channel stays open."""
        cdef uint64_t one = 1
        cdef int result = self.c_acquire()
        if result < 0:
            return result
        if write(self.wake_fd, &one, sizeof(one)) < 0 and errno != EAGAIN:
            result = -errno
        self.c_release()
        return result

    cdef int _wait(self, short events, long long deadline_us) noexcept nogil:
        """poll() the socket and the wake eventfd until ``events``, the deadline (-1 = none),
        a close (-EBADF) or an interrupt (-EINTR). The caller holds an acquire."""
        cdef pollfd fds[2]
        cdef int timeout_ms, ready
        cdef long long remaining
        cdef uint64_t drained
        while True:
            if deadline_us < 0:
                timeout_ms = -1
            else:
                remaining = deadline_us - udt_monotonic_us()
                if remaining <= 0:
                    timeout_ms = 0
                else:
                    timeout_ms = <int>((remaining + 999) // 1000)
            fds[0].fd = self.fd
            fds[0].events = events
            fds[0].revents = 0
            fds[1].fd = self.wake_fd
            fds[1].events = C_POLLIN
            fds[1].revents = 0
            ready = poll(fds, 2, timeout_ms)
            if ready < 0:
                if errno == EINTR:
                    continue
                return -errno
            if udt_atomic_load(&self._closed):
                return -EBADF
            if fds[1].revents:
                read(self.wake_fd, &drained, sizeof(drained))
                return -EINTR
            if fds[0].revents:
                return fds[0].revents
            if timeout_ms == 0:
                return -ETIMEDOUT

    cdef int c_wait(self, short events, int64_t timeout_us) noexcept nogil:
        """Wait for ``events`` on the socket: revents, or -ETIMEDOUT, -EBADF, -EINTR."""
        cdef int result = self.c_acquire()
        if result < 0:
            return result
        result = self._wait(events, -1 if timeout_us < 0 else udt_monotonic_us() + timeout_us)
        self.c_release()
        return result

    # ---- batch I/O (no GIL) ----

    cdef int _plan_messages(self, CSendBatch* batch, bint use_gso) noexcept nogil:
        """Group the unsent datagrams into messages: runs of equal-size segments under one
        UDP_SEGMENT cmsg (the last of a run may be shorter) when ``use_gso``, else one each."""
        cdef int i = batch.done, j, k = 0
        cdef uint32_t segment, total
        cdef mmsghdr* message
        cdef cmsghdr* cmsg
        cdef uint16_t gso_size
        cdef size_t control_space = CMSG_SPACE(sizeof(uint16_t))
        while i < batch.count:
            message = &batch.messages[k]
            message.msg_hdr.msg_name = &batch.address if batch.address_length else NULL
            message.msg_hdr.msg_namelen = batch.address_length
            message.msg_hdr.msg_control = NULL
            message.msg_hdr.msg_controllen = 0
            message.msg_hdr.msg_flags = 0
            j = i + 1
            segment = batch.length[i]
            if use_gso and 0 < segment <= self._gso_segment_limit:
                total = segment
                while (j < batch.count and j - i < GSO_MAX_SEGMENTS
                       and batch.length[j - 1] == segment and 0 < batch.length[j] <= segment
                       and total + batch.length[j] <= <uint32_t>self._max_payload
                       and batch.first_iov[j + 1] - batch.first_iov[i] <= MAX_IOVECS_PER_MESSAGE):
                    total += batch.length[j]
                    j += 1
                if j - i > 1:
                    message.msg_hdr.msg_control = batch.control + <size_t>k * control_space
                    message.msg_hdr.msg_controllen = control_space
                    cmsg = CMSG_FIRSTHDR(&message.msg_hdr)
                    cmsg.cmsg_level = SOL_UDP
                    cmsg.cmsg_type = UDP_SEGMENT
                    cmsg.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                    gso_size = <uint16_t>segment
                    memcpy(CMSG_DATA(cmsg), &gso_size, sizeof(uint16_t))
            message.msg_hdr.msg_iov = &batch.iov[batch.first_iov[i]]
            message.msg_hdr.msg_iovlen = batch.first_iov[j] - batch.first_iov[i]
            batch.message_datagrams[k] = j - i
            k += 1
            i = j
        return k

    cdef int c_send_batch(self, CSendBatch* batch, int64_t timeout_us) noexcept nogil:
        """Send the batch's unsent datagrams (GSO runs in one sendmmsg when enabled).

        Returns how many datagrams this call handed to the kernel; ``batch.done`` records the
        progress, so a partial send can be resumed. With nothing sent: -errno (-EAGAIN when the
        buffer is full and timeout_us is 0, -ETIMEDOUT on expiry, -EBADF once closed).
        """
        cdef int result, messages, first = 0, sent, t, error
        cdef int start = batch.done
        cdef bint use_gso = self._gso
        cdef uint32_t suspect_segment = 0
        cdef long long deadline = -1 if timeout_us < 0 else udt_monotonic_us() + timeout_us
        if batch.done >= batch.count:
            return 0
        result = self.c_acquire()
        if result < 0:
            return result
        messages = self._plan_messages(batch, use_gso)
        while first < messages:
            sent = sendmmsg(self.fd, &batch.messages[first], messages - first, MSG_DONTWAIT)
            if sent > 0:
                for t in range(first, first + sent):
                    batch.done += batch.message_datagrams[t]
                first += sent
                if suspect_segment and suspect_segment <= self._gso_segment_limit:
                    self._gso_segment_limit = suspect_segment - 1
                suspect_segment = 0
                continue
            error = errno
            if error == EINTR:
                continue
            if error == EAGAIN:
                if timeout_us == 0:
                    result = -EAGAIN
                    break
                result = self._wait(C_POLLOUT, deadline)
                if result < 0:
                    break
                continue
            if use_gso and batch.message_datagrams[first] > 1 and (
                    error == EIO or error == EINVAL or error == EMSGSIZE):
                # The path cannot segment this run. EIO: the device has no checksum offload (older
                # kernels), so GSO is off for good. EMSGSIZE or EINVAL: a segment above the path
                # MTU (GSO never fragments; the run itself is within the UDP limits); if the same
                # datagrams then go out one by one (fragmented), GSO stops for segments this large.
                if error == EIO:
                    self._gso = False
                else:
                    suspect_segment = batch.length[batch.done]
                use_gso = False
                messages = self._plan_messages(batch, False)
                first = 0
                continue
            result = -error
            break
        self.c_release()
        if batch.done > start:
            return batch.done - start
        return result

    cdef int c_recv_batch(self, CRecvBatch* batch, int64_t timeout_us) noexcept nogil:
        """Receive into the batch: the number of datagrams (GRO buffers split), or -errno
        (-EAGAIN when timeout_us is 0 and nothing waits, -ETIMEDOUT, -EBADF, -EINTR)."""
        cdef int result, received, i
        cdef long long deadline
        if batch.pending_message < batch.pending_messages:
            _recv_batch_split(batch)           # the rest of the previous receive comes first
            if batch.count > 0:
                return batch.count
        if self._gro and batch.slot_size < GRO_BUFFER_SIZE:
            return -EINVAL                     # a GRO buffer would not fit: data would be lost
        result = self.c_acquire()
        if result < 0:
            return result
        deadline = -1 if timeout_us < 0 else udt_monotonic_us() + timeout_us
        while True:
            for i in range(batch.slots):
                batch.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                batch.messages[i].msg_hdr.msg_controllen = batch.control_size
                batch.messages[i].msg_hdr.msg_flags = 0
                batch.iov[i].iov_len = batch.slot_size
            received = recvmmsg(self.fd, batch.messages, batch.slots, MSG_DONTWAIT, NULL)
            if received > 0:
                batch.pending_message = 0
                batch.pending_messages = received
                batch.pending_offset = 0
                _recv_batch_split(batch)
                if batch.count > 0:
                    break
                continue                       # every message was dropped (truncated): again
            result = errno
            if received == 0:                  # cannot happen for UDP; never spin on it
                result = EAGAIN
            if result == EINTR:
                continue
            if result != EAGAIN:
                self.c_release()
                return -result
            if timeout_us == 0:
                self.c_release()
                return -EAGAIN
            result = self._wait(C_POLLIN, deadline)
            if result < 0:
                self.c_release()
                return result
        self.c_release()
        return batch.count

    # ---- Python API ----

    @property
    def closed(self) -> bool:
        return udt_atomic_load(&self._closed) != 0

    def fileno(self) -> int:
        """The socket's descriptor, -1 once closed (as socket.socket)."""
        return -1 if udt_atomic_load(&self._closed) else self.fd

    @property
    def gso_supported(self) -> bool:
        """The kernel has UDP_SEGMENT for this socket."""
        return self._gso_supported

    @property
    def gro_supported(self) -> bool:
        """The kernel has UDP_GRO for this socket."""
        return self._gro_supported

    @property
    def gso_enabled(self) -> bool:
        """Batches are sent as GSO runs (supported, asked for, and not disabled by an EIO)."""
        return self._gso

    @property
    def gso_segment_limit(self) -> int:
        """The largest segment sent with GSO: lowered when the path refused a larger one."""
        return self._gso_segment_limit

    @property
    def gro_enabled(self) -> bool:
        """UDP_GRO is on: receives may bring several datagrams in one buffer (split here)."""
        return self._gro

    def close(self) -> None:
        """Close the socket (idempotent); a thread waiting in a receive or poll wakes with EBADF."""
        cdef uint64_t one = 1
        if udt_atomic_load(&self._closed):
            return
        udt_atomic_add(&self._users, 1)       # keep the descriptors while signalling
        udt_atomic_store(&self._closed, 1)
        if self.wake_fd >= 0:
            write(self.wake_fd, &one, sizeof(one))
        self.c_release()

    def interrupt(self) -> None:
        """Make one current wait in another thread return early (the channel stays open)."""
        check(self.c_interrupt())

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        family = "AF_INET" if self.family == AF_INET else "AF_INET6"
        return f"<udt._net.Channel {state} family={family} gso={self._gso} gro={self._gro}>"

    cdef _sockaddr_call(self, object address, int which):
        cdef sockaddr_storage storage
        cdef socklen_t length = 0
        cdef int result
        if address is not None:
            sockaddr_from_address(address, self.family, &storage, &length)
        check(self.c_acquire())
        with nogil:
            if which == 0:
                result = bind(self.fd, <sockaddr*>&storage, length)
            else:
                result = connect(self.fd, <sockaddr*>&storage, length)
            if result != 0:
                result = -errno
        self.c_release()
        check(result)

    def bind(self, address) -> None:
        self._sockaddr_call(address, 0)

    def connect(self, address) -> None:
        """Fix the peer: sends go there by default and datagrams from others are filtered."""
        self._sockaddr_call(address, 1)

    def disconnect(self) -> None:
        """Drop the connected peer (connect to AF_UNSPEC); the local binding stays."""
        cdef sockaddr_storage storage
        cdef int result
        memset(&storage, 0, sizeof(storage))
        storage.ss_family = AF_UNSPEC
        check(self.c_acquire())
        result = connect(self.fd, <sockaddr*>&storage, sizeof(sockaddr))
        if result != 0:
            result = -errno
        self.c_release()
        check(result)

    cdef _name(self, bint peer):
        cdef sockaddr_storage storage
        cdef socklen_t length = sizeof(storage)
        cdef int result
        check(self.c_acquire())
        if peer:
            result = getpeername(self.fd, <sockaddr*>&storage, &length)
        else:
            result = getsockname(self.fd, <sockaddr*>&storage, &length)
        if result != 0:
            result = -errno
        self.c_release()
        check(result)
        return address_from_sockaddr(<sockaddr*>&storage, length)

    def getsockname(self):
        return self._name(False)

    def getpeername(self):
        """The connected peer; OSError(ENOTCONN) when there is none."""
        return self._name(True)

    cdef int _destination(self, object address, socklen_t* length) except -1:
        """Point at the sockaddr for ``address`` (cached across calls with the same tuple)."""
        if address is None:
            length[0] = 0
            return 0
        if address is not self._last_address and address != self._last_address:
            sockaddr_from_address(address, self.family, &self._last_sockaddr,
                                  &self._last_sockaddr_length)
            self._last_address = address
        length[0] = self._last_sockaddr_length
        return 0

    def sendto(self, data, address=None, *, timeout=None) -> int:
        """Send one datagram (a bytes-like, or a sequence of them gathered into one datagram).

        ``address`` None sends to the connected peer (OSError EDESTADDRREQ when there is none).
        Waits for buffer space up to ``timeout`` seconds (None: as long as it takes).
        """
        cdef Py_buffer views_on_stack[PY_SCATTER_ON_STACK]
        cdef iovec iov_on_stack[PY_SCATTER_ON_STACK]
        cdef Py_buffer* views = views_on_stack
        cdef iovec* iov = iov_on_stack
        cdef int pieces = 1, held = 0, i, result = 0
        cdef msghdr header
        cdef sockaddr_storage destination
        cdef socklen_t destination_length = 0
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef long long deadline
        cdef ssize_t sent = 0
        if address is not None:
            self._destination(address, &destination_length)
            memcpy(&destination, &self._last_sockaddr, destination_length)
        if PyObject_CheckBuffer(data):
            parts = None
        else:
            parts = tuple(data)
            pieces = len(parts)
            if pieces > MAX_IOVECS_PER_MESSAGE:
                raise ValueError(f"at most {MAX_IOVECS_PER_MESSAGE} buffers per datagram")
            if pieces > PY_SCATTER_ON_STACK:
                views = <Py_buffer*>malloc(pieces * sizeof(Py_buffer))
                iov = <iovec*>malloc(pieces * sizeof(iovec))
                if views == NULL or iov == NULL:
                    free(views)
                    free(iov)
                    raise MemoryError()
        try:
            for i in range(pieces):
                PyObject_GetBuffer(data if parts is None else parts[i], &views[i], PyBUF_SIMPLE)
                held += 1
                iov[i].iov_base = views[i].buf
                iov[i].iov_len = views[i].len
            memset(&header, 0, sizeof(header))
            header.msg_name = &destination if destination_length else NULL
            header.msg_namelen = destination_length
            header.msg_iov = iov
            header.msg_iovlen = pieces
            check(self.c_acquire())
            with nogil:
                deadline = -1 if wait_us < 0 else udt_monotonic_us() + wait_us
                while True:
                    if pieces == 1:     # sendto(2) skips the msghdr/iovec import of sendmsg
                        sent = sendto(self.fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT,
                                      <sockaddr*>header.msg_name, header.msg_namelen)
                    else:
                        sent = sendmsg(self.fd, &header, MSG_DONTWAIT)
                    if sent >= 0:
                        break
                    result = errno
                    if result == EINTR:
                        continue
                    if result != EAGAIN:
                        result = -result
                        break
                    if wait_us == 0:
                        result = -EAGAIN
                        break
                    result = self._wait(C_POLLOUT, deadline)
                    if result < 0 and result != -EINTR:
                        break
                self.c_release()
            if sent < 0:
                check(result)
            return sent
        finally:
            for i in range(held):
                PyBuffer_Release(&views[i])
            if views != views_on_stack:
                free(views)
                free(iov)

    cdef object _source_tuple(self, const sockaddr* addr, socklen_t length):
        """The sender's address tuple, reusing the last one when the same peer sends again."""
        if (self._last_source is not None and length == self._last_source_length
                and memcmp(addr, &self._last_source_sockaddr, length) == 0):
            return self._last_source
        result = address_from_sockaddr(addr, length)
        if length <= sizeof(sockaddr_storage):
            memcpy(&self._last_source_sockaddr, addr, length)
            self._last_source_length = length
            self._last_source = result
        return result

    def recvfrom_into(self, buffer, timeout=None):
        """Receive one datagram into ``buffer``: ``(nbytes, address)``; a longer datagram is
        cut to the buffer, as socket.recvfrom_into.

        ``timeout`` 0 never waits (BlockingIOError), a positive one raises TimeoutError on
        expiry, None waits for ever; a close from another thread ends the wait with EBADF.
        """
        cdef Py_buffer view
        cdef sockaddr_storage source
        cdef socklen_t source_length = sizeof(source)
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef long long deadline
        cdef ssize_t received = -1
        cdef int result = 0
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if self._gro or self._rx_has_datagrams():
                return self._recvfrom_gro(&view, wait_us)
            check(self.c_acquire())
            with nogil:
                deadline = -1 if wait_us < 0 else udt_monotonic_us() + wait_us
                while True:
                    received = recvfrom(self.fd, view.buf, view.len, MSG_DONTWAIT,
                                        <sockaddr*>&source, &source_length)
                    if received >= 0:
                        break
                    result = errno
                    if result == EINTR:
                        continue
                    if result != EAGAIN:
                        result = -result
                        break
                    if wait_us == 0:
                        result = -EAGAIN
                        break
                    result = self._wait(C_POLLIN, deadline)
                    if result < 0 and result != -EINTR:
                        break
                self.c_release()
            if received < 0:
                check(result)
            return received, self._source_tuple(<sockaddr*>&source, source_length)
        finally:
            PyBuffer_Release(&view)

    cdef object _recvfrom_gro(self, Py_buffer* view, int64_t wait_us):
        """recvfrom_into on a GRO socket: a buffer may hold several datagrams, so receive into the
        shared GRO batch and hand them out one per call."""
        cdef CRecvBatch* rx
        cdef int result = 0, index = 0
        cdef size_t length
        cdef sockaddr_storage source
        cdef socklen_t source_length = 0
        rx = self._shared_rx()
        with nogil:
            udt_mutex_lock(self._rx_lock)
            while self._rx_next >= rx.count:
                result = self.c_recv_batch(rx, wait_us)
                if result == -EINTR:
                    continue
                if result < 0:
                    break
                self._rx_next = 0
            if self._rx_next < rx.count:
                index = self._rx_next
                self._rx_next += 1
                length = rx.length[index]
                if length > <size_t>view.len:
                    length = view.len
                memcpy(view.buf, rx.data[index], length)
                source_length = recv_batch_source_length(rx, index)
                memcpy(&source, recv_batch_source(rx, index), source_length)
                result = <int>length
            udt_mutex_unlock(self._rx_lock)
        check(result)
        return result, self._source_tuple(<sockaddr*>&source, source_length)

    def poll(self, short events=C_POLLIN, timeout=None) -> int:
        """Wait until the socket is ready for ``events``: the poll revents, 0 on expiry or
        interrupt; OSError(EBADF) when closed before or during the wait."""
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef int result
        if (events & C_POLLIN) and self._rx_has_datagrams():
            return C_POLLIN                    # datagrams already split from a GRO buffer
        with nogil:
            result = self.c_wait(events, wait_us)
        if result == -ETIMEDOUT or result == -EINTR:
            return 0
        return check(result)

    def send_batch(self, datagrams, address=None, timeout=None) -> int:
        """Send many datagrams to one destination in as few system calls as the kernel allows.

        ``datagrams`` is a :class:`SendBatch` (resumed from where it stopped) or an iterable
        of datagrams (each a bytes-like or a sequence of them). Returns how many were sent:
        all of them, unless the timeout expired or an error stopped the batch part way (the
        error is then raised by the next call). Raises when nothing could be sent.
        """
        cdef SendBatch batch
        cdef CSendBatch* c
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef int result, total = 0
        cdef socklen_t length = 0
        if isinstance(datagrams, SendBatch):
            batch = <SendBatch>datagrams
        else:
            items = list(datagrams)
            batch = SendBatch(max(1, len(items)), max(1, len(items)) * 2)
            for item in items:
                batch.add(item)
        c = batch.c
        if address is None:
            c.address_length = 0
        else:
            self._destination(address, &length)
            memcpy(&c.address, &self._last_sockaddr, length)
            c.address_length = length
        while c.done < c.count:
            with nogil:
                result = self.c_send_batch(c, wait_us)
            if result == -EINTR:
                continue
            if result < 0:
                if total:
                    break
                check(result)
            total += result
        return total

    def recv_batch(self, RecvBatch batch not None, timeout=None) -> int:
        """Receive into ``batch`` (GRO buffers split into datagrams): how many arrived."""
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef int result
        while True:
            with nogil:
                result = self.c_recv_batch(batch.c, wait_us)
            if result != -EINTR:
                return check(result)

    def recvmany(self, int max_datagrams=64, timeout=None) -> list:
        """Receive up to ``max_datagrams`` datagrams: a list of ``(bytes, address)``.

        Waits (as recvfrom_into) for the first one only, then takes what has already arrived.
        Shares its receive area with recvfrom_into, so the two can be mixed without loss.
        """
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef CRecvBatch* rx
        cdef int result = 0, index
        cdef list received = []
        if max_datagrams <= 0:
            raise ValueError("max_datagrams must be positive")
        rx = self._shared_rx()
        with nogil:
            udt_mutex_lock(self._rx_lock)
        try:
            while len(received) < max_datagrams:
                if self._rx_next < rx.count:
                    index = self._rx_next
                    self._rx_next += 1
                    received.append((
                        PyBytes_FromStringAndSize(rx.data[index], rx.length[index]),
                        self._source_tuple(recv_batch_source(rx, index),
                                           recv_batch_source_length(rx, index))))
                    continue
                with nogil:
                    result = self.c_recv_batch(rx, 0 if received else wait_us)
                if result < 0:
                    if received:
                        break
                    if result == -EINTR:
                        continue
                    check(result)
                self._rx_next = 0
        finally:
            with nogil:
                udt_mutex_unlock(self._rx_lock)
        return received

    cdef CRecvBatch* _shared_rx(self) except NULL:
        """The receive area shared by recvfrom_into (on GRO sockets) and recvmany."""
        if self._rx is None:
            self._rx = RecvBatch(4, GRO_BUFFER_SIZE)
            self._rx_next = 0
        return self._rx.c

    cdef bint _rx_has_datagrams(self) noexcept:
        return self._rx is not None and (
            self._rx_next < self._rx.c.count
            or self._rx.c.pending_message < self._rx.c.pending_messages)

    # ---- options ----

    def setsockopt(self, int level, int option, value) -> None:
        """Set a socket option from an int or a bytes-like (as socket.setsockopt)."""
        cdef int number, result
        cdef Py_buffer view
        check(self.c_acquire())
        try:
            if isinstance(value, int):
                number = value
                result = _set_int_option(self.fd, level, option, number)
            else:
                PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
                result = 0
                if setsockopt(self.fd, level, option, view.buf, <socklen_t>view.len) != 0:
                    result = -errno
                PyBuffer_Release(&view)
        finally:
            self.c_release()
        check(result)

    def getsockopt(self, int level, int option, int buflen=0):
        """An int option, or the raw bytes (at most ``buflen``) when ``buflen`` is given."""
        cdef int number = 0, result = 0
        cdef char raw[1024]
        cdef socklen_t length = buflen
        if buflen < 0 or buflen > 1024:
            raise ValueError("getsockopt buflen out of range")
        check(self.c_acquire())
        if buflen == 0:
            result = _get_int_option(self.fd, level, option, &number)
        elif getsockopt(self.fd, level, option, raw, &length) != 0:
            result = -errno
        self.c_release()
        check(result)
        return number if buflen == 0 else raw[:length]

    cdef int _set_buffer(self, int forced, int plain, object value) except -1:
        cdef long long requested = value.__index__()
        cdef int result
        if not 0 <= requested <= 0x7FFFFFFF // 2:
            raise ValueError(f"buffer size must be 0-{0x7FFFFFFF // 2}, not {requested}")
        check(self.c_acquire())
        # The FORCE variant passes the sysctl ceiling (CAP_NET_ADMIN); without it, take what
        # the ceiling allows.
        result = _set_int_option(self.fd, SOL_SOCKET, forced, <int>requested)
        if result == -EPERM:
            result = _set_int_option(self.fd, SOL_SOCKET, plain, <int>requested)
        self.c_release()
        check(result)
        return 0

    @property
    def rcvbuf(self) -> int:
        """Receive buffer size in bytes as the kernel reports it (twice the request: the kernel
        counts its bookkeeping too)."""
        return self.getsockopt(SOL_SOCKET, SO_RCVBUF)

    @rcvbuf.setter
    def rcvbuf(self, value) -> None:
        self._set_buffer(SO_RCVBUFFORCE, SO_RCVBUF, value)

    @property
    def sndbuf(self) -> int:
        """Send buffer size in bytes as the kernel reports it."""
        return self.getsockopt(SOL_SOCKET, SO_SNDBUF)

    @sndbuf.setter
    def sndbuf(self, value) -> None:
        self._set_buffer(SO_SNDBUFFORCE, SO_SNDBUF, value)

    def outq(self) -> int:
        """Bytes queued in the kernel's send path not yet sent (SIOCOUTQ)."""
        cdef int queued = 0, result = 0
        check(self.c_acquire())
        if ioctl(self.fd, SIOCOUTQ, &queued) != 0:
            result = -errno
        self.c_release()
        check(result)
        return queued

    @property
    def max_payload(self) -> int:
        """The largest datagram payload this family can carry."""
        return self._max_payload
