# cython: language_level=3
"""The listener: accept() from the queue the receive worker fills, close.  The multiplexer
creates the listener (Multiplexer.listen) and answers handshakes for it.

With a Python congestion-control class the receive worker does not accept by itself: creating
the user's CC object and running its init() could take any time, and neither the port's locks
nor its receive worker (which routes for every connection there) may wait on that.  The
listener's accepting thread does it while the new connection is still private to it, then
registers it (UDT4 gives each accepted socket its own CCC)."""
cimport cython

import os
import sys
import threading

from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from udt._connection cimport Connection
from udt._conntable cimport MuxConn, muxconn_decref, muxconn_incref, muxconn_new, same_address
from udt._epoll cimport ready_close, ready_open
from udt._seal cimport server_answer
from udt._muxcore cimport (MuxCore, MuxListener, after_engine_call, allocate_socket_id, close_conn,
                           listener_ready_note, register_conn)
from udt._net cimport (AF_INET, Channel, CSendBatch, send_batch_add, send_batch_clear,
                       send_batch_free, send_batch_new, sockaddr, sockaddr_in, sockaddr_in6,
                       sockaddr_storage)
from udt._sync cimport (mux_count, now_us, pthread_cond_broadcast, pthread_cond_destroy,
                        pthread_cond_signal, pthread_cond_wait, pthread_mutex_destroy,
                        pthread_mutex_lock, pthread_mutex_unlock)
from udt._waits cimport RC_CLOSED, RC_NO_DATA, deadline_from, on_main_thread, raise_result, wait_changed
cimport udt.core.engine as core

from udt.errors import BadSocketError, ErrorCode


# ---------------------------------------------------------------------------------------------
# Python congestion control for accepted connections (the accepting thread, no lock held)
# ---------------------------------------------------------------------------------------------

cdef void* attach_python_cc(core.Conn* conn, void* cc_class) noexcept nogil:
    """Give a freshly conn_init'ed server connection its own instance of the listener's Python
    CC class (before conn_accept runs the CC's init).  Returns our reference to drop later, NULL
    when the class is NULL or failed to instantiate (then the native CC runs; reported)."""
    cdef void* instance = NULL
    if cc_class == NULL:
        return NULL
    with gil:
        try:
            obj = (<object>cc_class)()
            Py_INCREF(obj)
            instance = <void*>obj
        except BaseException as exc:
            try:
                sys.unraisablehook(_UnraisableInfo(type(exc), exc, exc.__traceback__,
                                                   "udt: cannot create the congestion control", None))
            except BaseException:
                pass
    if instance != NULL:
        conn.cc.ops = core.python_cc_ops()
        conn.cc.user = instance
        conn.opts.cc_ops = conn.cc.ops
        conn.opts.cc_user = instance
    return instance


cdef void release_python_cc(void* instance) noexcept nogil:
    if instance != NULL:
        with gil:
            Py_DECREF(<object>instance)


class _UnraisableInfo:
    __slots__ = ("exc_type", "exc_value", "exc_traceback", "err_msg", "object")

    def __init__(self, exc_type, exc_value, exc_traceback, err_msg, obj):
        self.exc_type = exc_type
        self.exc_value = exc_value
        self.exc_traceback = exc_traceback
        self.err_msg = err_msg
        self.object = obj


cdef int defer_accept(MuxListener* lst, const core.AcceptRequest* req) noexcept nogil:
    cdef int i
    cdef core.AcceptRequest* queued
    for i in range(lst.pending_count):
        queued = &lst.pending[(lst.pending_head + i) % lst.capacity]
        if (queued.peer_socket_id == req.peer_socket_id
                and same_address(&queued.peer_addr, <const sockaddr*>&req.peer_addr)):
            return 0  # a repeated conclusion: the accepting thread answers once it is done
    if lst.queue_count + lst.pending_count >= lst.backlog:
        return -1
    memcpy(&lst.pending[(lst.pending_head + lst.pending_count) % lst.capacity], req,
           sizeof(core.AcceptRequest))
    lst.pending_count += 1
    pthread_cond_signal(&lst.pending_wake)
    return 0


