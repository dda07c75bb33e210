# cython: language_level=3
"""The user-thread side of a connection: send and receive with waits (GIL released),
sendfile/recvfile, perfmon, close.  The multiplexer creates Connection objects."""
cimport cython

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EINTR, EIO
from libc.string cimport memcpy
from posix.uio cimport iovec, pwritev
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc

from udt._conntable cimport MuxConn, muxconn_decref
from udt._digest cimport Sha256
from udt._seal cimport SEAL_OVERHEAD
from udt._epoll cimport (READY_ERR, READY_IN, READY_OUT, READY_READ_FD, READY_WRITE_FD,
                         conn_readiness, conn_ready_note, ready_open)
from udt._muxcore cimport (CLOSE_WAIT, CLOSE_WAIT_PORT_ENDS, BurstArea, DIRECT_BURST, MuxCore,
                           after_engine_call, burst_area_free, burst_area_init, close_conn,
                           schedule_send, schedule_timer, send_now)
from udt._net cimport (AF_INET, Channel, address_from_sockaddr, sockaddr, sockaddr_in, sockaddr_in6,
                       sockaddr_storage)
from udt._sync cimport cond_wait_until, mux_errno, now_us, pthread_mutex_lock, pthread_mutex_unlock
from udt._waits cimport (RC_CLOSED, RC_NO_BUFFER, RC_NO_DATA, RC_OS_ERROR, RC_SIGNAL, RC_TIMEOUT,
                         deadline_from, on_main_thread, raise_result, wait_changed)
cimport udt.core.engine as core
from udt.core.seq cimport seq_off

from udt import errors as _errors
from udt._waits import _rejection_text
from udt.errors import BadSocketError, ErrorCode, error_from_code


cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)


cdef enum:
    DIRECT_SEND_WAIT_US = 100000    # a direct send waits at most this long for a full kernel buffer


cdef int conn_send_wait(MuxCore* m, Channel channel, MuxConn* mc, BurstArea* area,
                        const uint8_t* data, size_t length, int64_t ttl_us, bint inorder,
                        bint message, bint send_all, int64_t deadline, bint main_thread,
                        size_t* taken) noexcept nogil:
    """Copy data into the send buffer, waiting for room (GIL released), and send what is due
    at once from this thread when nothing paces it (send_now; area NULL: never).  *taken
    counts the bytes queued; returns 0 when done (all of it with send_all, else at least one
    byte) or a negative code (RC_NO_BUFFER in non-blocking mode, RC_TIMEOUT, RC_CLOSED, -2001 …)."""
    cdef int result = 0
    cdef ssize_t written
    cdef int64_t signal_check = 0, now
    pthread_mutex_lock(&mc.lock)
    while True:
        if mc.local_closed or mc.mux_dead:
            result = RC_CLOSED
            break
        now = now_us()
        written = core.conn_write(&mc.conn, data + taken[0], length - taken[0], ttl_us, inorder, now)
        if written > 0:
            taken[0] += <size_t>written
            send_now(m, channel, mc, area, now, DIRECT_SEND_WAIT_US, False)
            schedule_timer(m, channel, mc, now, False)
            conn_ready_note(mc)  # the buffer may be full now
            if message or taken[0] >= length or not send_all:
                break
            continue
        if written != RC_NO_BUFFER:
            result = <int>written if written < 0 else RC_NO_BUFFER
            break
        if deadline == 0:
            result = RC_NO_BUFFER
            break
        result = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread, &signal_check)
        if result != 0:
            break
    pthread_mutex_unlock(&mc.lock)
    return result


cdef ssize_t conn_recv_wait(MuxCore* m, Channel channel, MuxConn* mc, uint8_t* out, size_t cap,
                            bint message, int64_t deadline, bint main_thread,
                            size_t* message_length) noexcept nogil:
    """Copy readable bytes (or one message) out, waiting while there are none (GIL released).
    Returns the count, 0 at orderly EOF, or a negative code."""
    cdef ssize_t result
    cdef int64_t signal_check = 0, now
    cdef bint truncated = False
    pthread_mutex_lock(&mc.lock)
    while True:
        if mc.local_closed or mc.mux_dead:
            result = RC_CLOSED
            break
        now = now_us()
        if message:
            result = core.conn_read_message(&mc.conn, out, cap, message_length, &truncated, now)
        else:
            result = core.conn_read(&mc.conn, out, cap, now)
        if result >= 0:
            if result > 0:
                # reading frees receive buffer: the engine may want to tell the peer
                schedule_send(m, mc, now)
                conn_ready_note(mc)  # drained: no longer readable
            break
        if result != RC_NO_DATA:
            break
        if deadline == 0:
            break
        result = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread, &signal_check)
        if result != 0:
            break
    pthread_mutex_unlock(&mc.lock)
    return result


