# cython: language_level=3
"""The descriptor half of the UDP channel: one socket shared by threads without the GIL.

Waiting is always ``poll()`` on the socket plus an eventfd: ``close()`` (or ``interrupt()``)
signals the eventfd, so a thread blocked in a receive returns at once instead of hanging on a
descriptor another thread closed. The descriptors themselves are released only when the last
operation in flight has left, so a concurrent close can never make an operation touch a reused
descriptor number.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EAGAIN, EBADF, EINTR, EPERM, ETIMEDOUT, errno
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

from udt._addr cimport address_from_sockaddr, sockaddr_from_address
from udt._sys cimport (AF_INET6, AF_UNSPEC, C_POLLIN, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE,
                       IPPROTO_IP, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE,
                       EFD_CLOEXEC, EFD_NONBLOCK, SIOCOUTQ, SO_RCVBUF,
                       SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET, bind, check, close,
                       connect, eventfd, get_int_option, getpeername, getsockname, getsockopt,
                       ioctl, poll, pollfd, raise_errno, read, set_int_option, setsockopt,
                       sockaddr, sockaddr_storage, socklen_t, write)


cdef long long MAX_BUFFER = 0x7FFFFFFF // 2   # the kernel doubles what it is asked for


cdef int _set_forced(int fd, int forced, int plain, int size) noexcept nogil:
    """The FORCE variant passes the sysctl ceiling (CAP_NET_ADMIN); without it, take what the
    ceiling allows."""
    cdef int result = set_int_option(fd, SOL_SOCKET, forced, size)
    if result == -EPERM:
        result = set_int_option(fd, SOL_SOCKET, plain, size)
    return result


# c_size_buffers_for: the datagram size (MSS 1500) the buffers' requests were made for, and
# the most it grows one to (a limit, not an allocation: memory is used only while the reader lags).
cdef enum:
    BUFFER_BASE_DATAGRAM = 1500
    SCALED_BUFFER_MAX = 64 << 20


cdef class UdpSocket:
    """A UDP descriptor that threads share safely: lifetime, waking, waiting, names, options.

    The base of :class:`udt._net.Channel`, which adds the datagram I/O; it opens nothing itself
    (a bare instance is closed: everything answers EBADF).
    """

    def __cinit__(self, *args, **kwargs):
        self.fd = -1
        self.wake_fd = -1
        self._closed = 1        # until a socket is set up, everything answers EBADF
        self._released = 1

    cdef _open(self, int fd, int family):
        """Own ``fd`` (closed here if the waker cannot be made) and start its lifetime."""
        cdef int error
        self.fd = fd
        self.family = family
        self.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.wake_fd < 0:
            error = errno
            close(fd)
            self.fd = -1
            raise_errno(error)
        self._users = 0
        self._closed = 0
        self._released = 0

    def __dealloc__(self):
        if udt_atomic_claim(&self._released):
            self._close_descriptors()

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

    cdef int c_probe_mode(self, bint probe) noexcept nogil:
        """Path-MTU probes (protocol.md §13) leave with IP_PMTUDISC_PROBE: DF set, never
        fragmented, the kernel's path-MTU cache ignored; after them the socket goes back to the
        mode it had (Linux's default fragments what exceeds the route's MTU, which a fixed
        UDT_MSS above it relies on).  Best effort: 0, or -errno."""
        cdef int rc = self.c_acquire()
        cdef int value
        if rc < 0:
            return rc
        if self._pmtudisc_v4 == 0:          # first use: remember the socket's modes
            self._pmtudisc_v4 = -1
            self._pmtudisc_v6 = -1
            if get_int_option(self.fd, IPPROTO_IP, IP_MTU_DISCOVER, &value) == 0:
                self._pmtudisc_v4 = value + 1
            if self.family == AF_INET6 and get_int_option(self.fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER,
                                                          &value) == 0:
                self._pmtudisc_v6 = value + 1
        if self._pmtudisc_v4 > 0:           # (stored + 1: 0 means not read yet)
            rc = set_int_option(self.fd, IPPROTO_IP, IP_MTU_DISCOVER,
                                IP_PMTUDISC_PROBE if probe else self._pmtudisc_v4 - 1)
        if self._pmtudisc_v6 > 0:
            rc = set_int_option(self.fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER,
                                IPV6_PMTUDISC_PROBE if probe else self._pmtudisc_v6 - 1)
        self.c_release()
        return rc

    def scale_buffers_with_mss(self, int rcvbuf_base, int sndbuf_base) -> None:
        """Let c_size_buffers_for grow the receive/send buffer from these bytes (what they hold
        at MSS 1500) in proportion to a larger MSS; 0 leaves that buffer alone."""
        self._rcvbuf_base = rcvbuf_base
        self._sndbuf_base = sndbuf_base
        self._buffers_datagram = BUFFER_BASE_DATAGRAM

    cdef int c_size_buffers_for(self, int datagram) noexcept nogil:
        """Path-MTU discovery lets datagrams of this size through (protocol.md §13): a kernel
        buffer sized in 1500-byte datagrams would hold 43 times fewer 64 KiB ones and drop a
        burst (RcvbufErrors), so it grows by datagram / 1500, up to SCALED_BUFFER_MAX; it never
        shrinks (other connections of the port may still use the size).  Once per size: a
        setsockopt, no lock.  0, or -errno."""
        cdef long long target
        cdef int rc = 0
        if datagram <= self._buffers_datagram or (self._rcvbuf_base == 0 and self._sndbuf_base == 0):
            return 0
        if self.c_acquire() < 0:
            return -EBADF
        self._buffers_datagram = datagram
        if self._rcvbuf_base > 0:
            target = min(<long long>self._rcvbuf_base * datagram // BUFFER_BASE_DATAGRAM,
                         SCALED_BUFFER_MAX)
            if target > self.rcvbuf_asked:     # never below what c_grow_rcvbuf asked for
                rc = _set_forced(self.fd, SO_RCVBUFFORCE, SO_RCVBUF, <int>target)
                self.rcvbuf_asked = target
        if self._sndbuf_base > 0:
            target = min(<long long>self._sndbuf_base * datagram // BUFFER_BASE_DATAGRAM,
                         SCALED_BUFFER_MAX)
            rc = _set_forced(self.fd, SO_SNDBUFFORCE, SO_SNDBUF, <int>target)
        self.c_release()
        return rc

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

    # ---- Python API ----

    @property
    def closed(self) -> bool:
        return udt_atomic_load(&self._closed) != 0

    def fileno(self) -> int:
        """The socket's descriptor, -1 once closed (as socket.socket)."""
        return -1 if udt_atomic_load(&self._closed) else self.fd

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

    # ---- options ----

    def setsockopt(self, int level, int option, value) -> None:
        """Set a socket option from an int or a bytes-like (as socket.setsockopt)."""
        cdef int number, result
        cdef Py_buffer view
        check(self.c_acquire())
        try:
            if isinstance(value, int):
                number = value
                result = set_int_option(self.fd, level, option, number)
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
            result = get_int_option(self.fd, level, option, &number)
        elif getsockopt(self.fd, level, option, raw, &length) != 0:
            result = -errno
        self.c_release()
        check(result)
        return number if buflen == 0 else raw[:length]

    cdef int _set_buffer(self, int forced, int plain, object value) except -1:
        cdef long long requested = value.__index__()
        cdef int result
        if not 0 <= requested <= MAX_BUFFER:
            raise ValueError(f"buffer size must be 0-{MAX_BUFFER}, not {requested}")
        check(self.c_acquire())
        result = _set_forced(self.fd, forced, plain, <int>requested)
        self.c_release()
        check(result)
        if plain == SO_RCVBUF:
            self.rcvbuf_asked = requested
        return 0

    cdef int c_grow_rcvbuf(self, long long wanted) noexcept nogil:
        """Raise the kernel receive buffer to ``wanted`` bytes if that is more than asked so far
        (never lowers it; at most MAX_BUFFER).  The multiplexer calls it as a connection's receive
        window grows: a receive worker that waits for a core must not find the datagrams of that
        window dropped by the kernel (RcvbufErrors).  0, or a negative errno."""
        cdef int result
        if wanted > MAX_BUFFER:
            wanted = MAX_BUFFER
        if wanted <= self.rcvbuf_asked:
            return 0
        result = self.c_acquire()
        if result < 0:
            return result
        result = _set_forced(self.fd, SO_RCVBUFFORCE, SO_RCVBUF, <int>wanted)
        self.c_release()
        # asked once, right or wrong: a refusal is not retried per batch
        self.rcvbuf_asked = wanted
        return result

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