cdef void accept_deferred(MuxCore* m, Channel channel, MuxListener* lst, const core.AcceptRequest* req,
                          CSendBatch* batch, uint8_t* area) noexcept nogil:
    """Accept the handshake at the head of lst.pending (the accepting thread).  The connection
    is built, its CC created and initialised before it is registered: nobody else can reach it,
    so no lock is held while the user's code runs.  Then it is entered in the tables and the
    accept queue, and the conclusion answered (a repeat of it reaches the connection)."""
    cdef int64_t now = now_us()
    cdef MuxConn* created
    cdef MuxConn* dropped = NULL
    cdef void* cc_instance
    cdef void* crypto = NULL
    cdef ssize_t reply = 0
    cdef uint32_t socket_id
    cdef int slot
    pthread_mutex_lock(&m.table_lock)
    socket_id = allocate_socket_id(m)
    pthread_mutex_unlock(&m.table_lock)
    created = muxconn_new(socket_id)
    if created != NULL and core.conn_init(&created.conn, &lst.opts, created.socket_id, now) == 0:
        if lst.crypto != NULL:
            # the key exchange (protocol.md §12): the KDF runs here, never in the receive worker
            crypto = server_answer(lst.crypto, req.crypto_offer, created.conn.crypto_answer,
                                   &created.seal)
            if crypto == NULL:
                reply = -core.REQ_CRYPTO_MISMATCH
            else:
                created.crypto = crypto  # owned by the record from now on
                created.conn.crypto_answer_set = True
        if reply == 0:
            cc_instance = attach_python_cc(&created.conn, lst.cc_class)
            reply = core.conn_accept(&created.conn, req, now, area, core.MAX_CONTROL_SIZE)
            release_python_cc(cc_instance)  # the engine holds its own reference now
    else:
        reply = -core.ERR_NO_MEMORY
    now = now_us()
    pthread_mutex_lock(&m.table_lock)
    pthread_mutex_lock(&lst.lock)
    lst.pending_head = (lst.pending_head + 1) % lst.capacity
    lst.pending_count -= 1
    if reply == -core.REQ_CRYPTO_MISMATCH:
        dropped = created
        created = NULL
        lst.crypto_refused[2] += 1  # a wrong passphrase: refused with the reason, counted
        reply = core.listener_refuse(&lst.engine, req, core.REQ_CRYPTO_MISMATCH, area,
                                     core.MAX_CONTROL_SIZE)
    elif reply < 0 or lst.closed or register_conn(m, created, True) != 0:
        dropped = created
        created = NULL
        reply = core.listener_reject(&lst.engine, req, area, core.MAX_CONTROL_SIZE)
    else:
        slot = (lst.queue_head + lst.queue_count) % lst.capacity
        lst.queue[slot] = created  # the queue owns the creation reference
        created.queued_for_accept = 1
        lst.queue_count += 1
        listener_ready_note(lst)
        if lst.waiters > 0:
            pthread_cond_broadcast(&lst.changed)
        muxconn_incref(created)
    pthread_mutex_unlock(&lst.lock)
    pthread_mutex_unlock(&m.table_lock)
    muxconn_decref(dropped)  # frees it; its CC's close() runs here, with no lock held
    if reply > 0:
        send_batch_clear(batch)
        memcpy(&batch.address, &req.peer_addr, sizeof(sockaddr_storage))
        batch.address_length = (sizeof(sockaddr_in) if req.peer_addr.ss_family == AF_INET
                                else sizeof(sockaddr_in6))
        send_batch_add(batch, area, <size_t>reply)
        if channel.c_send_batch(batch, 0) < 0:
            mux_count(&m.send_errors, 1)
        else:
            mux_count(&m.datagrams_out, 1)
    if created != NULL:
        pthread_mutex_lock(&created.lock)
        after_engine_call(m, channel, created, core.EV_CONNECTED, now, False)
        pthread_mutex_unlock(&created.lock)
        muxconn_decref(created)


# ---------------------------------------------------------------------------------------------
# the listener object
# ---------------------------------------------------------------------------------------------