cdef enum:
    RECVFILE_IOV = 64                   # iovecs per pwritev (a chunk's full slots merge into one)
    RECVFILE_WRITE = 256 << 10          # bytes per pwritev: still in L2 when the hash reads them
    RECVFILE_LEASE = 1 << 20            # the most one lease (recvfile_lend) holds
    RECVFILE_LOWAT = 256 << 10          # a step waits for this much (or the rest of its count)
    RC_DIGEST = -1                      # the digest's update failed (OpenSSL)


cdef size_t _write_iov(int fd, const iovec* iov, int n, long long offset, int* os_error) noexcept nogil:
    """pwritev all of iov (n entries) at offset, again after a short write; the bytes written
    (fewer only on an error, in *os_error)."""
    cdef iovec work[RECVFILE_IOV]
    cdef int first = 0
    cdef ssize_t put
    cdef size_t done = 0, k
    memcpy(work, iov, <size_t>n * sizeof(iovec))
    while first < n:
        put = pwritev(fd, work + first, n - first, offset + <long long>done)
        if put < 0:
            if mux_errno() == EINTR:
                continue
            os_error[0] = mux_errno()
            break
        if put == 0:
            os_error[0] = EIO
            break
        done += <size_t>put
        k = <size_t>put
        while first < n and k >= work[first].iov_len:
            k -= work[first].iov_len
            first += 1
        if first < n:
            work[first].iov_base = <uint8_t*>work[first].iov_base + k
            work[first].iov_len -= k
    return done


cdef int _feed_iov(Sha256 digest, const iovec* iov, int n, size_t count) noexcept nogil:
    """Hash the first count bytes of iov."""
    cdef int k
    cdef size_t length
    for k in range(n):
        if count == 0:
            break
        length = iov[k].iov_len if iov[k].iov_len < count else count
        if digest.feed(iov[k].iov_base, length) != 0:
            return RC_DIGEST
        count -= length
    return 0


cdef int _describe(MuxConn* mc, size_t skip, size_t cap, iovec* iov, size_t* total,
                   uint8_t** bounce) noexcept nogil:
    """Under mc.lock: up to cap readable bytes past skip as iovecs over the ring (conn_read_iov).
    Slots that may still move (path-MTU discovery) are copied into *bounce (cap bytes, made
    here if NULL) and described by one iovec over it.  The iovec count, or a code <= 0."""
    cdef bint movable = False
    cdef int n = core.conn_read_iov(&mc.conn, skip, iov, RECVFILE_IOV, cap, total, &movable)
    cdef int k
    cdef size_t at = 0
    if n <= 0 or not movable:
        return n
    if bounce[0] == NULL:
        bounce[0] = <uint8_t*>malloc(cap)
        if bounce[0] == NULL:
            return -core.ERR_NO_MEMORY
    for k in range(n):
        memcpy(bounce[0] + at, iov[k].iov_base, iov[k].iov_len)
        at += iov[k].iov_len
    iov[0].iov_base = bounce[0]
    iov[0].iov_len = at
    return 1


cdef bint _too_little(MuxConn* mc, size_t lent, size_t cap) noexcept nogil:
    """Under mc.lock: fewer than min(cap, RECVFILE_LOWAT) bytes are readable past lent while
    more can come: connected, no EOF, and less than half the receive limit is held (packets,
    whatever their size: after path-MTU discovery old small packets fill slots meant for
    large ones).  A paced sender makes a few datagrams readable per wake-up: writing (and
    lending) each dribble cost 4.6 times the pwritev calls of 256 KiB steps.  Waiting for the
    rest moves no byte later than a full step would, and what is lent comes back without us
    (the hashing thread)."""
    cdef core.Conn* c = &mc.conn
    cdef int64_t want = <int64_t>(cap if cap < RECVFILE_LOWAT else RECVFILE_LOWAT)
    if not c.buffers_ready or c.state != core.STATE_CONNECTED or c.peer_shutdown or c.peer_eof:
        return False
    if 2 * seq_off(c.rcv.read_seq, c.rcv.frontier_seq) >= c.rcv.limit:
        return False
    return c.rcv.contiguous_bytes - <int64_t>lent < want


