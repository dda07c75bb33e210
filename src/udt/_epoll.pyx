# cython: language_level=3
"""Readiness eventfds of connections and listeners (see the .pxd)."""
from libc.stdint cimport uint64_t

from udt._conntable cimport MuxConn
from udt._sync cimport mux_errno
cimport udt.core.engine as core


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void* buf, size_t count)
    ssize_t write(int fd, const void* buf, size_t count)
    int close(int fd)


cdef int conn_readiness(MuxConn* mc) noexcept nogil:
    cdef int state = mc.conn.state
    cdef int bits
    if mc.local_closed:
        return 0
    if mc.mux_dead:
        return READY_IN | READY_OUT | READY_ERR
    bits = core.conn_poll_events(&mc.conn) & READY_ERR
    if state == core.STATE_CONNECTED:
        # as conn_read / conn_write decide whether to wait
        if mc.conn.peer_shutdown or mc.conn.peer_eof or core.conn_readable_bytes(&mc.conn) > 0:
            bits |= READY_IN
        if core.conn_writable_bytes(&mc.conn) > 0:
            bits |= READY_OUT
    elif state > core.STATE_CONNECTED:
        bits |= READY_IN | READY_OUT  # EOF or the error: neither call would wait
    return bits


cdef void conn_ready_update(MuxConn* mc) noexcept nogil:
    cdef int bits = conn_readiness(mc)
    if mc.ready_fd[READY_READ_FD] >= 0:
        ready_flag(mc.ready_fd[READY_READ_FD], &mc.ready_on[READY_READ_FD],
                   bits & (READY_IN | READY_ERR))
    if mc.ready_fd[READY_WRITE_FD] >= 0:
        ready_flag(mc.ready_fd[READY_WRITE_FD], &mc.ready_on[READY_WRITE_FD],
                   bits & (READY_OUT | READY_ERR))


cdef void ready_flag(int fd, int* on, int state) noexcept nogil:
    cdef uint64_t value = 1
    if fd < 0 or on[0] == state:
        return
    if state & ~on[0]:
        # a condition rose (ERR after IN counts too): a new write is a new edge for ET pollers
        write(fd, &value, sizeof(value))  # cannot fail: the counter stays far below its limit
    elif state == 0:
        read(fd, &value, sizeof(value))   # drains the counter: not readable any more
    on[0] = state


cdef int ready_open(int* fd, int* on, int state) noexcept nogil:
    if fd[0] >= 0:
        return 0
    fd[0] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if fd[0] < 0:
        return mux_errno()
    on[0] = 0
    ready_flag(fd[0], on, state)
    return 0


cdef void ready_close(int* fd, int* on) noexcept nogil:
    if fd[0] >= 0:
        close(fd[0])
    fd[0] = -1
    on[0] = 0
