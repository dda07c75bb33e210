# cython: language_level=3
"""The UDP channel: one socket, batched I/O without the GIL, UDP GSO/GRO when the kernel has them.

``Channel`` is what ``udt.dgram`` and the multiplexer send and receive through. The Python
methods mirror the ``socket`` module (names, address tuples, exceptions); the ``c_*`` methods
declared in ``_net.pxd`` are the multiplexer's hot path: they run without the GIL, never allocate,
and return ``-errno``.

The channel is split by job: ``_sys`` (kernel declarations, errno), ``_addr`` (address
conversion), ``_batch`` (the sendmmsg/recvmmsg batches), ``_sock`` (the descriptor's lifetime,
waking, waiting and options: the base class). This unit adds the offloads and the datagram I/O,
and keeps every name importable from ``udt._net`` as before.
"""
import socket as _socket

from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EBADF, EINTR, EINVAL, EIO, EMSGSIZE, ETIMEDOUT, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from udt._sock cimport (udt_monotonic_us, udt_mutex_free, udt_mutex_lock, udt_mutex_new,
                        udt_mutex_unlock)

# Python names of the split-off units, importable from here as before (cimported names are not
# module attributes, hence the imports).
from udt._addr import address_to_sockaddr, sockaddr_to_address
from udt._batch import (GRO_BUFFER_SIZE, GRO_MAX_SEGMENTS, GSO_MAX_SEGMENTS,  # no-cython-lint
                        MAX_IOVECS_PER_MESSAGE, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6,  # no-cython-lint
                        RecvBatch, SendBatch)

__all__ = ["Channel", "SendBatch", "RecvBatch", "GSO_MAX_SEGMENTS", "GRO_BUFFER_SIZE",
           "POLLIN", "POLLOUT", "address_to_sockaddr", "sockaddr_to_address"]

POLLIN = C_POLLIN
POLLOUT = C_POLLOUT

cdef enum:
    PY_SCATTER_ON_STACK = 16


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


cdef class Channel:
    """One UDP socket with batched, GIL-free I/O (see the module docstring).

    ``gso``/``gro`` turn the offloads off even where the kernel has them; ``rcvbuf``/``sndbuf``
    ask for socket buffers of that many bytes (forced past the sysctl limits when permitted).
    """

    def __cinit__(self, *args, **kwargs):
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
        check(get_int_option(fd, SOL_SOCKET, SO_TYPE, &kind))
        check(get_int_option(fd, SOL_SOCKET, SO_PROTOCOL, &protocol))
        check(get_int_option(fd, SOL_SOCKET, SO_DOMAIN, &domain))
        if kind != SOCK_DGRAM or protocol != IPPROTO_UDP or (domain != AF_INET
                                                             and domain != AF_INET6):
            raise ValueError(f"adopt() needs an AF_INET/AF_INET6 UDP socket, not {sock!r}")
        channel = cls.__new__(cls)
        channel._setup(sock.detach(), domain, reuse_addr, reuse_port, gso, gro, rcvbuf, sndbuf)
        return channel

    cdef _setup(self, int fd, int family, bint reuse_addr, bint reuse_port, bint gso, bint gro,
                object rcvbuf, object sndbuf):
        cdef int value = 0
        self._open(fd, family)
        self._max_payload = (_batch.MAX_UDP_PAYLOAD_V4 if family == AF_INET
                             else _batch.MAX_UDP_PAYLOAD_V6)
        self._gso_segment_limit = self._max_payload
        try:
            if reuse_addr:
                check(set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1))
            if reuse_port:
                check(set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1))
            # Offloads are probed on this very socket: the option exists or it does not.
            self._gso_supported = get_int_option(fd, SOL_UDP, UDP_SEGMENT, &value) == 0
            self._gro_supported = get_int_option(fd, SOL_UDP, UDP_GRO, &value) == 0
            self._gso = gso and self._gso_supported
            self._gro = False
            if gro and self._gro_supported:
                self._gro = set_int_option(fd, SOL_UDP, UDP_GRO, 1) == 0
            if rcvbuf is not None:
                self.rcvbuf = rcvbuf
            elif get_int_option(fd, SOL_SOCKET, SO_RCVBUF, &value) == 0:
                # an adopted socket keeps what its owner set: growth never lowers it (the kernel
                # reports twice what was asked)
                self.rcvbuf_asked = value // 2
            if sndbuf is not None:
                self.sndbuf = sndbuf
        except BaseException:
            self.close()
            raise

    def __dealloc__(self):
        udt_mutex_free(self._rx_lock)

    # ---- batch I/O (no GIL) ----

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
        messages = send_batch_plan(batch, use_gso, self._gso_segment_limit,
                                   self._max_payload)
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
                messages = send_batch_plan(batch, False, self._gso_segment_limit,
                                           self._max_payload)
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
            recv_batch_split(batch)           # the rest of the previous receive comes first
            if batch.count > 0:
                return batch.count
        if self._gro and batch.slot_size < _batch.GRO_BUFFER_SIZE:
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
                recv_batch_split(batch)
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

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        family = "AF_INET" if self.family == AF_INET else "AF_INET6"
        return f"<udt._net.Channel {state} family={family} gso={self._gso} gro={self._gro}>"

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
            if pieces > _batch.MAX_IOVECS_PER_MESSAGE:
                raise ValueError(f"at most {_batch.MAX_IOVECS_PER_MESSAGE} buffers per datagram")
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
        cdef _batch.SendBatch batch
        cdef CSendBatch* c
        cdef int64_t wait_us = _timeout_us(timeout)
        cdef int result, total = 0
        cdef socklen_t length = 0
        if isinstance(datagrams, _batch.SendBatch):
            batch = <_batch.SendBatch>datagrams
        else:
            items = list(datagrams)
            batch = _batch.SendBatch(max(1, len(items)), max(1, len(items)) * 2)
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

    def recv_batch(self, _batch.RecvBatch batch not None, timeout=None) -> int:
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
            self._rx = _batch.RecvBatch(4, _batch.GRO_BUFFER_SIZE)
            self._rx_next = 0
        return self._rx.c

    cdef bint _rx_has_datagrams(self) noexcept:
        return self._rx is not None and (
            self._rx_next < self._rx.c.count
            or self._rx.c.pending_message < self._rx.c.pending_messages)

    @property
    def max_payload(self) -> int:
        """The largest datagram payload this family can carry."""
        return self._max_payload
