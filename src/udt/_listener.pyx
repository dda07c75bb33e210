# cython: language_level=3
"""The listener: accept() from the queue the receive worker fills, close.  The multiplexer
creates the listener (Multiplexer.listen) and answers handshakes for it."""
cimport cython

from libc.stdint cimport int64_t
from libc.stdlib cimport free

from udt._connection cimport Connection
from udt._conntable cimport MuxConn, muxconn_decref
from udt._muxcore cimport MuxCore, MuxListener, close_conn
from udt._sync cimport (pthread_cond_broadcast, pthread_cond_destroy, pthread_mutex_destroy,
                        pthread_mutex_lock, pthread_mutex_unlock)
from udt._waits cimport RC_CLOSED, RC_NO_DATA, deadline_from, on_main_thread, raise_result, wait_changed

from udt.errors import BadSocketError, ErrorCode


@cython.no_gc
cdef class Listener:
    """The port's listening endpoint: the engine's stateless listener plus an accept queue."""

    def accept(self, timeout):
        """The next accepted Connection; waits (GIL released) up to timeout seconds."""
        cdef MuxListener* lst = self.l
        cdef MuxConn* mc = NULL
        cdef int result = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t signal_check = 0
        cdef bint main_thread = on_main_thread()
        if lst == NULL or lst.closed:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "socket is closed")
        with nogil:
            pthread_mutex_lock(&lst.lock)
            while True:
                if lst.closed:
                    result = RC_CLOSED
                    break
                if lst.queue_count > 0:
                    mc = lst.queue[lst.queue_head]
                    lst.queue[lst.queue_head] = NULL
                    lst.queue_head = (lst.queue_head + 1) % lst.capacity
                    lst.queue_count -= 1
                    mc.queued_for_accept = 0
                    break
                if deadline == 0:
                    result = RC_NO_DATA
                    break
                result = wait_changed(&lst.changed, &lst.lock, &lst.waiters, deadline, main_thread,
                                      &signal_check)
                if result != 0:
                    break
            pthread_mutex_unlock(&lst.lock)
        if mc == NULL:
            raise_result(result, False)
        conn = Connection.__new__(Connection)
        (<Connection>conn).c = mc  # the queue's reference
        (<Connection>conn).m = self.m
        (<Connection>conn).channel = self.channel
        (<Connection>conn).mux = self.mux
        return conn

    def set_backlog(self, int backlog):
        cdef MuxListener* lst = self.l
        if lst != NULL:
            with nogil:
                pthread_mutex_lock(&lst.lock)
                lst.backlog = min(max(1, backlog), lst.capacity)
                pthread_mutex_unlock(&lst.lock)

    def events(self):
        cdef MuxListener* lst = self.l
        cdef int count
        if lst == NULL:
            return 0
        with nogil:
            pthread_mutex_lock(&lst.lock)
            count = lst.queue_count
            pthread_mutex_unlock(&lst.lock)
        return 1 if count > 0 else 0

    def close(self):
        """Stop listening: wake accept() callers, abort connections nobody accepted yet.
        The structure itself is freed with this object (an accept() in progress holds it)."""
        cdef MuxListener* lst = self.l
        cdef MuxCore* m = self.m
        cdef MuxConn* mc
        if lst == NULL or m == NULL:
            return
        with nogil:
            pthread_mutex_lock(&m.table_lock)
            if m.listener == lst:
                m.listener = NULL
            pthread_mutex_unlock(&m.table_lock)
            # from here the receive worker cannot reach lst (it looks it up under table_lock)
            pthread_mutex_lock(&lst.lock)
            lst.closed = 1
            pthread_cond_broadcast(&lst.changed)
            while lst.queue_count > 0:
                mc = lst.queue[lst.queue_head]
                lst.queue[lst.queue_head] = NULL
                lst.queue_head = (lst.queue_head + 1) % lst.capacity
                lst.queue_count -= 1
                mc.queued_for_accept = 0
                pthread_mutex_unlock(&lst.lock)
                close_conn(m, self.channel, mc, 0, False)
                muxconn_decref(mc)
                pthread_mutex_lock(&lst.lock)
            pthread_mutex_unlock(&lst.lock)

    def __dealloc__(self):
        cdef MuxListener* lst = self.l
        if lst == NULL:
            return
        if not lst.closed:
            self.close()
        self.l = NULL
        pthread_mutex_destroy(&lst.lock)
        pthread_cond_destroy(&lst.changed)
        free(lst.queue)
        free(lst)