@cython.no_gc
cdef class Listener:
    """The port's listening endpoint: the engine's stateless listener plus an accept queue."""

    def accept(self, timeout):
        """The next accepted Connection; waits (GIL released) up to timeout seconds."""
        cdef MuxListener* lst = self.lst
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
                    listener_ready_note(lst)
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

    cdef _start_acceptor(self):
        """Start the accepting thread (a Python CC class: see accept_deferred)."""
        self._reply_batch = send_batch_new(1, 1)
        self._reply_area = <uint8_t*>malloc(core.MAX_CONTROL_SIZE)
        if self._reply_batch == NULL or self._reply_area == NULL:
            raise MemoryError()
        name = f"udt-mux-{self.mux.local_address[1]}-accept"
        self._acceptor = threading.Thread(target=self._acceptor_main, name=name, daemon=True)
        self._acceptor.start()

    def _acceptor_main(self):
        """The accepting thread: one queued handshake after the other until the listener closes."""
        cdef MuxListener* lst = self.lst
        cdef core.AcceptRequest req
        cdef bint closed = False
        with nogil:
            while not closed:
                pthread_mutex_lock(&lst.lock)
                while lst.pending_count == 0 and not lst.closed:
                    pthread_cond_wait(&lst.pending_wake, &lst.lock)
                closed = lst.closed
                if not closed:
                    req = lst.pending[lst.pending_head]
                pthread_mutex_unlock(&lst.lock)
                if not closed:
                    accept_deferred(self.m, self.channel, lst, &req, self._reply_batch,
                                    self._reply_area)

    def crypto_stats(self):
        """Encryption refusals of this listener (protocol.md §12), by reason."""
        cdef MuxListener* lst = self.lst
        if lst == NULL:
            return {}
        return {
            "crypto_refused_unexpected": lst.crypto_refused[0],
            "crypto_refused_no_passphrase": lst.crypto_refused[1],
            "crypto_refused_mismatch": lst.crypto_refused[2],
        }

    def set_backlog(self, int backlog):
        cdef MuxListener* lst = self.lst
        if lst != NULL:
            with nogil:
                pthread_mutex_lock(&lst.lock)
                lst.backlog = min(max(1, backlog), lst.capacity)
                pthread_mutex_unlock(&lst.lock)

    def events(self):
        cdef MuxListener* lst = self.lst
        cdef int count
        if lst == NULL:
            return 0
        with nogil:
            pthread_mutex_lock(&lst.lock)
            count = lst.queue_count
            pthread_mutex_unlock(&lst.lock)
        return 1 if count > 0 else 0

    def readiness(self):
        """EpollEvent bits now: IN while accept() would not wait (a connection queued, or
        closed under it)."""
        cdef MuxListener* lst = self.lst
        cdef bint ready
        if lst == NULL:
            return 0
        with nogil:
            pthread_mutex_lock(&lst.lock)
            ready = lst.queue_count > 0 or lst.closed != 0
            pthread_mutex_unlock(&lst.lock)
        return 1 if ready else 0

    def readiness_fd(self):
        """The listener's readiness eventfd (created now if absent): readable while
        readiness() is IN."""
        cdef MuxListener* lst = self.lst
        cdef int error = 0, fd = -1
        if lst == NULL or lst.closed:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "socket is closed")
        with nogil:
            pthread_mutex_lock(&lst.lock)
            if lst.closed:
                error = -1
            else:
                error = ready_open(&lst.ready_fd, &lst.ready_on, lst.queue_count > 0)
                fd = lst.ready_fd
            pthread_mutex_unlock(&lst.lock)
        if error == -1:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "socket is closed")
        if error:
            raise OSError(error, os.strerror(error))
        return fd

    def close(self):
        """Stop listening: wake accept() callers, abort connections nobody accepted yet.
        The structure itself is freed with this object (an accept() in progress holds it)."""
        cdef MuxListener* lst = self.lst
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
            ready_close(&lst.ready_fd, &lst.ready_on)  # leaves every poller
            pthread_cond_broadcast(&lst.changed)
            pthread_cond_broadcast(&lst.pending_wake)
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
        acceptor = self._acceptor
        if acceptor is not None and acceptor is not threading.current_thread():
            acceptor.join()  # it may be in a CC's init(): it leaves right after

    def __dealloc__(self):
        cdef MuxListener* lst = self.lst
        if lst == NULL:
            return
        if not lst.closed:
            self.close()
        self.lst = NULL
        pthread_mutex_destroy(&lst.lock)
        pthread_cond_destroy(&lst.changed)
        pthread_cond_destroy(&lst.pending_wake)
        free(lst.pending)
        free(lst.queue)
        if lst.crypto != NULL:
            Py_DECREF(<object>lst.crypto)
        free(lst)
        send_batch_free(self._reply_batch)
        free(self._reply_area)
