# cython: language_level=3
"""Readiness descriptors: an eventfd per udt socket (and one more for writability), readable
exactly while the socket is ready, so that select/selectors/epoll and udt.epoll can wait on it.

Created lazily (fileno() or an epoll add): a socket nobody polls pays one branch per engine
call.  Changed only on transitions, under the connection's (listener's) lock: one write or read
syscall per transition, none per packet."""
from udt._conntable cimport MuxConn


cdef enum:
    READY_IN = 1        # the EpollEvent bits (UDT4's UDT_EPOLL_IN / _OUT / _ERR)
    READY_OUT = 4
    READY_ERR = 8
    READY_READ_FD = 0   # index in MuxConn.ready_fd / ready_on
    READY_WRITE_FD = 1


# mc's readiness bits now (mc.lock held): IN when a recv would not block (data, EOF, error),
# OUT when a send would not block (room, or an error to report), ERR broken/refused/timed out.
cdef int conn_readiness(MuxConn* mc) noexcept nogil
# Bring mc's eventfds in line with conn_readiness (mc.lock held).
cdef void conn_ready_update(MuxConn* mc) noexcept nogil

cdef inline void conn_ready_note(MuxConn* mc) noexcept nogil:
    """After anything that may change mc's readiness (lock held): nearly free when unpolled."""
    if mc.ready_fd[READY_READ_FD] >= 0 or mc.ready_fd[READY_WRITE_FD] >= 0:
        conn_ready_update(mc)

# Move the eventfd to state (the ready condition bits, 0: none), the caller's lock held: written
# when a condition rises (readable, and a new edge), drained at 0, *on keeps the bits.
cdef void ready_flag(int fd, int* on, int state) noexcept nogil
# Create the eventfd *fd if absent, in the given state: 0, or an errno.
cdef int ready_open(int* fd, int* on, int state) noexcept nogil
# Close the eventfd (if any): it leaves every kernel epoll set it was in.
cdef void ready_close(int* fd, int* on) noexcept nogil