cdef void _release_read(MuxCore* m, MuxConn* mc, size_t count) noexcept nogil:
    """Under mc.lock: forget count bytes written from the ring; the freed room may be news for
    the peer."""
    core.conn_read_consume(&mc.conn, count)
    if not mc.local_closed and not mc.mux_dead:
        schedule_send(m, mc, now_us())
        conn_ready_note(mc)  # drained: no longer readable


cdef ssize_t conn_recvfile_wait(MuxCore* m, MuxConn* mc, int fd, long long offset, long long count,
                                Sha256 digest, int64_t deadline, bint main_thread, long long* done,
                                int* os_error) noexcept nogil:
    """recvfile's loop: describe what is readable as iovecs over the ring, write them with the
    lock released, hash them, then release them.  0 when count bytes were written or at EOF,
    else a negative code."""
    cdef iovec iov[RECVFILE_IOV]
    cdef uint8_t* bounce = NULL
    cdef size_t total = 0, put, want
    cdef ssize_t result = 0
    cdef int n
    cdef int64_t signal_check = 0
    pthread_mutex_lock(&mc.lock)
    while count < 0 or done[0] < count:
        if mc.local_closed or mc.mux_dead:
            result = RC_CLOSED
            break
        want = RECVFILE_WRITE
        if count >= 0 and count - done[0] < <long long>want:
            want = <size_t>(count - done[0])
        n = RC_NO_DATA if deadline != 0 and _too_little(mc, 0, want) else _describe(mc, 0, want, iov, &total, &bounce)
        if n <= 0:
            result = n
            if n != RC_NO_DATA or deadline == 0:
                break
            result = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread,
                                  &signal_check)
            if result != 0:
                break
            continue
        pthread_mutex_unlock(&mc.lock)
        put = _write_iov(fd, iov, n, offset + done[0], os_error)
        if digest is not None and put > 0 and _feed_iov(digest, iov, n, put) != 0:
            result = RC_DIGEST
        pthread_mutex_lock(&mc.lock)
        if put > 0:
            _release_read(m, mc, put)
        done[0] += <long long>put
        if os_error[0] != 0:
            result = RC_OS_ERROR
        if result != 0:
            break
    pthread_mutex_unlock(&mc.lock)
    free(bounce)
    return result


cdef int conn_lend_wait(MuxConn* mc, size_t* lent, size_t cap, int64_t deadline, bint main_thread,
                        iovec* iov, uint8_t** bounce, size_t* total) noexcept nogil:
    """recvfile_lend's wait: describe up to cap readable bytes past the *lent ones and lend
    them (*lent grows by *total).  The iovec count, 0 at EOF, or a negative code."""
    cdef int n = 0
    cdef int64_t signal_check = 0
    pthread_mutex_lock(&mc.lock)
    while True:
        if mc.local_closed or mc.mux_dead:
            n = RC_CLOSED
            break
        if deadline != 0 and _too_little(mc, lent[0], cap):
            n = RC_NO_DATA
        else:
            n = _describe(mc, lent[0], cap, iov, total, bounce)
        if n > 0:
            lent[0] += total[0]
            break
        if n != RC_NO_DATA or deadline == 0:
            break
        n = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread, &signal_check)
        if n != 0:
            break
    pthread_mutex_unlock(&mc.lock)
    return n


def _file_write_error(int os_error):
    """recvfile's and recvfile_lend's error for a pwritev that failed with os_error."""
    return _errors.FileTransferError(ErrorCode.FILE_WRITE,
                                     f"writing the file failed: {os.strerror(os_error)}",
                                     errno=os_error)


