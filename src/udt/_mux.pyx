# cython: language_level=3
"""The multiplexer: one UDP channel per (address, port, family), shared by every udt socket bound
there, served by two worker threads that run without the GIL.

* receive worker: waits in the channel's ``recv_batch`` until a datagram arrives or the nearest
  timer of its connections is due (no fixed tick: an idle link costs no wakeups), dispatches each
  datagram by destination socket ID (0: the listener or a rendezvous socket, by peer address),
  feeds the engine under the connection's lock, runs due timers, wakes user threads and the send
  worker.
* send worker: a heap of connections ordered by next send time; sleeps on a condition variable
  until the earliest, takes a burst of datagrams (zero-copy: header + payload pointer) under the
  connection lock, sends them in one GSO ``sendmsg`` with the lock released.
* user threads: copy into / out of the engine's buffers under the connection lock and wait on the
  connection's condition variable with the GIL released.

Lock order and the structures are in ``_mux.pxd``.  Time is CLOCK_MONOTONIC in microseconds.
"""
cimport cython

import atexit
import os
import threading
import weakref

from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EAGAIN, EBADF, EINTR, ETIMEDOUT
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport clockid_t

cimport udt._core as core
from udt._net cimport (AF_INET, AF_INET6, Channel, CRecvBatch, CSendBatch, address_from_sockaddr,
                       in6_addr, recv_batch_free, recv_batch_new, recv_batch_source,
                       recv_batch_source_length, send_batch_add, send_batch_add_pair,
                       send_batch_clear, send_batch_free, send_batch_new, sockaddr,
                       sockaddr_from_address, sockaddr_in, sockaddr_in6, sockaddr_storage,
                       socklen_t)
from udt._net import Channel as _Channel

from udt import errors as _errors
from udt.errors import BadSocketError, ErrorCode, error_from_code


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* mutex, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* mutex)
    int pthread_mutex_lock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)
    int pthread_condattr_init(pthread_condattr_t* attr)
    int pthread_condattr_setclock(pthread_condattr_t* attr, clockid_t clock)
    int pthread_condattr_destroy(pthread_condattr_t* attr)
    int pthread_cond_init(pthread_cond_t* cond, const pthread_condattr_t* attr)
    int pthread_cond_destroy(pthread_cond_t* cond)
    int pthread_cond_wait(pthread_cond_t* cond, pthread_mutex_t* mutex)
    int pthread_cond_timedwait(pthread_cond_t* cond, pthread_mutex_t* mutex, const timespec* abstime)
    int pthread_cond_signal(pthread_cond_t* cond)
    int pthread_cond_broadcast(pthread_cond_t* cond)


cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)
    ssize_t pwrite(int fd, const void* buf, size_t count, long long offset)


cdef extern from *:
    """
    static inline int mux_atomic_add(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline int mux_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void mux_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    #include <stdint.h>
    static inline void mux_count(int64_t *p, int64_t v) { __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
    static inline int64_t mux_read_count(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    #include <errno.h>
    static inline int mux_errno(void) { return errno; }
    """
    int mux_atomic_add(int* p, int v) nogil
    int mux_atomic_load(int* p) nogil
    void mux_atomic_store(int* p, int v) nogil
    void mux_count(int64_t* p, int64_t v) nogil
    int64_t mux_read_count(int64_t* p) nogil
    int mux_errno() nogil


cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident() nogil
    int PyErr_CheckSignals()   # no except clause: the caller propagates with propagate_pending()


cdef int propagate_pending() except -1:
    """Raise the exception a signal handler left set (PyErr_CheckSignals returned -1)."""
    return -1


# Internal return codes of the waiting calls (UDT codes are returned negated, 1000..7000).
cdef enum:
    RC_CLOSED = -90001          # closed locally (this socket or its multiplexer)
    RC_SIGNAL = -90002          # a Python exception (KeyboardInterrupt …) is set
    RC_TIMEOUT = -6003
    RC_NO_BUFFER = -6001
    RC_NO_DATA = -6002
    RC_OS_ERROR = -90003        # errno of a file operation in *os_error

cdef enum:
    MAIN_THREAD_SLICE_US = 200000   # the main thread checks for Ctrl-C this often while waiting
    SEND_WAIT_US = 100000           # a full kernel send buffer is waited on at most this long
    RECV_SLOTS = 32                 # GRO-sized receive buffers per multiplexer
    MIN_TIMER_STEP_US = 1000        # a timer that does not advance is retried after this
    TABLE_INITIAL = 64

cdef uint32_t WAKE_EVENTS = (core.EV_READABLE | core.EV_WRITABLE | core.EV_CONNECTED
                             | core.EV_CONNECT_FAILED | core.EV_BROKEN | core.EV_CLOSED
                             | core.EV_PEER_SHUTDOWN | core.EV_PEER_ERROR)

cdef unsigned long _main_thread_ident = threading.main_thread().ident


# ---------------------------------------------------------------------------------------------
# time and waiting
# ---------------------------------------------------------------------------------------------

cdef inline int64_t now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef int cond_init(pthread_cond_t* cond) noexcept nogil:
    """A condition variable whose timed waits use CLOCK_MONOTONIC (immune to clock jumps)."""
    cdef pthread_condattr_t attr
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    cdef int result = pthread_cond_init(cond, &attr)
    pthread_condattr_destroy(&attr)
    return result


cdef void cond_wait_until(pthread_cond_t* cond, pthread_mutex_t* mutex, int64_t deadline) noexcept nogil:
    """Wait until signalled or the monotonic deadline (µs; -1 = no deadline)."""
    cdef timespec ts
    if deadline < 0:
        pthread_cond_wait(cond, mutex)
        return
    ts.tv_sec = deadline // 1000000
    ts.tv_nsec = (deadline % 1000000) * 1000
    pthread_cond_timedwait(cond, mutex, &ts)


cdef int wait_changed(pthread_cond_t* cond, pthread_mutex_t* mutex, int* waiters,
                      int64_t deadline, bint main_thread, int64_t* next_signal_check) noexcept nogil:
    """One wait of a user thread on a connection/listener condition (mutex held, GIL released).

    0 after a wake-up (the caller re-checks its condition), RC_TIMEOUT once the deadline passed,
    RC_SIGNAL when the main thread has a pending Python exception (Ctrl-C)."""
    cdef int64_t now = now_us(), until = deadline
    cdef int signalled = 0
    if deadline >= 0 and now >= deadline:
        return RC_TIMEOUT
    if main_thread:
        if next_signal_check[0] == 0:
            next_signal_check[0] = now + MAIN_THREAD_SLICE_US
        if until < 0 or until > next_signal_check[0]:
            until = next_signal_check[0]
    waiters[0] += 1
    cond_wait_until(cond, mutex, until)
    waiters[0] -= 1
    if main_thread and now_us() >= next_signal_check[0]:
        next_signal_check[0] = now_us() + MAIN_THREAD_SLICE_US
        pthread_mutex_unlock(mutex)
        with gil:
            signalled = PyErr_CheckSignals()
        pthread_mutex_lock(mutex)
        if signalled < 0:
            return RC_SIGNAL
    return 0


cdef inline int64_t deadline_from(object timeout) except? -2:
    """Monotonic deadline for a Python timeout: None -> -1 (forever), 0 -> 0 (non-blocking)."""
    if timeout is None:
        return -1
    seconds = float(timeout)
    if seconds <= 0.0:
        return 0
    return now_us() + <int64_t>(seconds * 1e6)


# ---------------------------------------------------------------------------------------------
# addresses
# ---------------------------------------------------------------------------------------------

cdef bint same_address(const sockaddr_storage* a, const sockaddr* b) noexcept nogil:
    """Same family, port and IP (flowinfo and scope ignored)."""
    cdef const sockaddr_in* a4
    cdef const sockaddr_in* b4
    cdef const sockaddr_in6* a6
    cdef const sockaddr_in6* b6
    if a.ss_family != b.sa_family:
        return False
    if a.ss_family == AF_INET:
        a4 = <const sockaddr_in*>a
        b4 = <const sockaddr_in*>b
        return a4.sin_port == b4.sin_port and a4.sin_addr.s_addr == b4.sin_addr.s_addr
    if a.ss_family == AF_INET6:
        a6 = <const sockaddr_in6*>a
        b6 = <const sockaddr_in6*>b
        return (a6.sin6_port == b6.sin6_port
                and memcmp(&a6.sin6_addr, &b6.sin6_addr, sizeof(in6_addr)) == 0)
    return False


