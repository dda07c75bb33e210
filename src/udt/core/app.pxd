# cython: language_level=3
"""C API of udt/core/app.pyx: the application side of a connection (types and return
conventions in udt/_core.pxd)."""
from libc.stdint cimport int64_t, uint8_t
from posix.uio cimport iovec

from udt._core cimport Conn

# Queue data.  Stream: accepts what fits (0 < n <= length), -6001 when the buffer is full.
# Message (DGRAM): the whole message or nothing: length, -6001 no room now, -5012 larger than
# the send buffer.  ttl_us < 0 = opts.msg_ttl_us; inorder only matters in message mode.
# -2001 broken / peer shut down, -2002 not connected, -5003 zero length message.
# After a successful write, re-read conn_next_send_time (the write may have made data due).
cdef ssize_t conn_write(Conn* conn, const uint8_t* data, size_t length, int64_t ttl_us,
                        bint inorder, int64_t now) noexcept nogil
# Stream read: copies up to cap readable bytes (data readable as soon as it is in order).
# Returns bytes, 0 at EOF (peer shut down or we closed, nothing left), -6002 nothing yet,
# -2001 broken and nothing left, -5009 not a stream socket.
cdef ssize_t conn_read(Conn* conn, uint8_t* out, size_t cap, int64_t now) noexcept nogil
# Stream read without a copy: up to cap readable bytes, from skip bytes after the read
# position, as at most max_iov iovecs over the receive ring (*total = their bytes), left in
# place until conn_read_consume(conn, n) forgets the first n readable bytes.  Slots with
# *movable = 0 stay valid with the lock released while nobody else reads; *movable = 1: they
# may move (path-MTU discovery), copy them before unlocking.  Returns the iovec count, or
# conn_read's 0 / negative codes when nothing is readable past skip.
cdef int conn_read_iov(Conn* conn, size_t skip, iovec* iov, int max_iov, size_t cap, size_t* total,
                       bint* movable) noexcept nogil
cdef size_t conn_read_consume(Conn* conn, size_t count) noexcept nogil
# Message read: one whole message (boundaries kept).  Copies min(size, cap) bytes; a longer
# message is truncated (the rest is discarded, *truncated = 1).  *msg_length = full size.
# Same negative codes as conn_read (-5010 not a message socket).
cdef ssize_t conn_read_message(Conn* conn, uint8_t* out, size_t cap, size_t* msg_length,
                               bint* truncated, int64_t now) noexcept nogil
# Stream: bytes readable now.  Message mode: size of the next deliverable message (0 if none).
cdef int64_t conn_readable_bytes(Conn* conn) noexcept nogil
# Bytes conn_write would accept now (message mode: the largest message that fits now).
cdef int64_t conn_writable_bytes(Conn* conn) noexcept nogil
# Bytes written but not yet acknowledged (UDT_SNDDATA, in bytes).
cdef int64_t conn_pending_send_bytes(Conn* conn) noexcept nogil
# UDT_STATE value.
cdef int conn_state(Conn* conn) noexcept nogil
# UDT_EVENT readiness bits: IN 1 (readable or EOF/error), OUT 4 (writable), ERR 8 (broken/failed).
cdef int conn_poll_events(Conn* conn) noexcept nogil