@cython.no_gc  # holds its connection, which is no_gc too
cdef class RingLease:
    """Bytes that ``Connection.recvfile_lend`` wrote to a file straight from the receive ring
    and has not released yet: ``feed`` hashes them from the ring, ``release`` gives their
    slots back (in the order they were lent: the ring releases from its read position)."""

    def __dealloc__(self):
        if not self.released and self.conn is not None:
            self.conn._release_lent(self.nbytes)
        free(self.bounce)
        self.bounce = NULL

    def feed(self, Sha256 digest not None):
        """Hash the bytes, GIL released."""
        cdef int result
        with nogil:
            result = _feed_iov(digest, self.iov, self.n, self.nbytes)
        if result != 0:
            raise RuntimeError("SHA-256 update failed")

    def release(self):
        if not self.released:
            self.released = True
            self.conn._release_lent(self.nbytes)


@cython.no_gc  # freed by reference count only: never from a GC pass inside a worker's CC callback
cdef class Connection:
    """One UDT connection of a multiplexer (client, accepted or rendezvous)."""

    def __dealloc__(self):
        cdef MuxConn* mc = self.c
        if self._direct != NULL:  # no send of ours runs: they hold a reference to self
            burst_area_free(self._direct)
            free(self._direct)
            self._direct = NULL
        if mc == NULL:
            return
        self.c = NULL
        if not self._closed and self.mux is not None and self.m != NULL:
            with nogil:
                close_conn(self.m, self.channel, mc, 0, False)
        muxconn_decref(mc)

    cdef BurstArea* _direct_area(self):
        """The area of this connection's direct sends, allocated on first use (NULL: no
        memory, the send worker sends everything)."""
        if self._direct == NULL:
            self._direct = <BurstArea*>calloc(1, sizeof(BurstArea))
            if self._direct != NULL and burst_area_init(self._direct, DIRECT_BURST) != 0:
                free(self._direct)
                self._direct = NULL
        return self._direct

    cdef MuxConn* _conn(self) except NULL:
        if self.c == NULL or self._closed:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "Bad file descriptor: socket closed")
        return self.c

    @property
    def socket_id(self):
        return self._conn().socket_id

    @property
    def peer_socket_id(self):
        return self._conn().conn.peer_socket_id

    @property
    def peer_address(self):
        cdef MuxConn* mc = self._conn()
        cdef sockaddr_storage address
        if self._peer_address is None:
            with nogil:
                pthread_mutex_lock(&mc.lock)
                address = mc.conn.peer_addr
                pthread_mutex_unlock(&mc.lock)
            length = sizeof(sockaddr_in) if address.ss_family == AF_INET else sizeof(sockaddr_in6)
            self._peer_address = address_from_sockaddr(<const sockaddr*>&address, length)
        return self._peer_address

    @property
    def handshakes_sent(self):
        """Handshake requests this connect has sent so far (what a failed connect tried)."""
        return self._conn().conn.hs_sent

    @property
    def peer_handshake_seen(self):
        """A rendezvous connect received at least one handshake from its peer."""
        return bool(self._conn().conn.hs_peer_seen)

    @property
    def state(self):
        cdef MuxConn* mc = self._conn()
        cdef int state
        with nogil:
            pthread_mutex_lock(&mc.lock)
            state = core.conn_state(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return state

    @property
    def mss(self):
        """The negotiated MSS on the wire (an encrypted engine plans 24 bytes less: §12)."""
        cdef MuxConn* mc = self._conn()
        return mc.conn.mss + (SEAL_OVERHEAD if mc.crypto != NULL else 0)

    def events(self):
        cdef MuxConn* mc = self._conn()
        cdef int bits
        with nogil:
            pthread_mutex_lock(&mc.lock)
            bits = core.conn_poll_events(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return bits

    def readiness(self):
        """EpollEvent bits now (udt._epoll.conn_readiness): IN, OUT, ERR."""
        cdef MuxConn* mc = self._conn()
        cdef int bits
        with nogil:
            pthread_mutex_lock(&mc.lock)
            bits = conn_readiness(mc)
            pthread_mutex_unlock(&mc.lock)
        return bits

    def readiness_fd(self, bint writable):
        """The eventfd readable while this connection is readable (writable: while it is
        writable), created now if absent; it closes with the connection."""
        cdef MuxConn* mc = self._conn()
        cdef int which = READY_WRITE_FD if writable else READY_READ_FD
        cdef int error = 0, fd = -1, bits
        with nogil:
            pthread_mutex_lock(&mc.lock)
            if mc.local_closed:
                error = -1
            else:
                bits = conn_readiness(mc)
                error = ready_open(&mc.ready_fd[which], &mc.ready_on[which],
                                   bits & ((READY_OUT if writable else READY_IN) | READY_ERR))
                fd = mc.ready_fd[which]
            pthread_mutex_unlock(&mc.lock)
        if error == -1:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "Bad file descriptor: socket closed")
        if error:
            raise OSError(error, os.strerror(error))
        return fd

    def send_buffered(self):
        cdef MuxConn* mc = self._conn()
        cdef int64_t n
        with nogil:
            pthread_mutex_lock(&mc.lock)
            n = core.conn_pending_send_bytes(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return n

    def recv_buffered(self):
        cdef MuxConn* mc = self._conn()
        cdef int64_t n
        with nogil:
            pthread_mutex_lock(&mc.lock)
            n = core.conn_readable_bytes(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return n

    def set_max_bandwidth(self, int64_t bytes_per_second):
        cdef MuxConn* mc = self._conn()
        with nogil:
            pthread_mutex_lock(&mc.lock)
            core.conn_set_max_bandwidth(&mc.conn, bytes_per_second)
            schedule_send(self.m, mc, now_us())
            pthread_mutex_unlock(&mc.lock)

    def wait_connected(self, timeout):
        """Wait until the handshake completes; raise its failure (refused, timed out …)."""
        cdef MuxConn* mc = self._conn()
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t signal_check = 0
        cdef int result = 0, state = 0, error = 0, reject_req_type = 0
        cdef bint main_thread = on_main_thread()
        with nogil:
            pthread_mutex_lock(&mc.lock)
            while True:
                if mc.local_closed or mc.mux_dead:
                    result = RC_CLOSED
                    break
                state = mc.conn.state
                # cc_ready: the handshake completed (_established ran).  That is a connection,
                # even if the peer's SHUTDOWN or a failure ended it before this thread woke:
                # the peer's close comes after the connect, as in TCP, and reads report it.
                if state == core.STATE_CONNECTED or mc.conn.cc_ready:
                    break
                if state != core.STATE_CONNECTING and state != core.STATE_OPENED:
                    error = mc.conn.error
                    reject_req_type = mc.conn.reject_req_type
                    result = -(error if error else core.ERR_CONNECTION_SETUP)
                    break
                if deadline == 0:
                    result = RC_NO_DATA
                    break
                result = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread,
                                      &signal_check)
                if result != 0:
                    break
            pthread_mutex_unlock(&mc.lock)
        if result == RC_NO_DATA:
            raise BlockingIOError(115, "Operation now in progress")
        if result == RC_TIMEOUT:
            raise _errors.OperationTimeoutError(ErrorCode.TIMED_OUT, "timed out")
        if error == core.ERR_REJECTED and reject_req_type:
            raise error_from_code(error, _rejection_text(reject_req_type))
        if result != 0:
            raise_result(result, False, 0, mc.conn.peer_reset)

    def send(self, data, timeout, bint send_all):
        """Stream send: copy into the send buffer (all of it with send_all); returns the count."""
        cdef MuxConn* mc = self._conn()
        cdef BurstArea* area = self._direct_area()
        cdef Py_buffer view
        cdef int result
        cdef size_t taken = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t untaken
        cdef bint main_thread = on_main_thread()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return 0
            with nogil:
                result = conn_send_wait(self.m, self.channel, mc, area, <const uint8_t*>view.buf,
                                        <size_t>view.len, -1, False, False, send_all, deadline,
                                        main_thread, &taken)
            untaken = <int64_t>view.len - <int64_t>taken
        finally:
            PyBuffer_Release(&view)
        if result == -core.ERR_CONNECTION_BROKEN and send_all:
            raise _errors.unacknowledged_error(self._unacknowledged() + untaken, "send")
        if result == RC_SIGNAL or (result < 0 and (send_all or taken == 0)):
            raise_result(result, True, 0, mc.conn.peer_reset)
        return taken

    def sendmsg(self, data, int64_t ttl_ms, bint inorder, timeout):
        """Queue one message (whole or not at all); returns its length."""
        cdef MuxConn* mc = self._conn()
        cdef BurstArea* area = self._direct_area()
        cdef Py_buffer view
        cdef int result
        cdef size_t taken = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t ttl_us = -1 if ttl_ms < 0 else ttl_ms * 1000
        cdef bint main_thread = on_main_thread()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                raise _errors.InvalidParameterError(ErrorCode.BAD_PARAMETER, "empty message")
            with nogil:
                result = conn_send_wait(self.m, self.channel, mc, area, <const uint8_t*>view.buf,
                                        <size_t>view.len, ttl_us, inorder, True, False, deadline,
                                        main_thread, &taken)
        finally:
            PyBuffer_Release(&view)
        if result < 0:
            raise_result(result, True, 0, mc.conn.peer_reset)
        return taken

    def recv_into(self, buffer, timeout):
        """Stream receive into a writable buffer: the count, 0 at orderly EOF."""
        cdef MuxConn* mc = self._conn()
        cdef Py_buffer view
        cdef ssize_t result
        cdef size_t message_length = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = on_main_thread()
        self._no_file_receive()
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if view.len == 0:
                return 0
            with nogil:
                result = conn_recv_wait(self.m, self.channel, mc, <uint8_t*>view.buf,
                                        <size_t>view.len, False, deadline, main_thread, &message_length)
        finally:
            PyBuffer_Release(&view)
        if result < 0:
            raise_result(result, False, 0, mc.conn.peer_reset)
        return result

    def recvmsg_into(self, buffer, timeout):
        """One whole message into buffer (truncated if longer): its copied length, 0 at EOF."""
        cdef MuxConn* mc = self._conn()
        cdef Py_buffer view
        cdef ssize_t result
        cdef size_t message_length = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = on_main_thread()
        self._no_file_receive()
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            with nogil:
                result = conn_recv_wait(self.m, self.channel, mc, <uint8_t*>view.buf,
                                        <size_t>view.len, True, deadline, main_thread, &message_length)
        finally:
            PyBuffer_Release(&view)
        if result < 0:
            raise_result(result, False, 0, mc.conn.peer_reset)
        return result

    def sendfile(self, int fd, long long offset, long long count, timeout, size_t block):
        """Send count bytes of fd from offset: pread a block, queue it, repeat — all GIL-free."""
        cdef MuxConn* mc = self._conn()
        cdef uint8_t* area = <uint8_t*>malloc(block)
        cdef long long done = 0
        cdef ssize_t got, result = 0
        cdef size_t taken = 0
        cdef int os_error = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = on_main_thread()
        if area == NULL:
            raise MemoryError()
        try:
            with nogil:
                while done < count:
                    got = pread(fd, area, <size_t>min(<long long>block, count - done), offset + done)
                    if got < 0:
                        if mux_errno() == EINTR:
                            continue
                        os_error = mux_errno()
                        result = RC_OS_ERROR
                        break
                    if got == 0:
                        result = -core.ERR_FILE_READ  # the file shrank under us
                        break
                    taken = 0
                    result = conn_send_wait(self.m, self.channel, mc, NULL, area, <size_t>got,
                                            -1, True, False, True, deadline, main_thread, &taken)
                    done += <long long>taken
                    if result < 0:
                        break
        finally:
            free(area)
        if result < 0:
            if result == -core.ERR_FILE_READ:
                raise _errors.FileTransferError(ErrorCode.FILE_READ,
                                                f"the file ended after {done} of {count} bytes")
            raise_result(result, True, os_error, mc.conn.peer_reset)
        return done

    def recvfile(self, int fd, long long offset, long long count, timeout, Sha256 digest=None):
        """Receive count bytes (-1: until EOF) into fd at offset, written by pwritev straight
        from the receive ring's slots and fed to digest (if given) from the same slots before
        they are released; all GIL-free.  Returns the bytes written; an error raised after some
        were carries their count as ``bytes_written``."""
        cdef MuxConn* mc = self._conn()
        cdef long long done = 0
        cdef ssize_t result = 0
        cdef int os_error = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = on_main_thread()
        self._no_file_receive()
        self._file_receiving = True
        try:
            with nogil:
                result = conn_recvfile_wait(self.m, mc, fd, offset, count, digest, deadline,
                                            main_thread, &done, &os_error)
        finally:
            self._file_receiving = False
        if result < 0:
            try:
                if result == RC_OS_ERROR:
                    raise _file_write_error(os_error)
                if result == RC_DIGEST:
                    raise RuntimeError("SHA-256 update failed")
                raise_result(result, False, 0, mc.conn.peer_reset)
            except BaseException as exc:
                exc.bytes_written = done
                raise
        return done

    def recvfile_lend(self, int fd, long long offset, size_t cap, timeout):
        """Write up to cap readable bytes (at most 1 MiB) past those already lent to fd at
        offset, straight from the receive ring's slots, waiting for data (GIL released), and
        lend them: a RingLease to hash and release, in order, from any thread; None at EOF.
        Other readers are refused until every lease is released."""
        cdef MuxConn* mc = self._conn()
        cdef RingLease lease
        cdef size_t* lent = &self._lent
        cdef size_t total = 0, put = 0
        cdef int n = 0, os_error = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = on_main_thread()
        if self._file_receiving:
            self._no_file_receive()
        if cap > RECVFILE_LEASE:
            cap = RECVFILE_LEASE
        lease = RingLease.__new__(RingLease)
        lease.conn = self
        lease.released = True       # nothing to give back until something is lent
        self._file_receiving = True
        try:
            with nogil:
                n = conn_lend_wait(mc, lent, cap, deadline, main_thread, lease.iov, &lease.bounce, &total)
                if n > 0:
                    put = _write_iov(fd, lease.iov, n, offset, &os_error)
                    if put < total:     # what was not written is lent again by the next call
                        pthread_mutex_lock(&mc.lock)
                        lent[0] -= total - put
                        pthread_mutex_unlock(&mc.lock)
        finally:
            self._file_receiving = False
        if n > 0 and put > 0:
            lease.n = n
            lease.nbytes = put
            lease.released = False
            self._leases += 1
            return lease                # an error after a short write comes back next call
        if n == 0:
            return None
        if n > 0:
            raise _file_write_error(os_error)
        raise_result(n, False, 0, mc.conn.peer_reset)

    cdef _release_lent(self, size_t count):
        """A lease is done: its bytes leave the ring."""
        cdef MuxConn* mc = self.c
        if mc != NULL and count > 0:
            with nogil:
                pthread_mutex_lock(&mc.lock)
                _release_read(self.m, mc, count)
                self._lent -= count
                pthread_mutex_unlock(&mc.lock)
        self._leases -= 1

    cdef _no_file_receive(self):
        """recvfile writes from slots it has not released yet (so do leases): another reader
        would free them."""
        if self._file_receiving or self._leases > 0:
            raise _errors.InvalidParameterError(ErrorCode.BAD_PARAMETER,
                                                "another thread is receiving a file on this socket")

    cdef int64_t _unacknowledged(self):
        """Bytes written that the peer has not acknowledged (queued, in flight or lost)."""
        cdef MuxConn* mc = self.c
        cdef int64_t pending
        with nogil:
            pthread_mutex_lock(&mc.lock)
            pending = core.conn_pending_send_bytes(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return pending

    def flush(self, timeout):
        """Wait (GIL released) until the peer acknowledged every byte written; raise the timeout
        or broken-connection error, carrying the count still unacknowledged, otherwise."""
        cdef MuxConn* mc = self._conn()
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t signal_check = 0, pending = 0
        cdef int result = 0, state
        cdef bint main_thread = on_main_thread()
        with nogil:
            pthread_mutex_lock(&mc.lock)
            while True:
                if mc.local_closed or mc.mux_dead:
                    result = RC_CLOSED
                    break
                if core.conn_pending_send_bytes(&mc.conn) == 0:
                    break
                state = mc.conn.state
                if state != core.STATE_CONNECTED and state != core.STATE_CLOSING:
                    result = -core.ERR_CONNECTION_BROKEN
                    break
                result = wait_changed(&mc.changed, &mc.lock, &mc.waiters, deadline, main_thread,
                                      &signal_check)
                if result != 0:
                    break
            pending = core.conn_pending_send_bytes(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        if result == RC_TIMEOUT:
            raise _errors.unacknowledged_error(pending, "timeout")
        if result == -core.ERR_CONNECTION_BROKEN:
            raise _errors.unacknowledged_error(pending, "broken")
        if result != 0:
            raise_result(result, True)

    @property
    def half_close(self):
        """Did the handshake negotiate the half-close (a udt peer, protocol.md §11)?"""
        return bool(self._conn().conn.caps & core.CAP_HALF_CLOSE)

    def shutdown_read(self):
        """Local only: UDT has no read shutdown on the wire."""
        self._conn()

    def shutdown_write(self, double linger_seconds):
        """A udt peer that negotiated the half-close gets an EOF once what is queued is
        acknowledged (this returns at once) and may still send to us.  Any other peer: drain what
        is queued (at most the linger time), then send SHUTDOWN: the peer reads EOF.  The
        connection stays registered so that data the peer already sent can still be read."""
        cdef MuxConn* mc = self._conn()
        cdef MuxCore* m = self.m
        cdef uint32_t events
        cdef int64_t now, deadline
        cdef int64_t linger_us = <int64_t>(linger_seconds * 1e6)
        with nogil:
            pthread_mutex_lock(&mc.lock)
            now = now_us()
            if not mc.mux_dead and core.conn_shutdown_write(&mc.conn, now) == 0:
                after_engine_call(m, self.channel, mc, core.EV_WANT_TRANSMIT, now, False)
            elif not mc.mux_dead and mc.conn.state == core.STATE_CONNECTED and not mc.conn.closing:
                mc.conn.opts.linger_us = linger_us if linger_us > 0 else 1
                events = core.conn_close(&mc.conn, now)
                after_engine_call(m, self.channel, mc, events, now, False)
                while (not mc.mux_dead and not mc.local_closed and mc.conn.state != core.STATE_CLOSED
                       and mc.conn.state != core.STATE_BROKEN):
                    deadline = mc.conn.linger_deadline + 1000000   # moves on with progress
                    if now_us() >= deadline:
                        break
                    mc.waiters += 1
                    cond_wait_until(&mc.changed, &mc.lock, deadline)
                    mc.waiters -= 1
            pthread_mutex_unlock(&mc.lock)

    def perfmon(self, bint clear):
        """UDT4 perfmon fields (snake_case) plus invalid-datagram counters."""
        cdef MuxConn* mc = self._conn()
        cdef core.Stats s
        with nogil:
            pthread_mutex_lock(&mc.lock)
            core.conn_stats(&mc.conn, &s, clear, now_us())
            pthread_mutex_unlock(&mc.lock)
        result = core.stats_dict(&s)
        result.update(self.mux.stats())
        result["encrypted"] = mc.crypto != NULL      # protocol.md §12
        result["pkt_rcv_forged"] = mc.crypto_forged
        result["pkt_rcv_replayed"] = mc.crypto_replayed
        result["pkt_rcv_unsealed"] = mc.crypto_unsealed
        result["peer_rebinds"] = mc.peer_rebinds
        return result

    def close(self, double linger_seconds):
        """Drain (up to linger_seconds without progress; 0 aborts), shut down, and release the
        connection.  Unless aborting, raise if data was left unacknowledged: the linger ran out,
        or the connection had broken (the connection is released all the same)."""
        cdef MuxConn* mc = self.c
        cdef int64_t linger_us = <int64_t>(linger_seconds * 1e6)
        cdef int64_t pending = 0
        cdef bint broken = False
        cdef bint port_ends
        if mc == NULL or self._closed:
            return
        self._closed = True
        if self.m != NULL:
            port_ends = self.mux is None or self.mux.sole_user()
            with nogil:
                close_conn(self.m, self.channel, mc, linger_us,
                           CLOSE_WAIT_PORT_ENDS if port_ends else CLOSE_WAIT)
                if linger_us > 0:
                    pthread_mutex_lock(&mc.lock)
                    pending = core.conn_pending_send_bytes(&mc.conn)
                    # A peer's orderly SHUTDOWN is its own decision, not a broken connection: a
                    # UDT4 receiver closes once it has read everything, before its last ACK.
                    broken = mc.conn.error != 0
                    if mc.conn.peer_shutdown and not broken:
                        pending = 0
                    pthread_mutex_unlock(&mc.lock)
        if pending > 0:
            raise _errors.unacknowledged_error(pending, "broken" if broken else "linger")