cdef uint64_t address_hash(const sockaddr* addr) noexcept nogil:
    """FNV-1a over port and IP bytes (only used to spread the peer table)."""
    cdef uint64_t h = 1469598103934665603ULL
    cdef const uint8_t* p
    cdef int n, i
    if addr.sa_family == AF_INET:
        p = <const uint8_t*>&(<const sockaddr_in*>addr).sin_port
        n = 2 + 4  # sin_port and sin_addr are adjacent
    elif addr.sa_family == AF_INET6:
        p = <const uint8_t*>&(<const sockaddr_in6*>addr).sin6_addr
        n = 16
        h ^= (<const sockaddr_in6*>addr).sin6_port
        h *= 1099511628211ULL
    else:
        return 0
    for i in range(n):
        h ^= p[i]
        h *= 1099511628211ULL
    return h


cdef inline uint64_t peer_key(const sockaddr* addr, uint32_t peer_socket_id) noexcept nogil:
    return address_hash(addr) ^ (<uint64_t>peer_socket_id * 0x9E3779B97F4A7C15ULL)


# ---------------------------------------------------------------------------------------------
# connections: allocation and references
# ---------------------------------------------------------------------------------------------

cdef MuxConn* muxconn_new(uint32_t socket_id) noexcept nogil:
    cdef MuxConn* mc = <MuxConn*>calloc(1, sizeof(MuxConn))
    if mc == NULL:
        return NULL
    if pthread_mutex_init(&mc.lock, NULL) != 0:
        free(mc)
        return NULL
    if cond_init(&mc.changed) != 0:
        pthread_mutex_destroy(&mc.lock)
        free(mc)
        return NULL
    mc.refs = 1
    mc.socket_id = socket_id
    mc.heap_pos[0] = -1
    mc.heap_pos[1] = -1
    return mc


cdef inline void muxconn_incref(MuxConn* mc) noexcept nogil:
    mux_atomic_add(&mc.refs, 1)


cdef void muxconn_decref(MuxConn* mc) noexcept nogil:
    """Drop a reference; the last one frees the engine state (conn_free) and the memory."""
    if mc == NULL:
        return
    if mux_atomic_add(&mc.refs, -1) == 0:
        core.conn_free(&mc.conn)
        pthread_cond_destroy(&mc.changed)
        pthread_mutex_destroy(&mc.lock)
        free(mc)


# ---------------------------------------------------------------------------------------------
# the connection tables (open addressing; callers hold table_lock)
# ---------------------------------------------------------------------------------------------

cdef inline size_t mix64(uint64_t key) noexcept nogil:
    key ^= key >> 33
    key *= 0xff51afd7ed558ccdULL
    key ^= key >> 33
    return <size_t>key


cdef int table_init(ConnTable* t, size_t capacity) noexcept nogil:
    t.slots = <MuxConn**>calloc(capacity, sizeof(MuxConn*))
    t.keys = <uint64_t*>calloc(capacity, sizeof(uint64_t))
    if t.slots == NULL or t.keys == NULL:
        free(t.slots)
        free(t.keys)
        t.slots = NULL
        t.keys = NULL
        return -1
    t.capacity = capacity
    t.count = 0
    return 0


cdef void table_free(ConnTable* t) noexcept nogil:
    free(t.slots)
    free(t.keys)
    t.slots = NULL
    t.keys = NULL
    t.capacity = 0
    t.count = 0


cdef int table_insert(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil:
    """Add an entry (keys may repeat in the peer table); grows at half load.  -1: no memory."""
    cdef ConnTable bigger
    cdef size_t i, mask
    if (t.count + 1) * 2 > t.capacity:
        if table_init(&bigger, t.capacity * 2) != 0:
            return -1
        for i in range(t.capacity):
            if t.slots[i] != NULL:
                table_insert(&bigger, t.keys[i], t.slots[i])
        table_free(t)
        t[0] = bigger
    mask = t.capacity - 1
    i = mix64(key) & mask
    while t.slots[i] != NULL:
        i = (i + 1) & mask
    t.slots[i] = mc
    t.keys[i] = key
    t.count += 1
    return 0


cdef MuxConn* table_find_id(ConnTable* t, uint32_t socket_id) noexcept nogil:
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(socket_id) & mask
    while t.slots[i] != NULL:
        if t.keys[i] == socket_id:
            return t.slots[i]
        i = (i + 1) & mask
    return NULL


cdef MuxConn* table_find_peer(ConnTable* t, const sockaddr* addr, uint32_t peer_socket_id) noexcept nogil:
    cdef uint64_t key = peer_key(addr, peer_socket_id)
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(key) & mask
    cdef MuxConn* mc
    while t.slots[i] != NULL:
        mc = t.slots[i]
        if (t.keys[i] == key and mc.conn.peer_socket_id == peer_socket_id
                and same_address(&mc.conn.peer_addr, addr)):
            return mc
        i = (i + 1) & mask
    return NULL


cdef void table_remove(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil:
    """Remove the entry for mc (backward-shift deletion keeps probe chains intact)."""
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(key) & mask, j, home
    while t.slots[i] != NULL and t.slots[i] != mc:
        i = (i + 1) & mask
    if t.slots[i] == NULL:
        return
    t.slots[i] = NULL
    t.count -= 1
    j = i
    while True:
        j = (j + 1) & mask
        if t.slots[j] == NULL:
            return
        home = mix64(t.keys[j]) & mask
        # move slot j back to the hole at i unless its home lies cyclically in (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            t.slots[i] = t.slots[j]
            t.keys[i] = t.keys[j]
            t.slots[j] = NULL
            i = j


# ---------------------------------------------------------------------------------------------
# the heaps (binary min-heaps keyed by MuxConn.heap_key[which]; callers hold the heap's lock)
# ---------------------------------------------------------------------------------------------

cdef int heap_init(ConnHeap* h, int which, int capacity) noexcept nogil:
    h.items = <MuxConn**>calloc(capacity, sizeof(MuxConn*))
    if h.items == NULL:
        return -1
    h.capacity = capacity
    h.count = 0
    h.which = which
    return 0


cdef inline void heap_set(ConnHeap* h, int i, MuxConn* mc) noexcept nogil:
    h.items[i] = mc
    mc.heap_pos[h.which] = i


cdef void heap_up(ConnHeap* h, int i) noexcept nogil:
    cdef MuxConn* mc = h.items[i]
    cdef int parent
    cdef int w = h.which
    while i > 0:
        parent = (i - 1) // 2
        if h.items[parent].heap_key[w] <= mc.heap_key[w]:
            break
        heap_set(h, i, h.items[parent])
        i = parent
    heap_set(h, i, mc)


cdef void heap_down(ConnHeap* h, int i) noexcept nogil:
    cdef MuxConn* mc = h.items[i]
    cdef int child
    cdef int w = h.which
    while True:
        child = 2 * i + 1
        if child >= h.count:
            break
        if child + 1 < h.count and h.items[child + 1].heap_key[w] < h.items[child].heap_key[w]:
            child += 1
        if mc.heap_key[w] <= h.items[child].heap_key[w]:
            break
        heap_set(h, i, h.items[child])
        i = child
    heap_set(h, i, mc)


cdef int heap_push_or_lower(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil:
    """Queue mc at key, or move it earlier if already queued later.  Returns 1 when mc became
    the earliest entry (the worker may have to wake), 0 otherwise, -1 on no memory.  A newly
    queued entry takes a reference."""
    cdef int w = h.which
    cdef MuxConn** grown
    cdef int pos = mc.heap_pos[w]
    if pos >= 0:
        if key >= mc.heap_key[w]:
            return 0
        mc.heap_key[w] = key
        heap_up(h, pos)
        return 1 if mc.heap_pos[w] == 0 else 0
    if h.count == h.capacity:
        grown = <MuxConn**>calloc(h.capacity * 2, sizeof(MuxConn*))
        if grown == NULL:
            return -1
        memcpy(grown, h.items, h.count * sizeof(MuxConn*))
        free(h.items)
        h.items = grown
        h.capacity *= 2
    muxconn_incref(mc)
    mc.heap_key[w] = key
    h.count += 1
    heap_set(h, h.count - 1, mc)
    heap_up(h, h.count - 1)
    return 1 if mc.heap_pos[w] == 0 else 0


cdef void heap_set_key(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil:
    """Re-key a queued entry (earlier or later)."""
    cdef int w = h.which
    cdef int pos = mc.heap_pos[w]
    cdef int64_t old = mc.heap_key[w]
    mc.heap_key[w] = key
    if key < old:
        heap_up(h, pos)
    else:
        heap_down(h, pos)


cdef MuxConn* heap_remove_at(ConnHeap* h, int pos) noexcept nogil:
    """Take the entry at pos out; its reference passes to the caller."""
    cdef int w = h.which
    cdef MuxConn* mc = h.items[pos]
    cdef MuxConn* last
    h.count -= 1
    mc.heap_pos[w] = -1
    if pos < h.count:
        last = h.items[h.count]
        heap_set(h, pos, last)
        if pos > 0 and last.heap_key[w] < h.items[(pos - 1) // 2].heap_key[w]:
            heap_up(h, pos)
        else:
            heap_down(h, pos)
    h.items[h.count] = NULL
    return mc


# ---------------------------------------------------------------------------------------------
# scheduling (called with the connection lock held)
# ---------------------------------------------------------------------------------------------

cdef void schedule_send(MuxCore* m, MuxConn* mc, int64_t now) noexcept nogil:
    """Queue mc in the send heap at its next send time; wake the send worker if it sleeps
    past that time."""
    cdef int64_t when = core.conn_next_send_time(&mc.conn, now)
    cdef int earliest
    if when < 0 or mc.mux_dead:
        return
    pthread_mutex_lock(&m.send_lock)
    earliest = heap_push_or_lower(&m.send_heap, mc, when)
    if earliest == 1 and m.send_sleep_until != -2 and (m.send_sleep_until < 0 or when < m.send_sleep_until):
        m.send_sleep_until = -2  # one signal is enough until it sleeps again
        pthread_cond_signal(&m.send_wake)
    pthread_mutex_unlock(&m.send_lock)


cdef void schedule_timer(MuxCore* m, Channel channel, MuxConn* mc, int64_t now,
                         bint from_receive_worker) noexcept nogil:
    """Put mc's next timer deadline in the timer heap; interrupt the receive worker's wait when
    the deadline is earlier than the one it sleeps towards."""
    cdef int64_t when = core.conn_next_timer(&mc.conn)
    cdef bint wake = False
    cdef MuxConn* removed
    if mc.mux_dead:
        return
    pthread_mutex_lock(&m.timer_lock)
    if when < 0:
        if mc.heap_pos[HEAP_TIMER] >= 0:
            removed = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
            pthread_mutex_unlock(&m.timer_lock)
            muxconn_decref(removed)  # never the last reference: the caller holds one
            return
    else:
        if when <= now - 1000000:
            when = now  # a deadline long past still runs at once, never "before" now
        if mc.heap_pos[HEAP_TIMER] >= 0:
            heap_set_key(&m.timer_heap, mc, when)
        else:
            heap_push_or_lower(&m.timer_heap, mc, when)
        if (not from_receive_worker and m.rx_sleep_until != -2
                and (m.rx_sleep_until < 0 or when < m.rx_sleep_until)):
            m.rx_sleep_until = -2
            wake = True
    pthread_mutex_unlock(&m.timer_lock)
    if wake:
        channel.c_interrupt()


cdef void after_engine_call(MuxCore* m, Channel channel, MuxConn* mc, uint32_t events, int64_t now,
                            bint from_receive_worker) noexcept nogil:
    """What follows every engine call on mc (lock held): reschedule sending and timers, wake
    the user threads waiting on it when something they wait for changed."""
    schedule_send(m, mc, now)
    schedule_timer(m, channel, mc, now, from_receive_worker)
    if mc.waiters > 0 and (events & WAKE_EVENTS):
        pthread_cond_broadcast(&mc.changed)


cdef void unschedule(MuxCore* m, MuxConn* mc) noexcept nogil:
    """Take mc out of both heaps (its references are dropped)."""
    cdef MuxConn* a = NULL
    cdef MuxConn* b = NULL
    pthread_mutex_lock(&m.send_lock)
    if mc.heap_pos[HEAP_SEND] >= 0:
        a = heap_remove_at(&m.send_heap, mc.heap_pos[HEAP_SEND])
    pthread_mutex_unlock(&m.send_lock)
    pthread_mutex_lock(&m.timer_lock)
    if mc.heap_pos[HEAP_TIMER] >= 0:
        b = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
    pthread_mutex_unlock(&m.timer_lock)
    muxconn_decref(a)
    muxconn_decref(b)


# ---------------------------------------------------------------------------------------------
# registration (table_lock)
# ---------------------------------------------------------------------------------------------

cdef uint32_t allocate_socket_id(MuxCore* m) noexcept nogil:
    """A fresh nonzero 31-bit socket ID not in use here (UDT4 counts down from a random start)."""
    cdef uint32_t candidate
    while True:
        candidate = m.next_socket_id & 0x7FFFFFFF
        m.next_socket_id -= 1
        if candidate != 0 and table_find_id(&m.by_id, candidate) == NULL:
            return candidate


cdef int register_conn(MuxCore* m, MuxConn* mc, bint by_peer) noexcept nogil:
    """Enter mc in the ID table (and the peer table); each entry holds a reference."""
    if table_insert(&m.by_id, mc.socket_id, mc) != 0:
        return -1
    muxconn_incref(mc)
    mc.in_tables = 1
    if by_peer:
        if table_insert(&m.by_peer, peer_key(<const sockaddr*>&mc.conn.peer_addr,
                                             mc.conn.peer_socket_id), mc) == 0:
            muxconn_incref(mc)
            mc.in_peer_table = 1
    if mc.conn.rendezvous:
        mc.rendezvous_next = m.rendezvous
        m.rendezvous = mc
        muxconn_incref(mc)
    return 0


cdef void remember_closed(MuxCore* m, uint32_t socket_id, uint32_t peer_socket_id,
                          const sockaddr_storage* peer, int64_t now) noexcept nogil:
    """Note a connection we closed (table_lock held), overwriting the oldest entry."""
    cdef ClosedConn* e = &m.closed[m.closed_next]
    m.closed_next = (m.closed_next + 1) % CLOSED_MEMORY
    e.socket_id = socket_id
    e.peer_socket_id = peer_socket_id
    memcpy(&e.peer_addr, peer, sizeof(sockaddr_storage))
    e.until = now + CLOSED_MEMORY_US
    e.last_reply = 0


cdef uint32_t closed_peer_to_answer(MuxCore* m, uint32_t socket_id, const sockaddr* source,
                                    int kind, int64_t now) noexcept nogil:
    """The peer socket ID to send a SHUTDOWN to when a datagram for socket_id (which we have
    closed) arrives from its peer, or 0 (table_lock held).  A SHUTDOWN or error signal from
    the peer needs no answer; answers to one peer are spaced by CLOSED_REPLY_GAP_US."""
    cdef int i
    cdef ClosedConn* e
    if kind == core.PKT_SHUTDOWN or kind == core.PKT_ERROR_SIGNAL:
        return 0
    for i in range(CLOSED_MEMORY):
        e = &m.closed[i]
        if e.socket_id == socket_id and e.until > now and same_address(&e.peer_addr, source):
            if now - e.last_reply < CLOSED_REPLY_GAP_US:
                return 0
            e.last_reply = now
            return e.peer_socket_id
    return 0


cdef void unregister_conn(MuxCore* m, MuxConn* mc) noexcept nogil:
    """Remove mc from every table (table_lock held); drops the tables' references."""
    cdef MuxConn** link
    cdef int drops = 0
    if mc.in_tables:
        table_remove(&m.by_id, mc.socket_id, mc)
        mc.in_tables = 0
        drops += 1
    if mc.in_peer_table:
        table_remove(&m.by_peer, peer_key(<const sockaddr*>&mc.conn.peer_addr,
                                          mc.conn.peer_socket_id), mc)
        mc.in_peer_table = 0
        drops += 1
    link = &m.rendezvous
    while link[0] != NULL:
        if link[0] == mc:
            link[0] = mc.rendezvous_next
            mc.rendezvous_next = NULL
            drops += 1
            break
        link = &link[0].rendezvous_next
    while drops > 0:
        muxconn_decref(mc)  # the caller holds its own reference: never the last
        drops -= 1


# ---------------------------------------------------------------------------------------------
# Python congestion control for accepted connections (UDT4 gives each one its own CCC object)
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
                import sys
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


# ---------------------------------------------------------------------------------------------
# the multiplexer
# ---------------------------------------------------------------------------------------------

_registry = {}                      # (family, host, port) -> Multiplexer, for reuse_addr sharing
_registry_lock = threading.Lock()
_all_muxes = weakref.WeakSet()       # every running multiplexer (atexit stops them)


cdef class Multiplexer:
    """One UDP channel and its two worker threads, shared by the udt sockets bound to it.

    Reference counted by the sockets (:meth:`retain`/:meth:`release`); the last release stops
    the workers, closes the channel and frees the port.
    """

    def __cinit__(self):
        self._m = <MuxCore*>calloc(1, sizeof(MuxCore))
        if self._m == NULL:
            raise MemoryError()
        self._threads = []
        self._stopped = True

    def __dealloc__(self):
        cdef MuxCore* m = self._m
        if m == NULL:
            return
        if not self._stopped:
            # never started workers or never stopped: nothing runs without a reference to us
            pass
        self._free_core()

    cdef _free_core(self):
        cdef MuxCore* m = self._m
        self._m = NULL
        if m == NULL:
            return
        table_free(&m.by_id)
        table_free(&m.by_peer)
        free(m.send_heap.items)
        free(m.timer_heap.items)
        send_batch_free(m.tx_batch)
        send_batch_free(m.reply_batch)
        recv_batch_free(m.rx_batch)
        free(m.tx_headers)
        free(m.reply_area)
        pthread_mutex_destroy(&m.table_lock)
        pthread_mutex_destroy(&m.send_lock)
        pthread_mutex_destroy(&m.timer_lock)
        pthread_cond_destroy(&m.send_wake)
        free(m)

    cdef _setup(self, Channel channel):
        cdef MuxCore* m = self._m
        self.channel = channel
        m.family = channel.family
        m.next_socket_id = int.from_bytes(os.urandom(4), "little") | 1
        if (pthread_mutex_init(&m.table_lock, NULL) != 0 or pthread_mutex_init(&m.send_lock, NULL) != 0
                or pthread_mutex_init(&m.timer_lock, NULL) != 0 or cond_init(&m.send_wake) != 0):
            raise MemoryError()
        if (table_init(&m.by_id, TABLE_INITIAL) != 0 or table_init(&m.by_peer, TABLE_INITIAL) != 0
                or heap_init(&m.send_heap, HEAP_SEND, 64) != 0
                or heap_init(&m.timer_heap, HEAP_TIMER, 64) != 0):
            raise MemoryError()
        m.tx_batch = send_batch_new(SEND_BURST, 2 * SEND_BURST)
        m.reply_batch = send_batch_new(1, 1)
        m.rx_batch = recv_batch_new(RECV_SLOTS, 65536, True)
        m.tx_headers = <uint8_t*>malloc(SEND_BURST * core.MAX_CONTROL_SIZE)
        m.reply_area = <uint8_t*>malloc(core.MAX_CONTROL_SIZE)
        if (m.tx_batch == NULL or m.reply_batch == NULL or m.rx_batch == NULL
                or m.tx_headers == NULL or m.reply_area == NULL):
            raise MemoryError()
        m.send_sleep_until = -2
        m.rx_sleep_until = -2
        self._local_address = channel.getsockname()
        self._refs = 1
        self._stopped = False
        name = f"udt-mux-{self._local_address[1]}"
        receiver = threading.Thread(target=self._receive_main, name=name + "-recv", daemon=True)
        sender = threading.Thread(target=self._send_main, name=name + "-send", daemon=True)
        self._threads = [receiver, sender]
        receiver.start()
        sender.start()
        _all_muxes.add(self)

    # ---- creation and sharing ----

    @staticmethod
    def acquire(int family, tuple address, *, bint reuse_addr=True, udp_sndbuf=None,
                udp_rcvbuf=None):
        """The multiplexer bound to address: a running one when reuse_addr allows sharing,
        else a new channel bound there."""
        cdef Multiplexer mux
        key = (family, address[0], address[1]) if address[1] else None
        with _registry_lock:
            if key is not None and reuse_addr:
                mux = _registry.get(key)
                if mux is not None and not mux._stopped and mux._key is not None:
                    mux._refs += 1
                    return mux
            channel = _Channel(family, gso=True, gro=True, rcvbuf=udp_rcvbuf, sndbuf=udp_sndbuf)
            try:
                channel.bind(address)
                mux = Multiplexer.__new__(Multiplexer)
                mux._setup(channel)
            except BaseException:
                channel.close()
                raise
            local = mux._local_address
            if reuse_addr:
                mux._key = (family, local[0], local[1])
                _registry.setdefault(mux._key, mux)
            return mux

    @staticmethod
    def adopt(sock, *, bint reuse_addr=True, udp_sndbuf=None, udp_rcvbuf=None):
        """A multiplexer over an existing UDP socket (taken over: it is detached)."""
        cdef Multiplexer mux
        channel = _Channel.adopt(sock, gso=True, gro=True, rcvbuf=udp_rcvbuf, sndbuf=udp_sndbuf)
        try:
            if channel.getsockname()[1] == 0:  # an unbound socket: bind it to an ephemeral port
                channel.bind(("0.0.0.0", 0) if channel.family == AF_INET else ("::", 0, 0, 0))
            with _registry_lock:
                mux = Multiplexer.__new__(Multiplexer)
                mux._setup(channel)
                local = mux._local_address
                key = (channel.family, local[0], local[1])
                if reuse_addr and key not in _registry:
                    mux._key = key
                    _registry[key] = mux
        except BaseException:
            channel.close()
            raise
        return mux

    def retain(self):
        with _registry_lock:
            if self._stopped:
                raise BadSocketError(ErrorCode.BAD_SOCKET, "the multiplexer is closed")
            self._refs += 1

    def release(self):
        """Drop a socket's reference; the last one stops the workers and closes the port."""
        with _registry_lock:
            self._refs -= 1
            if self._refs > 0 or self._stopped:
                return
            if self._key is not None and _registry.get(self._key) is self:
                del _registry[self._key]
        self.stop()

    def stop(self):
        """Stop both workers (joined with the GIL released), close the channel, abort what is left."""
        cdef MuxCore* m = self._m
        cdef MuxConn* mc
        cdef size_t i
        cdef int n
        cdef int64_t now
        cdef MuxConn** everything
        with _registry_lock:
            if self._stopped:
                return
            self._stopped = True
            if self._key is not None and _registry.get(self._key) is self:
                del _registry[self._key]
        _all_muxes.discard(self)
        # 1. every connection still registered is aborted: its SHUTDOWN is queued while the
        #    send worker still runs, its waiters wake (EOF); the listener stops accepting
        with nogil:
            pthread_mutex_lock(&m.table_lock)
            n = <int>m.by_id.count
            everything = <MuxConn**>calloc(n + 1, sizeof(MuxConn*))
            n = 0
            if everything != NULL:
                for i in range(m.by_id.capacity):
                    if m.by_id.slots[i] != NULL:
                        everything[n] = m.by_id.slots[i]
                        muxconn_incref(everything[n])
                        n += 1
            if m.listener != NULL:
                pthread_mutex_lock(&m.listener.lock)
                m.listener.closed = 1
                pthread_cond_broadcast(&m.listener.changed)
                pthread_mutex_unlock(&m.listener.lock)
            pthread_mutex_unlock(&m.table_lock)
            now = now_us()
            for i in range(n):
                mc = everything[i]
                pthread_mutex_lock(&mc.lock)
                after_engine_call(m, self.channel, mc, core.conn_abort(&mc.conn, now) | core.EV_CLOSED,
                                  now, False)
                pthread_mutex_unlock(&mc.lock)
            # 2. the send worker flushes what is due (those SHUTDOWNs) and leaves
            mux_atomic_store(&m.stopping, 1)
            pthread_mutex_lock(&m.send_lock)
            pthread_cond_signal(&m.send_wake)
            pthread_mutex_unlock(&m.send_lock)
        current = threading.current_thread()
        if self._threads[1] is not current:
            self._threads[1].join()
        # 3. the receive worker wakes with EBADF when the channel closes
        self.channel.close()
        if self._threads[0] is not current:
            self._threads[0].join()
        # 4. the connections are cut loose: every later call on them fails with EBADF
        with nogil:
            for i in range(n):
                mc = everything[i]
                pthread_mutex_lock(&mc.lock)
                mc.mux_dead = 1
                pthread_cond_broadcast(&mc.changed)
                pthread_mutex_unlock(&mc.lock)
                pthread_mutex_lock(&m.table_lock)
                unregister_conn(m, mc)
                pthread_mutex_unlock(&m.table_lock)
                unschedule(m, mc)
                muxconn_decref(mc)
            free(everything)
            # whatever is still queued in the heaps (closed connections) is released
            while m.send_heap.count > 0:
                muxconn_decref(heap_remove_at(&m.send_heap, m.send_heap.count - 1))
            while m.timer_heap.count > 0:
                muxconn_decref(heap_remove_at(&m.timer_heap, m.timer_heap.count - 1))

    # ---- the worker threads ----

    def _receive_main(self):
        with nogil:
            self._receive_loop()

    def _send_main(self):
        with nogil:
            self._send_loop()

    cdef void _receive_loop(self) noexcept nogil:
        cdef MuxCore* m = self._m
        cdef CRecvBatch* rx = m.rx_batch
        cdef int64_t timeout, now, deadline
        cdef int n, i, peek
        cdef core.PacketInfo info
        cdef MuxConn* current = NULL
        cdef uint32_t events = 0
        cdef uint32_t answer_peer
        cdef const sockaddr* source
        while not mux_atomic_load(&m.stopping):
            # sleep until a datagram arrives or the nearest timer is due
            pthread_mutex_lock(&m.timer_lock)
            if m.timer_heap.count > 0:
                deadline = m.timer_heap.items[0].heap_key[HEAP_TIMER]
                m.rx_sleep_until = deadline
                timeout = deadline - now_us()
                if timeout < 0:
                    timeout = 0
            else:
                m.rx_sleep_until = -1
                timeout = -1
            pthread_mutex_unlock(&m.timer_lock)
            n = self.channel.c_recv_batch(rx, timeout)
            pthread_mutex_lock(&m.timer_lock)
            m.rx_sleep_until = -2
            pthread_mutex_unlock(&m.timer_lock)
            mux_count(&m.rx_wakeups, 1)
            if n == -EBADF:
                break
            now = now_us()
            if n > 0:
                mux_count(&m.datagrams_in, n)
                current = NULL
                events = 0
                for i in range(n):
                    peek = core.packet_peek(<const uint8_t*>rx.data[i], rx.length[i], &info)
                    if peek < 0:
                        mux_count(&m.invalid[MUX_INVALID_HEADER], 1)
                        if -1 - peek < core.INVALID_REASON_COUNT:
                            mux_count(&m.invalid_reason[-1 - peek], 1)
                        continue
                    source = recv_batch_source(rx, i)
                    if current != NULL and info.dst_id != current.socket_id:
                        after_engine_call(m, self.channel, current, events, now, True)
                        pthread_mutex_unlock(&current.lock)
                        muxconn_decref(current)
                        current = NULL
                    if current == NULL:
                        if info.dst_id == 0:
                            current = self._route_handshake(<const uint8_t*>rx.data[i], rx.length[i],
                                                            source, &info, now)
                        else:
                            answer_peer = 0
                            pthread_mutex_lock(&m.table_lock)
                            current = table_find_id(&m.by_id, info.dst_id)
                            if current != NULL:
                                muxconn_incref(current)
                            else:
                                answer_peer = closed_peer_to_answer(m, info.dst_id, source,
                                                                    info.kind, now)
                            pthread_mutex_unlock(&m.table_lock)
                            if answer_peer != 0:
                                # a peer that missed our SHUTDOWN: tell it again, now
                                self._reply(source, core.shutdown_packet(
                                    answer_peer, m.reply_area, core.MAX_CONTROL_SIZE))
                                mux_count(&m.closed_replies, 1)
                            elif current == NULL:
                                mux_count(&m.invalid[MUX_INVALID_UNKNOWN_DESTINATION], 1)
                        if current == NULL:
                            continue
                        pthread_mutex_lock(&current.lock)
                        events = 0
                    if (current.conn.peer_addr.ss_family != 0
                            and not same_address(&current.conn.peer_addr, source)):
                        mux_count(&m.invalid[MUX_INVALID_WRONG_SOURCE], 1)
                        continue
                    events |= core.conn_on_datagram(&current.conn, <const uint8_t*>rx.data[i],
                                                    rx.length[i], now)
                if current != NULL:
                    after_engine_call(m, self.channel, current, events, now, True)
                    pthread_mutex_unlock(&current.lock)
                    muxconn_decref(current)
                    current = NULL
            elif n < 0 and n != -ETIMEDOUT and n != -EAGAIN and n != -EINTR:
                mux_count(&m.send_errors, 1)  # a receive error (ICMP errors on some kernels): go on
            self._run_timers(now_us())

    cdef MuxConn* _route_handshake(self, const uint8_t* data, size_t length, const sockaddr* source,
                                   core.PacketInfo* info, int64_t now) noexcept nogil:
        """A datagram with destination ID 0 (receive worker): a rendezvous socket connecting to
        its sender takes it; else the listener answers or accepts.  Returns a referenced
        connection the caller must feed the datagram to, or NULL when handled here."""
        cdef MuxCore* m = self._m
        cdef MuxConn* mc = m.rendezvous
        cdef MuxListener* lst
        cdef core.AcceptRequest req
        cdef size_t out_len = 0
        cdef ssize_t reply = 0
        cdef int verdict
        cdef MuxConn* created = NULL
        cdef uint32_t events = 0
        cdef int slot
        cdef void* cc_instance = NULL
        pthread_mutex_lock(&m.table_lock)
        while mc != NULL:
            if same_address(&mc.conn.peer_addr, source):
                muxconn_incref(mc)
                pthread_mutex_unlock(&m.table_lock)
                return mc
            mc = mc.rendezvous_next
        lst = m.listener
        if lst == NULL or info.kind != core.PKT_HANDSHAKE:
            pthread_mutex_unlock(&m.table_lock)
            mux_count(&m.invalid[MUX_INVALID_NO_LISTENER], 1)
            return NULL
        pthread_mutex_lock(&lst.lock)
        verdict = core.listener_on_handshake(&lst.engine, data, length,
                                             <const sockaddr_storage*>source, now, m.reply_area,
                                             core.MAX_CONTROL_SIZE, &out_len, &req)
        if verdict == core.LISTENER_REPLY:
            reply = <ssize_t>out_len
        elif verdict == core.LISTENER_ACCEPT:
            mc = table_find_peer(&m.by_peer, <const sockaddr*>&req.peer_addr, req.peer_socket_id)
            if mc != NULL:
                muxconn_incref(mc)  # a repeated conclusion: the connection answers it again
            elif lst.closed or lst.queue_count >= lst.backlog:
                reply = core.listener_reject(&lst.engine, &req, m.reply_area, core.MAX_CONTROL_SIZE)
            else:
                created = muxconn_new(allocate_socket_id(m))
                if created != NULL and core.conn_init(&created.conn, &lst.opts, created.socket_id, now) == 0:
                    cc_instance = attach_python_cc(&created.conn, lst.cc_class)
                    reply = core.conn_accept(&created.conn, &req, now, m.reply_area, core.MAX_CONTROL_SIZE)
                    release_python_cc(cc_instance)  # the engine holds its own reference now
                else:
                    reply = -core.ERR_NO_MEMORY
                if reply < 0:
                    muxconn_decref(created)
                    created = NULL
                    reply = core.listener_reject(&lst.engine, &req, m.reply_area, core.MAX_CONTROL_SIZE)
                elif register_conn(m, created, True) != 0:
                    muxconn_decref(created)
                    created = NULL
                    reply = core.listener_reject(&lst.engine, &req, m.reply_area, core.MAX_CONTROL_SIZE)
                else:
                    slot = (lst.queue_head + lst.queue_count) % lst.capacity
                    lst.queue[slot] = created  # the queue owns the creation reference
                    created.queued_for_accept = 1
                    lst.queue_count += 1
                    if lst.waiters > 0:
                        pthread_cond_broadcast(&lst.changed)
        pthread_mutex_unlock(&lst.lock)
        if created != NULL:
            muxconn_incref(created)
        pthread_mutex_unlock(&m.table_lock)
        if reply > 0:
            self._reply(source, reply)
        if created != NULL:
            pthread_mutex_lock(&created.lock)
            after_engine_call(m, self.channel, created, core.EV_CONNECTED, now, True)
            pthread_mutex_unlock(&created.lock)
            muxconn_decref(created)
        return mc

    cdef void _reply(self, const sockaddr* destination, ssize_t length) noexcept nogil:
        """Send one handshake answer built in reply_area straight back (receive worker)."""
        cdef CSendBatch* batch = self._m.reply_batch
        send_batch_clear(batch)
        memcpy(&batch.address, destination, sizeof(sockaddr_storage))
        batch.address_length = sizeof(sockaddr_in) if destination.sa_family == AF_INET else sizeof(sockaddr_in6)
        send_batch_add(batch, self._m.reply_area, <size_t>length)
        if self.channel.c_send_batch(batch, 0) < 0:
            mux_count(&self._m.send_errors, 1)
        else:
            mux_count(&self._m.datagrams_out, 1)

    cdef void _run_timers(self, int64_t now) noexcept nogil:
        """Run the timers of every connection whose deadline has come (receive worker)."""
        cdef MuxCore* m = self._m
        cdef MuxConn* mc
        cdef uint32_t events
        cdef int rounds = 0
        cdef int64_t next_timer
        while rounds < 100000:
            rounds += 1
            pthread_mutex_lock(&m.timer_lock)
            if m.timer_heap.count == 0 or m.timer_heap.items[0].heap_key[HEAP_TIMER] > now:
                pthread_mutex_unlock(&m.timer_lock)
                return
            mc = heap_remove_at(&m.timer_heap, 0)  # its heap reference is ours now
            pthread_mutex_unlock(&m.timer_lock)
            pthread_mutex_lock(&mc.lock)
            if not mc.mux_dead:
                events = core.conn_on_timer(&mc.conn, now)
                next_timer = core.conn_next_timer(&mc.conn)
                if 0 <= next_timer <= now:
                    # the engine did not move its deadline: retry a little later, never spin
                    pthread_mutex_lock(&m.timer_lock)
                    heap_push_or_lower(&m.timer_heap, mc, now + MIN_TIMER_STEP_US)
                    pthread_mutex_unlock(&m.timer_lock)
                    schedule_send(m, mc, now)
                    if mc.waiters > 0 and (events & WAKE_EVENTS):
                        pthread_cond_broadcast(&mc.changed)
                else:
                    after_engine_call(m, self.channel, mc, events, now, True)
            pthread_mutex_unlock(&mc.lock)
            muxconn_decref(mc)

    cdef void _send_loop(self) noexcept nogil:
        cdef MuxCore* m = self._m
        cdef CSendBatch* batch = m.tx_batch
        cdef MuxConn* mc
        cdef int64_t now, next_time, top
        cdef ssize_t length
        cdef const uint8_t* payload
        cdef size_t payload_length
        cdef uint8_t* header
        cdef int k, sent
        cdef bint stopping
        pthread_mutex_lock(&m.send_lock)
        while True:
            stopping = mux_atomic_load(&m.stopping) != 0
            now = now_us()
            if m.send_heap.count == 0:
                if stopping:
                    break
                m.send_sleep_until = -1
                pthread_cond_wait(&m.send_wake, &m.send_lock)
                m.send_sleep_until = -2
                mux_count(&m.tx_wakeups, 1)
                continue
            top = m.send_heap.items[0].heap_key[HEAP_SEND]
            if top > now:
                if stopping:
                    break
                m.send_sleep_until = top
                cond_wait_until(&m.send_wake, &m.send_lock, top)
                m.send_sleep_until = -2
                mux_count(&m.tx_wakeups, 1)
                continue
            mc = heap_remove_at(&m.send_heap, 0)  # the heap's reference is ours now
            pthread_mutex_unlock(&m.send_lock)

            send_batch_clear(batch)
            next_time = -1
            pthread_mutex_lock(&mc.lock)
            if not mc.mux_dead:
                memcpy(&batch.address, &mc.conn.peer_addr, sizeof(sockaddr_storage))
                batch.address_length = (sizeof(sockaddr_in) if mc.conn.peer_addr.ss_family == AF_INET
                                        else sizeof(sockaddr_in6))
                for k in range(SEND_BURST):
                    header = m.tx_headers + k * core.MAX_CONTROL_SIZE
                    length = core.conn_next_datagram_zc(&mc.conn, now, header, core.MAX_CONTROL_SIZE,
                                                        &payload, &payload_length)
                    if length <= 0:
                        break
                    if payload_length > 0:
                        send_batch_add_pair(batch, header, <size_t>length, payload, payload_length)
                    else:
                        send_batch_add(batch, header, <size_t>length)
                next_time = core.conn_next_send_time(&mc.conn, now)
                schedule_timer(m, self.channel, mc, now, False)
                if mc.waiters > 0 and mc.conn.state >= core.STATE_BROKEN:
                    pthread_cond_broadcast(&mc.changed)
            pthread_mutex_unlock(&mc.lock)

            if batch.count > 0:
                sent = self.channel.c_send_batch(batch, SEND_WAIT_US)
                if sent < 0:
                    mux_count(&m.send_errors, 1)
                else:
                    mux_count(&m.datagrams_out, sent)
            pthread_mutex_lock(&m.send_lock)
            if next_time >= 0 and not stopping:
                heap_push_or_lower(&m.send_heap, mc, next_time)
            muxconn_decref(mc)
        pthread_mutex_unlock(&m.send_lock)

    # ---- Python API ----

    @property
    def local_address(self):
        return self._local_address

    @property
    def family(self):
        return self._m.family

    @property
    def closed(self):
        return self._stopped

    def udp_buffer_size(self, bint send):
        return self.channel.sndbuf if send else self.channel.rcvbuf

    def stats(self):
        """Counters of the multiplexer itself: invalid datagrams it dropped before any
        connection saw them, worker wake-ups, datagrams in and out."""
        cdef MuxCore* m = self._m
        result = {
            "mux_invalid_unknown_destination": mux_read_count(&m.invalid[MUX_INVALID_UNKNOWN_DESTINATION]),
            "mux_invalid_no_listener": mux_read_count(&m.invalid[MUX_INVALID_NO_LISTENER]),
            "mux_invalid_wrong_source": mux_read_count(&m.invalid[MUX_INVALID_WRONG_SOURCE]),
            "mux_invalid_header": mux_read_count(&m.invalid[MUX_INVALID_HEADER]),
            "mux_receive_wakeups": mux_read_count(&m.rx_wakeups),
            "mux_send_wakeups": mux_read_count(&m.tx_wakeups),
            "mux_send_errors": mux_read_count(&m.send_errors),
            "mux_datagrams_in": mux_read_count(&m.datagrams_in),
            "mux_datagrams_out": mux_read_count(&m.datagrams_out),
            "mux_closed_replies": mux_read_count(&m.closed_replies),
        }
        for i, name in enumerate(_INVALID_NAMES):
            result["mux_invalid_" + name] = mux_read_count(&m.invalid_reason[i])
        return result

    def listen(self, object config, int backlog):
        """Become the port's listener (UDT 5011 if another socket already listens here)."""
        cdef MuxCore* m = self._m
        cdef MuxListener* lst
        cdef core.ConnOptions opts
        cdef bytes key = os.urandom(16)
        cdef int busy = 0
        if self._stopped:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "the multiplexer is closed")
        fill_options(&opts, config)
        lst = <MuxListener*>calloc(1, sizeof(MuxListener))
        if lst == NULL:
            raise MemoryError()
        lst.capacity = max(1, backlog)
        lst.queue = <MuxConn**>calloc(lst.capacity, sizeof(MuxConn*))
        if lst.queue == NULL or pthread_mutex_init(&lst.lock, NULL) != 0 or cond_init(&lst.changed) != 0:
            free(lst.queue)
            free(lst)
            raise MemoryError()
        lst.backlog = lst.capacity
        lst.opts = opts
        cc_class = config.congestion_control
        if cc_class is not None:  # each accepted connection gets its own instance
            lst.cc_class = <void*>cc_class
        core.listener_init(&lst.engine, <const uint8_t*><char*>key, opts.sock_type, opts.mss,
                           opts.flight_flag_size, now_us())
        with nogil:
            pthread_mutex_lock(&m.table_lock)
            if m.listener != NULL:
                busy = 1
            else:
                m.listener = lst
            pthread_mutex_unlock(&m.table_lock)
        if busy:
            free(lst.queue)
            pthread_mutex_destroy(&lst.lock)
            pthread_cond_destroy(&lst.changed)
            free(lst)
            raise error_from_code(ErrorCode.PORT_HAS_LISTENER)
        listener = Listener.__new__(Listener)
        (<Listener>listener).l = lst
        (<Listener>listener).mux = self
        (<Listener>listener)._cc_class = cc_class
        return listener

    def connect(self, object config, tuple peer, bint rendezvous, int connect_timeout_ms):
        """Start connecting to peer; returns the Connection (wait_connected() waits)."""
        cdef MuxCore* m = self._m
        cdef core.ConnOptions opts
        cdef sockaddr_storage address
        cdef socklen_t address_length = 0
        cdef MuxConn* mc
        cdef int result = 0
        cdef int64_t now
        if self._stopped:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "the multiplexer is closed")
        fill_options(&opts, config)
        opts.rendezvous = rendezvous
        opts.connect_timeout_us = <int64_t>connect_timeout_ms * 1000
        cc = make_cc(&opts, config)
        memset(&address, 0, sizeof(address))
        sockaddr_from_address(peer, m.family, &address, &address_length)
        with nogil:
            now = now_us()
            pthread_mutex_lock(&m.table_lock)
            mc = muxconn_new(allocate_socket_id(m))
            if mc == NULL:
                result = -core.ERR_NO_MEMORY
            else:
                result = core.conn_init(&mc.conn, &opts, mc.socket_id, now)
                if result == 0:
                    result = core.conn_connect(&mc.conn, &address, now)
                if result == 0 and register_conn(m, mc, False) != 0:
                    result = -core.ERR_NO_MEMORY
            pthread_mutex_unlock(&m.table_lock)
            if result == 0:
                pthread_mutex_lock(&mc.lock)
                after_engine_call(m, self.channel, mc, 0, now, False)
                pthread_mutex_unlock(&mc.lock)
        if result != 0:
            muxconn_decref(mc)
            raise error_from_code(-result)
        conn = Connection.__new__(Connection)
        (<Connection>conn).c = mc  # takes the creation reference
        (<Connection>conn).mux = self
        (<Connection>conn)._cc = cc
        return conn


_INVALID_NAMES = (
    "too_short", "control_type", "length", "handshake", "ack_range", "nak_range", "ack2",
    "data_seq", "data_length", "drop_request", "state", "wrong_peer", "cookie", "buffer_full",
)


cdef int fill_options(core.ConnOptions* opts, object config) except -1:
    """Engine options from the socket layer's ConnectionConfiguration (udt.config)."""
    core.conn_options_default(opts)
    payload = config.mss - core.IP_UDP_OVERHEAD
    opts.mss = config.mss
    opts.sock_type = core.SOCK_TYPE_DGRAM if config.message_mode else core.SOCK_TYPE_STREAM
    opts.flight_flag_size = config.flow_window
    opts.snd_buf_packets = max(2, (config.sndbuf + payload - 1) // payload)
    opts.rcv_buf_packets = max(2, min((config.rcvbuf + payload - 1) // payload, opts.flight_flag_size))
    opts.max_bandwidth = config.max_bandwidth
    opts.broken_timeout_us = <int64_t>config.peer_idle_timeout_ms * 1000
    return 0


cdef object make_cc(core.ConnOptions* opts, object config):
    """A Python congestion-control instance when UDT_CC names a class (None: native)."""
    cc_class = config.congestion_control
    if cc_class is None:
        return None
    instance = cc_class()
    opts.cc_ops = core.python_cc_ops()
    opts.cc_user = <void*>instance
    return instance


def _stop_all():
    """atexit: stop every multiplexer still running so the interpreter never hangs."""
    for mux in list(_all_muxes):
        try:
            mux.stop()
        except Exception:
            pass


atexit.register(_stop_all)


# ---------------------------------------------------------------------------------------------
# listener
# ---------------------------------------------------------------------------------------------

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
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
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
        cdef MuxCore* m
        cdef MuxConn* mc
        cdef Multiplexer mux = self.mux
        if lst == NULL or mux._m == NULL:
            return
        m = mux._m
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
                close_conn(m, mux.channel, mc, 0, False)
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


# ---------------------------------------------------------------------------------------------
# connections: the user-thread side
# ---------------------------------------------------------------------------------------------

cdef int close_conn(MuxCore* m, Channel channel, MuxConn* mc, int64_t linger_us,
                    bint wait) noexcept nogil:
    """Close mc: drain while the peer acknowledges (linger_us without progress gives up; 0
    aborts), send SHUTDOWN, wake its waiters, leave the tables.  With wait, block until the
    engine reports CLOSED or its linger deadline (+1 s) passed."""
    cdef int64_t now = now_us()
    cdef int64_t deadline
    cdef uint32_t events
    cdef int state
    cdef bint remember = False
    cdef uint32_t peer_socket_id = 0
    cdef sockaddr_storage peer
    pthread_mutex_lock(&mc.lock)
    if not mc.local_closed:
        mc.local_closed = 1
        if not mc.mux_dead:
            state = mc.conn.state
            if linger_us <= 0 or state < core.STATE_CONNECTED or state > core.STATE_CONNECTED:
                events = core.conn_abort(&mc.conn, now)
            else:
                mc.conn.opts.linger_us = linger_us
                events = core.conn_close(&mc.conn, now)
            after_engine_call(m, channel, mc, events, now, False)
        pthread_cond_broadcast(&mc.changed)  # blocked recv/send in other threads leave with EBADF
        if wait and linger_us > 0:
            while (not mc.mux_dead and mc.conn.state != core.STATE_CLOSED
                   and mc.conn.state != core.STATE_BROKEN):
                # the engine moves its linger deadline on while the peer acknowledges data
                deadline = mc.conn.linger_deadline + 1000000
                if now_us() >= deadline:
                    break
                mc.waiters += 1
                cond_wait_until(&mc.changed, &mc.lock, deadline)
                mc.waiters -= 1
        # the SHUTDOWN copies go out SHUTDOWN_SPACING_US apart: see them sent before the port
        # can go away with its last socket (bounded; nothing signals this, so poll gently)
        deadline = now_us() + 200000
        while (wait and not mc.mux_dead and mc.conn.state == core.STATE_CLOSED
               and mc.conn.shutdown_due > 0 and now_us() < deadline):
            mc.waiters += 1
            cond_wait_until(&mc.changed, &mc.lock, now_us() + 5000)
            mc.waiters -= 1
        # we ended it (the peer did not): remember it, in case our SHUTDOWN gets lost
        remember = (mc.conn.state == core.STATE_CLOSED and mc.conn.peer_socket_id != 0
                    and not mc.conn.peer_shutdown and not mc.conn.peer_reset)
        if remember:
            peer_socket_id = mc.conn.peer_socket_id
            memcpy(&peer, &mc.conn.peer_addr, sizeof(sockaddr_storage))
    pthread_mutex_unlock(&mc.lock)
    pthread_mutex_lock(&m.table_lock)
    unregister_conn(m, mc)
    if remember:
        remember_closed(m, mc.socket_id, peer_socket_id, &peer, now_us())
    pthread_mutex_unlock(&m.table_lock)
    # the SHUTDOWN may still sit in the send heap: the send worker sends it and lets go
    pthread_mutex_lock(&m.timer_lock)
    if mc.heap_pos[HEAP_TIMER] >= 0:
        mc = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
        pthread_mutex_unlock(&m.timer_lock)
        muxconn_decref(mc)
    else:
        pthread_mutex_unlock(&m.timer_lock)
    return 0


def _rejection_hint(int req_type):
    """What a refusal's request type means: UDT4 always sends 1002, SRT 1000 + a reason."""
    if req_type == core.REQ_REJECTED:
        return ": version, socket type or MSS not acceptable, or the backlog is full"
    if req_type == 1004:
        return ": SRT's REJ_ROGUE; SRT takes a UDT4 handshake only from SOCK_DGRAM sockets"
    return ""


cdef object raise_result(ssize_t result, bint sending, int os_error=0, bint peer_reset=False):
    """Raise the Python exception for a negative result of a data or wait call."""
    if result == RC_SIGNAL:
        propagate_pending()  # the exception a signal handler (Ctrl-C) raised while we waited
    if result == RC_CLOSED:
        raise BadSocketError(ErrorCode.BAD_SOCKET, "Bad file descriptor: socket closed")
    if result == RC_OS_ERROR:
        raise OSError(os_error, os.strerror(os_error))
    code = -result
    if code == ErrorCode.NO_SEND_BUFFER or code == ErrorCode.NO_DATA:
        raise error_from_code(code)
    if code == ErrorCode.CONNECTION_BROKEN and peer_reset and not sending:
        raise error_from_code(code, "connection reset by the peer: it closed with data it could "
                                    "not deliver (linger ran out or it aborted)")
    if code == ErrorCode.CONNECTION_BROKEN and sending:
        raise _errors.BrokenPipeUDTError(code, "connection broken")
    raise error_from_code(code)


cdef int conn_send_wait(MuxCore* m, Channel channel, MuxConn* mc, const uint8_t* data,
                        size_t length, int64_t ttl_us, bint inorder, bint message, bint send_all,
                        int64_t deadline, bint main_thread, size_t* taken) noexcept nogil:
    """Copy data into the send buffer, waiting for room (GIL released).  *taken counts the bytes
    queued; returns 0 when done (all of it with send_all, else at least one byte) or a negative
    code (RC_NO_BUFFER in non-blocking mode, RC_TIMEOUT, RC_CLOSED, -2001 …)."""
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
            schedule_send(m, mc, now)
            schedule_timer(m, channel, mc, now, False)
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


@cython.no_gc  # freed by reference count only: never from a GC pass inside a worker's CC callback
cdef class Connection:
    """One UDT connection of a multiplexer (client, accepted or rendezvous)."""

    def __dealloc__(self):
        cdef MuxConn* mc = self.c
        if mc == NULL:
            return
        self.c = NULL
        if not self._closed and self.mux is not None and self.mux._m != NULL:
            with nogil:
                close_conn(self.mux._m, self.mux.channel, mc, 0, False)
        muxconn_decref(mc)

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
        cdef MuxConn* mc = self._conn()
        return mc.conn.mss

    def events(self):
        cdef MuxConn* mc = self._conn()
        cdef int bits
        with nogil:
            pthread_mutex_lock(&mc.lock)
            bits = core.conn_poll_events(&mc.conn)
            pthread_mutex_unlock(&mc.lock)
        return bits

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
            schedule_send(self.mux._m, mc, now_us())
            pthread_mutex_unlock(&mc.lock)

    def wait_connected(self, timeout):
        """Wait until the handshake completes; raise its failure (refused, timed out …)."""
        cdef MuxConn* mc = self._conn()
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t signal_check = 0
        cdef int result = 0, state = 0, error = 0, reject_req_type = 0
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        with nogil:
            pthread_mutex_lock(&mc.lock)
            while True:
                if mc.local_closed or mc.mux_dead:
                    result = RC_CLOSED
                    break
                state = mc.conn.state
                if state == core.STATE_CONNECTED:
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
            raise error_from_code(error, f"connection rejected by the peer (request type "
                                         f"{reject_req_type}){_rejection_hint(reject_req_type)}")
        if result != 0:
            raise_result(result, False, 0, mc.conn.peer_reset)

    def send(self, data, timeout, bint send_all):
        """Stream send: copy into the send buffer (all of it with send_all); returns the count."""
        cdef MuxConn* mc = self._conn()
        cdef Py_buffer view
        cdef int result
        cdef size_t taken = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return 0
            with nogil:
                result = conn_send_wait(self.mux._m, self.mux.channel, mc, <const uint8_t*>view.buf,
                                        <size_t>view.len, -1, False, False, send_all, deadline,
                                        main_thread, &taken)
        finally:
            PyBuffer_Release(&view)
        if result == RC_SIGNAL or (result < 0 and (send_all or taken == 0)):
            raise_result(result, True, 0, mc.conn.peer_reset)
        return taken

    def sendmsg(self, data, int64_t ttl_ms, bint inorder, timeout):
        """Queue one message (whole or not at all); returns its length."""
        cdef MuxConn* mc = self._conn()
        cdef Py_buffer view
        cdef int result
        cdef size_t taken = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef int64_t ttl_us = -1 if ttl_ms < 0 else ttl_ms * 1000
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                raise _errors.InvalidParameterError(ErrorCode.BAD_PARAMETER, "empty message")
            with nogil:
                result = conn_send_wait(self.mux._m, self.mux.channel, mc, <const uint8_t*>view.buf,
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
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if view.len == 0:
                return 0
            with nogil:
                result = conn_recv_wait(self.mux._m, self.mux.channel, mc, <uint8_t*>view.buf,
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
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            with nogil:
                result = conn_recv_wait(self.mux._m, self.mux.channel, mc, <uint8_t*>view.buf,
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
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
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
                        result = -4002  # the file shrank under us
                        break
                    taken = 0
                    result = conn_send_wait(self.mux._m, self.mux.channel, mc, area, <size_t>got,
                                            -1, True, False, True, deadline, main_thread, &taken)
                    done += <long long>taken
                    if result < 0:
                        break
        finally:
            free(area)
        if result < 0:
            if result == -4002:
                raise _errors.FileTransferError(ErrorCode.FILE_READ,
                                                f"the file ended after {done} of {count} bytes")
            raise_result(result, True, os_error, mc.conn.peer_reset)
        return done

    def recvfile(self, int fd, long long offset, long long count, timeout, size_t block):
        """Receive count bytes (-1: until EOF) into fd at offset; returns the bytes written."""
        cdef MuxConn* mc = self._conn()
        cdef uint8_t* area = <uint8_t*>malloc(block)
        cdef long long done = 0
        cdef ssize_t got = 0, put, result = 0
        cdef size_t want, written, message_length = 0
        cdef int os_error = 0
        cdef int64_t deadline = deadline_from(timeout)
        cdef bint main_thread = PyThread_get_thread_ident() == _main_thread_ident
        if area == NULL:
            raise MemoryError()
        try:
            with nogil:
                while count < 0 or done < count:
                    want = block if count < 0 else <size_t>min(<long long>block, count - done)
                    got = conn_recv_wait(self.mux._m, self.mux.channel, mc, area, want, False,
                                         deadline, main_thread, &message_length)
                    if got <= 0:
                        result = got
                        break
                    written = 0
                    while written < <size_t>got:
                        put = pwrite(fd, area + written, <size_t>got - written, offset + done + written)
                        if put < 0:
                            if mux_errno() == EINTR:
                                continue
                            os_error = mux_errno()
                            break
                        written += <size_t>put
                    if os_error:
                        result = RC_OS_ERROR
                        break
                    done += got
        finally:
            free(area)
        if result < 0:
            if result == RC_OS_ERROR:
                raise _errors.FileTransferError(ErrorCode.FILE_WRITE,
                                                f"writing the file failed: {os.strerror(os_error)}",
                                                errno=os_error)
            raise_result(result, False, 0, mc.conn.peer_reset)
        return done

    def shutdown_read(self):
        """Local only: UDT has no read shutdown on the wire."""
        self._conn()

    def shutdown_write(self, double linger_seconds):
        """Drain what is queued (at most the linger time), then send SHUTDOWN: the peer reads EOF.
        The connection stays registered so that data the peer already sent can still be read."""
        cdef MuxConn* mc = self._conn()
        cdef MuxCore* m = self.mux._m
        cdef uint32_t events
        cdef int64_t now, deadline
        cdef int64_t linger_us = <int64_t>(linger_seconds * 1e6)
        with nogil:
            pthread_mutex_lock(&mc.lock)
            now = now_us()
            if not mc.mux_dead and mc.conn.state == core.STATE_CONNECTED and not mc.conn.closing:
                mc.conn.opts.linger_us = linger_us if linger_us > 0 else 1
                events = core.conn_close(&mc.conn, now)
                after_engine_call(m, self.mux.channel, mc, events, now, False)
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
        result = {
            "ms_timestamp": s.ms_timestamp,
            "pkt_sent_total": s.pkt_sent_total,
            "pkt_recv_total": s.pkt_recv_total,
            "pkt_snd_loss_total": s.pkt_snd_loss_total,
            "pkt_rcv_loss_total": s.pkt_rcv_loss_total,
            "pkt_retrans_total": s.pkt_retrans_total,
            "pkt_sent_ack_total": s.pkt_sent_ack_total,
            "pkt_recv_ack_total": s.pkt_recv_ack_total,
            "pkt_sent_nak_total": s.pkt_sent_nak_total,
            "pkt_recv_nak_total": s.pkt_recv_nak_total,
            "us_snd_duration_total": s.us_snd_duration_total,
            "bytes_sent_total": s.bytes_sent_total,
            "bytes_recv_total": s.bytes_recv_total,
            "pkt_dropped_total": s.pkt_dropped_total,
            "pkt_sent": s.pkt_sent,
            "pkt_recv": s.pkt_recv,
            "pkt_snd_loss": s.pkt_snd_loss,
            "pkt_rcv_loss": s.pkt_rcv_loss,
            "pkt_retrans": s.pkt_retrans,
            "pkt_sent_ack": s.pkt_sent_ack,
            "pkt_recv_ack": s.pkt_recv_ack,
            "pkt_sent_nak": s.pkt_sent_nak,
            "pkt_recv_nak": s.pkt_recv_nak,
            "us_snd_duration": s.us_snd_duration,
            "mbps_send_rate": s.mbps_send_rate,
            "mbps_recv_rate": s.mbps_recv_rate,
            "us_pkt_snd_period": s.us_pkt_snd_period,
            "pkt_flow_window": s.pkt_flow_window,
            "pkt_congestion_window": s.pkt_congestion_window,
            "pkt_flight_size": s.pkt_flight_size,
            "ms_rtt": s.ms_rtt,
            "mbps_bandwidth": s.mbps_bandwidth,
            "byte_avail_snd_buf": s.byte_avail_snd_buf,
            "byte_avail_rcv_buf": s.byte_avail_rcv_buf,
            "pkt_duplicate_total": s.duplicate_packets,
            "pkt_late_total": s.late_packets,
        }
        total = 0
        for i, name in enumerate(_INVALID_NAMES):
            result["invalid_" + name] = s.invalid[i]
            total += s.invalid[i]
        result["invalid_total"] = total
        result.update(self.mux.stats())
        return result

    def close(self, double linger_seconds):
        """Drain (up to linger_seconds; 0 aborts), shut down, and release the connection."""
        cdef MuxConn* mc = self.c
        cdef int64_t linger_us = <int64_t>(linger_seconds * 1e6)
        if mc == NULL or self._closed:
            return
        self._closed = True
        if self.mux._m != NULL:
            with nogil:
                close_conn(self.mux._m, self.mux.channel, mc, linger_us, True)
