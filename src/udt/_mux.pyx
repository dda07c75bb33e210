# cython: language_level=3
"""The multiplexer: one UDP channel per (address, port, family), shared by every udt socket bound
there, served by two worker threads that run without the GIL.

* receive worker: waits in the channel's ``recv_batch`` until a datagram arrives or the nearest
  timer of its connections is due (no fixed tick: an idle link costs no wakeups), dispatches each
  datagram by destination socket ID (0: the listener or a rendezvous socket, by peer address),
  feeds the engine under the connection's lock, runs due timers, wakes user threads and the send
  worker.  A Python congestion control's callbacks run here under that connection's lock only;
  creating one for an accepted connection and its init() are left to the listener's accepting
  thread (``_listener.pyx``), so a slow class never holds the port's locks nor this worker.
* send worker: a heap of connections ordered by next send time; sleeps on a condition variable
  until the earliest, takes a burst of datagrams (zero-copy: header + payload pointer) under the
  connection lock, sends them in one GSO ``sendmsg`` with the lock released.
* user threads: copy into / out of the engine's buffers under the connection lock and wait on the
  connection's condition variable with the GIL released.

Lock order and the structures are in ``_muxcore.pxd``.  Time is CLOCK_MONOTONIC in microseconds.

The multiplexer is split by job, one unit each (``.pxd`` where others use it):
``_sync.pxd`` pthread, atomics and time (inline); ``_conntable`` connection records and the
tables; ``_heap`` the send and timer heaps; ``_muxcore`` the shared state, scheduling,
registration, closed-connection memory and close; ``_waits`` user-thread waits and error
mapping; ``_connection`` and ``_listener`` the objects the socket layer holds; this unit the
Multiplexer, its workers and option translation (``Listener`` and ``Connection`` re-exported).
"""

import atexit
import os
import threading
import weakref

from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.errno cimport EAGAIN, EBADF, ECONNREFUSED, EINTR, ETIMEDOUT
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

cimport udt.core.engine as core
from udt._connection cimport Connection as CConnection
from udt.core.connutil cimport _connect_failed
from udt._epoll cimport conn_ready_note
from udt._conntable cimport (MuxConn, muxconn_decref, muxconn_incref, muxconn_new, same_address,
                             table_find_id, table_find_peer, table_free, table_init)
from udt._heap cimport HEAP_SEND, HEAP_TIMER, heap_init, heap_push_or_lower, heap_remove_at
from udt._listener cimport Listener as CListener, defer_accept
from udt._seal cimport (OPEN_OK, OPEN_REPLAYED, SEAL_OVERHEAD, CryptoState, SealState, client_check,
                        is_handshake, open_sealed, seal)
from udt.core.packet cimport get_u32
from udt._muxcore cimport (RX_DROP, RX_OPENED, RX_PLAIN, MUX_INVALID_HEADER, MUX_INVALID_NO_LISTENER,
                           MUX_INVALID_UNKNOWN_DESTINATION, MUX_INVALID_WRONG_SOURCE, SEND_BURST,
                           WAKE_EVENTS, MuxCore, MuxListener, after_engine_call, allocate_socket_id,
                           closed_peer_to_answer, listener_ready_note, register_conn, schedule_send, schedule_timer,
                           unregister_conn, unschedule)
from udt._net cimport (AF_INET, Channel, CRecvBatch, CSendBatch, recv_batch_free, recv_batch_new,
                       recv_batch_source, send_batch_add, send_batch_add_pair, send_batch_clear,
                       send_batch_free, send_batch_new, sockaddr, sockaddr_from_address,
                       sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t)
from udt._sync cimport (cond_init, cond_wait_until, mux_atomic_load, mux_atomic_store, mux_count,
                        mux_read_count, now_us, pthread_cond_broadcast, pthread_cond_destroy,
                        pthread_cond_signal, pthread_cond_wait, pthread_mutex_destroy,
                        pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock)
from udt._net import Channel as _Channel

from udt._connection import Connection
from udt._crypto import ClientKeys, ListenerKeys
from udt._seal import CryptoState as _CryptoState
from udt._core import INVALID_REASONS
from udt._listener import Listener
from udt.cc import DEFAULT_CC
from udt.errors import BadSocketError, ErrorCode, error_from_code

__all__ = ["Multiplexer", "Listener", "Connection"]   # what the socket layer uses, from here

cdef enum:
    SEND_WAIT_US = 100000           # a full kernel send buffer is waited on at most this long
    RECV_SLOTS = 32                 # GRO-sized receive buffers per multiplexer
    # The worker is behind when a receive batch comes back full and the kernel still holds
    # more than this in the socket's queue (~1,000 small datagrams: a sustained backlog, not a
    # burst).  Answering an induction costs ~4x dropping it (the kernel's send path), so while
    # behind only HS_REPLIES_WHEN_BEHIND per batch are answered and the rest shed: the queue
    # drains, conclusions (valid cookies) and every connection's packets get through, and a
    # shed client retries its induction.  Far behind (the machine starved this worker), only
    # HS_REPLIES_WHEN_FAR_BEHIND: never none, so a legitimate client keeps a chance per retry.
    BEHIND_BACKLOG_BYTES = 1 << 20
    FAR_BEHIND_BACKLOG_BYTES = 4 << 20
    HS_REPLIES_WHEN_BEHIND = 8
    HS_REPLIES_WHEN_FAR_BEHIND = 2
    MIN_TIMER_STEP_US = 1000        # a timer that does not advance is retried after this
    TABLE_INITIAL = 64


# ---------------------------------------------------------------------------------------------
# the multiplexer
# ---------------------------------------------------------------------------------------------

_registry = {}                      # (family, host, port) -> Multiplexer, for reuse_addr sharing
_registry_lock = threading.Lock()
_all_muxes = weakref.WeakSet()       # every running multiplexer (atexit stops them)


cdef extern from "<sys/socket.h>" nogil:
    enum:
        SO_MEMINFO
    int getsockopt(int fd, int level, int option, void* value, socklen_t* length)


cdef inline int64_t _queued_bytes(int fd) noexcept nogil:
    """Memory the kernel holds in fd's receive queue (SO_MEMINFO's rmem_alloc), 0 if unknown."""
    cdef uint32_t info[9]
    cdef socklen_t length = sizeof(info)
    if getsockopt(fd, 1, SO_MEMINFO, info, &length) != 0 or length < sizeof(uint32_t):
        return 0  # level 1: SOL_SOCKET
    return info[0]


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
        free(m.seal_in)
        free(m.seal_out)
        free(m.rx_owner)
        free(m.rx_mark)
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
        if m.rx_batch != NULL:
            m.rx_owner = <MuxConn**>calloc(m.rx_batch.max_datagrams, sizeof(MuxConn*))
            m.rx_mark = <uint8_t*>calloc(m.rx_batch.max_datagrams, 1)
        if (m.tx_batch == NULL or m.reply_batch == NULL or m.rx_batch == NULL
                or m.tx_headers == NULL or m.reply_area == NULL or m.rx_owner == NULL
                or m.rx_mark == NULL):
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

    def sole_user(self):
        """One socket holds the port: its close takes the port (and the send worker) along."""
        return self._refs <= 1

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
                listener_ready_note(m.listener)
                pthread_cond_broadcast(&m.listener.changed)
                pthread_cond_broadcast(&m.listener.pending_wake)
                pthread_mutex_unlock(&m.listener.lock)
            pthread_mutex_unlock(&m.table_lock)
            now = now_us()
            for i in range(n):
                mc = everything[i]
                pthread_mutex_lock(&mc.lock)
                after_engine_call(m, self.channel, mc, core.conn_abort(&mc.conn, now) | core.EV_CLOSED,
                                  now, False)
                pthread_mutex_unlock(&mc.lock)
            # 2. the send worker sends what is left (those SHUTDOWNs, and the copies closed
            #    connections still owe, in one burst each) and leaves
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
                conn_ready_note(mc)
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
        cdef int64_t timeout, now, deadline, queued
        cdef int n, i, peek
        cdef core.PacketInfo info
        cdef MuxConn* current = NULL
        cdef uint32_t events = 0
        cdef uint32_t answer_peer
        cdef const sockaddr* source
        cdef bint opened
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
                m.hs_reply_budget = -1
                if n >= RECV_SLOTS:
                    queued = _queued_bytes(self.channel.fd)
                    if queued > FAR_BEHIND_BACKLOG_BYTES:
                        m.hs_reply_budget = HS_REPLIES_WHEN_FAR_BEHIND
                    elif queued > BEHIND_BACKLOG_BYTES:
                        m.hs_reply_budget = HS_REPLIES_WHEN_BEHIND
                current = NULL
                events = 0
                # encrypted connections: open the whole batch first (one table lock, no GIL)
                opened = mux_atomic_load(&m.crypto_conns) > 0 and self._open_batch(rx, n)
                for i in range(n):
                    if opened and m.rx_mark[i] == RX_DROP:
                        continue
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
                    if (current.crypto != NULL and not (opened and m.rx_mark[i] == RX_OPENED)
                            and not is_handshake(<const uint8_t*>rx.data[i], rx.length[i])):
                        current.crypto_unsealed += 1  # plain packets never reach an encrypted one
                        continue
                    if (current.conn.peer_addr.ss_family != 0
                            and not same_address(&current.conn.peer_addr, source)):
                        if current.crypto != NULL and opened and m.rx_mark[i] == RX_OPENED:
                            move_peer(current, source)  # the AEAD proves it: NAT rebinding (§12)
                        else:
                            mux_count(&m.invalid[MUX_INVALID_WRONG_SOURCE], 1)
                            continue
                    events |= core.conn_on_datagram(&current.conn, <const uint8_t*>rx.data[i],
                                                    rx.length[i], now)
                if current != NULL:
                    after_engine_call(m, self.channel, current, events, now, True)
                    pthread_mutex_unlock(&current.lock)
                    muxconn_decref(current)
                    current = NULL
            elif n == -ECONNREFUSED:
                refuse_connects(m, self.channel, now_us())  # only a pinned channel hears ICMP
            elif n < 0 and n != -ETIMEDOUT and n != -EAGAIN and n != -EINTR:
                mux_count(&m.send_errors, 1)  # a receive error (ICMP errors on some kernels): go on
            self._run_timers(now_us())

    cdef bint _open_batch(self, CRecvBatch* rx, int n) noexcept nogil:
        """Open every sealed datagram of the batch in place (receive worker, before routing
        looks at anything but the header): find each one's encrypted connection under one
        table lock, then open them.  Marks each datagram RX_PLAIN, RX_OPENED or RX_DROP
        (counted on its connection)."""
        cdef MuxCore* m = self._m
        cdef MuxConn* mc
        cdef const uint8_t* p
        cdef int i, verdict
        cdef int marked = 0
        cdef uint32_t dst
        cdef size_t new_length = 0
        pthread_mutex_lock(&m.table_lock)
        for i in range(n):
            m.rx_owner[i] = NULL
            m.rx_mark[i] = RX_PLAIN
            p = <const uint8_t*>rx.data[i]
            if rx.length[i] < 16 or is_handshake(p, rx.length[i]):
                continue
            dst = get_u32(p + 12)
            if dst == 0:
                continue
            mc = table_find_id(&m.by_id, dst)
            if mc != NULL and mc.crypto != NULL:
                muxconn_incref(mc)
                m.rx_owner[i] = mc
                marked += 1
        pthread_mutex_unlock(&m.table_lock)
        if marked == 0:
            return True
        for i in range(n):
            mc = m.rx_owner[i]
            if mc == NULL:
                continue
            verdict = open_sealed(<SealState*>mc.seal, <uint8_t*>rx.data[i], rx.length[i], &new_length)
            if verdict == OPEN_OK:
                rx.length[i] = <uint32_t>new_length
                m.rx_mark[i] = RX_OPENED
            else:
                m.rx_mark[i] = RX_DROP
                if verdict == OPEN_REPLAYED:
                    mc.crypto_replayed += 1
                else:
                    mc.crypto_forged += 1
            muxconn_decref(mc)
            m.rx_owner[i] = NULL
        return True

    cdef MuxConn* _route_handshake(self, const uint8_t* data, size_t length, const sockaddr* source,
                                   core.PacketInfo* info, int64_t now) noexcept nogil:
        """A datagram with destination ID 0 (receive worker): a rendezvous socket connecting to
        its sender takes it; else the listener answers or accepts (or, with a Python CC class,
        queues the accept for the listener's accepting thread).  Returns a referenced
        connection the caller must feed the datagram to, or NULL when handled here."""
        cdef MuxCore* m = self._m
        cdef MuxConn* mc = m.rendezvous
        cdef MuxListener* lst
        cdef core.AcceptRequest req
        cdef size_t out_len = 0
        cdef ssize_t reply = 0
        cdef int verdict
        cdef MuxConn* created = NULL
        cdef int slot
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
        mux_count(&m.hs_requests, 1)
        mux_count(&m.hs_request_bytes, <int64_t>length)
        verdict = core.listener_on_handshake(&lst.engine, data, length,
                                             <const sockaddr_storage*>source, now, m.reply_area,
                                             core.MAX_CONTROL_SIZE, &out_len, &req)
        if verdict == core.LISTENER_REPLY:
            if info.hs_req_type != core.REQ_INDUCTION or m.hs_reply_budget < 0:
                reply = <ssize_t>out_len
            elif m.hs_reply_budget > 0:
                m.hs_reply_budget -= 1
                reply = <ssize_t>out_len
            else:
                mux_count(&m.hs_shed, 1)
        elif verdict == core.LISTENER_ACCEPT:
            mc = table_find_peer(&m.by_peer, <const sockaddr*>&req.peer_addr, req.peer_socket_id)
            if mc != NULL:
                muxconn_incref(mc)  # a repeated conclusion: the connection answers it again
            elif lst.closed or lst.queue_count >= lst.backlog:
                reply = core.listener_reject(&lst.engine, &req, m.reply_area, core.MAX_CONTROL_SIZE)
            elif (lst.crypto != NULL) != (req.crypto_offered != 0):
                # one side has a passphrase, the other none: refused with the reason (§12);
                # a plain UDT4/SRT client gets the 1002 it understands
                lst.crypto_refused[0 if lst.crypto == NULL else 1] += 1
                reply = core.listener_refuse(
                    &lst.engine, &req, (core.REQ_REJECTED if not req.ext else core.REQ_CRYPTO_UNEXPECTED
                                        if lst.crypto == NULL else core.REQ_CRYPTO_REQUIRED),
                    m.reply_area, core.MAX_CONTROL_SIZE)
            elif lst.cc_class != NULL or lst.crypto != NULL:
                # the user's CC class is Python, or the key exchange needs the KDF: the
                # listener's accepting thread makes the connection (no Python call here,
                # under these locks or in this worker)
                if defer_accept(lst, &req) != 0:
                    reply = core.listener_reject(&lst.engine, &req, m.reply_area, core.MAX_CONTROL_SIZE)
            else:
                created = muxconn_new(allocate_socket_id(m))
                if created != NULL and core.conn_init(&created.conn, &lst.opts, created.socket_id, now) == 0:
                    reply = core.conn_accept(&created.conn, &req, now, m.reply_area, core.MAX_CONTROL_SIZE)
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
                    listener_ready_note(lst)
                    if lst.waiters > 0:
                        pthread_cond_broadcast(&lst.changed)
        pthread_mutex_unlock(&lst.lock)
        if created != NULL:
            muxconn_incref(created)
        pthread_mutex_unlock(&m.table_lock)
        if reply > 0:
            mux_count(&m.hs_replies, 1)
            mux_count(&m.hs_reply_bytes, <int64_t>reply)
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
                    conn_ready_note(mc)
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
        cdef int sealing = 0
        cdef size_t need
        cdef uint8_t* slot
        cdef bint stopping, owes_shutdown, probe
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
            if top > now and not stopping:  # stopping: what is left goes now (SHUTDOWNs owed)
                m.send_sleep_until = top
                cond_wait_until(&m.send_wake, &m.send_lock, top)
                m.send_sleep_until = -2
                mux_count(&m.tx_wakeups, 1)
                continue
            mc = heap_remove_at(&m.send_heap, 0)  # the heap's reference is ours now
            pthread_mutex_unlock(&m.send_lock)

            send_batch_clear(batch)
            next_time = -1
            owes_shutdown = False
            probe = False
            sealing = 0
            pthread_mutex_lock(&mc.lock)
            if stopping and mc.conn.state == core.STATE_CLOSED and mc.conn.shutdown_due > 0:
                # the port closes: the copies still spaced 10 ms apart go in this burst
                mc.conn.shutdown_burst = True
                mc.conn.shutdown_next_time = 0
            if mc.crypto != NULL:
                need = <size_t>max(mc.conn.mss, mc.conn.pmtud_max, core.MAX_CONTROL_SIZE) + 64  # probes too
                if m.seal_slot < need and grow_seal_area(m, need) != 0:
                    need = 0  # no memory now: nothing leaves in clear, try again later
                sealing = 1 if need > 0 else -1
            if not mc.mux_dead and sealing >= 0:
                memcpy(&batch.address, &mc.conn.peer_addr, sizeof(sockaddr_storage))
                batch.address_length = (sizeof(sockaddr_in) if mc.conn.peer_addr.ss_family == AF_INET
                                        else sizeof(sockaddr_in6))
                for k in range(SEND_BURST):
                    header = m.tx_headers + k * core.MAX_CONTROL_SIZE
                    length = core.conn_next_datagram_zc(&mc.conn, now, header, core.MAX_CONTROL_SIZE,
                                                        &payload, &payload_length)
                    if length <= 0:
                        break
                    if sealing:  # copied out in clear, sealed below without the lock
                        slot = m.seal_in + k * m.seal_slot
                        memcpy(slot, header, <size_t>length)
                        if payload_length > 0:
                            memcpy(slot + length, payload, payload_length)
                        m.seal_len[k] = <size_t>length + payload_length
                        sealing += 1
                    elif payload_length > 0:
                        send_batch_add_pair(batch, header, <size_t>length, payload, payload_length)
                    else:
                        send_batch_add(batch, header, <size_t>length)
                    if mc.conn.pmtud_probe_out:  # last in the burst: it may fail alone (EMSGSIZE)
                        mc.conn.pmtud_probe_out = False
                        probe = True
                        break
                next_time = core.conn_next_send_time(&mc.conn, now)
                owes_shutdown = mc.conn.state == core.STATE_CLOSED and mc.conn.shutdown_due > 0
                schedule_timer(m, self.channel, mc, now, False)
                if mc.waiters > 0 and mc.conn.state >= core.STATE_BROKEN:
                    pthread_cond_broadcast(&mc.changed)
                conn_ready_note(mc)
            elif sealing < 0:
                next_time = now + MIN_TIMER_STEP_US
            pthread_mutex_unlock(&mc.lock)
            if sealing > 1:
                seal_burst(m, mc, batch, sealing - 1)

            if batch.count > 0:
                if probe:  # path-MTU probe: DF for this burst only (protocol.md §13)
                    self.channel.c_probe_mode(True)
                sent = self.channel.c_send_batch(batch, SEND_WAIT_US)
                if probe:
                    self.channel.c_probe_mode(False)
                if sent == -ECONNREFUSED:  # the ICMP reached this call first (pinned channel)
                    refuse_connects(m, self.channel, now_us())
                if sent < 0:
                    mux_count(&m.send_errors, 1)
                else:
                    mux_count(&m.datagrams_out, sent)
            pthread_mutex_lock(&m.send_lock)
            if next_time >= 0 and (not stopping or owes_shutdown):
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
        for i, name in enumerate(INVALID_REASONS):
            result["mux_invalid_" + name] = mux_read_count(&m.invalid_reason[i])
        result["mux_handshake_requests"] = mux_read_count(&m.hs_requests)
        result["mux_handshake_request_bytes"] = mux_read_count(&m.hs_request_bytes)
        result["mux_handshake_replies"] = mux_read_count(&m.hs_replies)
        result["mux_handshake_reply_bytes"] = mux_read_count(&m.hs_reply_bytes)
        result["mux_handshake_shed"] = mux_read_count(&m.hs_shed)
        result.update(self._listener_stats())
        return result

    cdef dict _listener_stats(self):
        """The stateless listener's own counters (listener_*), empty when none listens."""
        cdef MuxCore* m = self._m
        cdef core.Listener snapshot
        cdef bint listening = False
        with nogil:
            pthread_mutex_lock(&m.table_lock)
            if m.listener != NULL:
                pthread_mutex_lock(&m.listener.lock)
                snapshot = m.listener.engine
                pthread_mutex_unlock(&m.listener.lock)
                listening = True
            pthread_mutex_unlock(&m.table_lock)
        if not listening:
            return {}
        result = {"listener_inductions": snapshot.inductions, "listener_accepted": snapshot.accepted,
                  "listener_rejected": snapshot.rejected}
        for i, name in enumerate(INVALID_REASONS):
            result["listener_invalid_" + name] = snapshot.invalid[i]
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
        lst.ready_fd = -1
        lst.queue = <MuxConn**>calloc(lst.capacity, sizeof(MuxConn*))
        cc_class = config.congestion_control
        if isinstance(cc_class, str):  # native: fill_options chose its table
            cc_class = None
        keys = ListenerKeys(config.passphrase) if config.passphrase else None
        if cc_class is not None:  # each accepted connection gets its own instance
            lst.cc_class = <void*>cc_class
        if cc_class is not None or keys is not None:
            lst.pending = <core.AcceptRequest*>calloc(lst.capacity, sizeof(core.AcceptRequest))
        if keys is not None:  # the Listener object drops this reference when it is freed
            Py_INCREF(keys)
            lst.crypto = <void*>keys
        if (lst.queue == NULL or (lst.pending == NULL and (cc_class is not None or keys is not None))
                or pthread_mutex_init(&lst.lock, NULL) != 0 or cond_init(&lst.changed) != 0
                or cond_init(&lst.pending_wake) != 0):
            free(lst.queue)
            free(lst.pending)
            if lst.crypto != NULL:
                Py_DECREF(<object>lst.crypto)
            free(lst)
            raise MemoryError()
        lst.backlog = lst.capacity
        lst.opts = opts
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
            free(lst.pending)
            pthread_mutex_destroy(&lst.lock)
            pthread_cond_destroy(&lst.changed)
            pthread_cond_destroy(&lst.pending_wake)
            if lst.crypto != NULL:
                Py_DECREF(<object>lst.crypto)
            free(lst)
            raise error_from_code(ErrorCode.PORT_HAS_LISTENER)
        listener = CListener.__new__(CListener)
        (<CListener>listener).lst = lst
        (<CListener>listener).m = self._m
        (<CListener>listener).channel = self.channel
        (<CListener>listener).mux = self
        (<CListener>listener)._cc_class = cc_class
        if cc_class is not None or keys is not None:
            (<CListener>listener)._start_acceptor()
        return listener

    def pin_peer(self, tuple peer):
        """connect() the UDP socket of a private client multiplexer to its one peer, so that the
        kernel reports that peer's ICMP port-unreachable (an unconnected UDP socket hears none)
        and a connect to a closed port fails at once (refuse_connects)."""
        if self._key is not None:
            raise error_from_code(ErrorCode.INVALID_OPERATION, "only a private multiplexer is pinned")
        self.channel.connect(peer)

    def connect(self, object config, tuple peer, bint rendezvous, int connect_timeout_ms):
        """Start connecting to peer; returns the Connection (wait_connected() waits)."""
        cdef MuxCore* m = self._m
        cdef core.ConnOptions opts
        cdef sockaddr_storage address
        cdef socklen_t address_length = 0
        cdef MuxConn* mc
        cdef int result = 0
        cdef int64_t now
        cdef void* crypto = NULL
        cdef void* sealer = NULL
        if self._stopped:
            raise BadSocketError(ErrorCode.BAD_SOCKET, "the multiplexer is closed")
        fill_options(&opts, config)
        opts.rendezvous = rendezvous
        opts.connect_timeout_us = <int64_t>connect_timeout_ms * 1000
        if opts.crypto:
            if rendezvous:
                raise error_from_code(ErrorCode.INVALID_OPERATION,
                                      "UDT_PASSPHRASE is not supported with rendezvous yet")
            state = _CryptoState.for_client(ClientKeys(config.passphrase))  # the KDF: here, once
            offer = state.offer()
            memcpy(opts.crypto_offer, <const char*>offer, 32)
            opts.crypto_check = client_check
            opts.crypto_user = <void*>state
            Py_INCREF(state)  # the connection record's reference
            crypto = <void*>state
            sealer = <void*>(<CryptoState>state).st
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
                mc.crypto = crypto
                mc.seal = sealer
                crypto = NULL
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
        if crypto != NULL:
            Py_DECREF(<object>crypto)
        if result != 0:
            muxconn_decref(mc)
            raise error_from_code(-result)
        conn = CConnection.__new__(CConnection)
        (<CConnection>conn).c = mc  # takes the creation reference
        (<CConnection>conn).m = self._m
        (<CConnection>conn).channel = self.channel
        (<CConnection>conn).mux = self
        (<CConnection>conn)._cc = cc
        return conn


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
    name = config.congestion_control if config.congestion_control is not None else DEFAULT_CC
    if isinstance(name, str):
        opts.cc_ops = core.native_cc_by_name(name)
        if opts.cc_ops == NULL:
            raise ValueError(f"unknown congestion control {name!r}")
    opts.broken_timeout_us = <int64_t>config.peer_idle_timeout_ms * 1000
    if config.passphrase:
        # every packet grows by the seal (protocol.md §12): the engine plans smaller ones
        opts.crypto = True
        opts.mss = config.mss - SEAL_OVERHEAD
        if opts.mss < core.MIN_MSS:
            raise error_from_code(ErrorCode.BAD_PARAMETER,
                                  f"UDT_MSS must be at least {core.MIN_MSS + SEAL_OVERHEAD} with a passphrase")
    if config.pmtud:  # the most a UDP datagram holds (protocol.md §13), less the seal
        opts.pmtud_max_mss = core.PMTUD_MAX_MSS - (SEAL_OVERHEAD if config.passphrase else 0)
    return 0


cdef int grow_seal_area(MuxCore* m, size_t slot) noexcept nogil:
    """Room for a burst of packets of up to slot bytes, in clear and sealed (send worker)."""
    cdef uint8_t* clear = <uint8_t*>malloc(SEND_BURST * slot)
    cdef uint8_t* sealed = <uint8_t*>malloc(SEND_BURST * slot)
    if clear == NULL or sealed == NULL:
        free(clear)
        free(sealed)
        return -1
    free(m.seal_in)
    free(m.seal_out)
    m.seal_in = clear
    m.seal_out = sealed
    m.seal_slot = slot
    return 0


cdef void seal_burst(MuxCore* m, MuxConn* mc, CSendBatch* batch, int count) noexcept nogil:
    """Seal a burst copied out of mc (send worker, no lock held: only this worker seals for
    mc) and queue it on batch.  Handshakes go as they are."""
    cdef int k
    cdef ssize_t n
    cdef uint8_t* clear
    cdef uint8_t* sealed
    for k in range(count):
        clear = m.seal_in + k * m.seal_slot
        sealed = m.seal_out + k * m.seal_slot
        if is_handshake(clear, m.seal_len[k]):
            memcpy(sealed, clear, m.seal_len[k])
            n = <ssize_t>m.seal_len[k]
        else:
            n = seal(<SealState*>mc.seal, clear, m.seal_len[k], sealed)
        if n > 0:  # unsealable (not keyed): never sent in clear
            send_batch_add(batch, sealed, <size_t>n)


cdef void move_peer(MuxConn* mc, const sockaddr* source) noexcept nogil:
    """Follow an authenticated peer to its new address (mc.lock held)."""
    memset(&mc.conn.peer_addr, 0, sizeof(sockaddr_storage))
    memcpy(&mc.conn.peer_addr, source,
           sizeof(sockaddr_in) if source.sa_family == AF_INET else sizeof(sockaddr_in6))
    mc.peer_rebinds += 1


cdef object make_cc(core.ConnOptions* opts, object config):
    """A Python congestion-control instance when UDT_CC names a class (None: native)."""
    cc_class = config.congestion_control
    if cc_class is None or isinstance(cc_class, str):
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


cdef void refuse_connects(MuxCore* m, Channel channel, int64_t now) noexcept nogil:
    """ECONNREFUSED on a pinned channel (``Multiplexer.pin_peer``): the peer's port is closed.
    Client connects still in their handshake fail now (``ConnectionRefusedError``).  Established
    connections ignore it (one ICMP is no proof a live peer is gone, and it is easily forged:
    their own timers decide), and a rendezvous keeps calling a peer that may not be up yet."""
    cdef MuxConn* found[8]  # a pinned multiplexer serves one udt socket: one connection
    cdef int count = 0
    cdef int i
    cdef size_t slot
    cdef MuxConn* mc
    cdef uint32_t events
    pthread_mutex_lock(&m.table_lock)
    for slot in range(m.by_id.capacity):
        mc = m.by_id.slots[slot]
        if mc != NULL and count < 8:
            muxconn_incref(mc)
            found[count] = mc
            count += 1
    pthread_mutex_unlock(&m.table_lock)
    for i in range(count):
        mc = found[i]
        pthread_mutex_lock(&mc.lock)
        if mc.conn.state == core.STATE_CONNECTING and not mc.conn.rendezvous:
            events = _connect_failed(&mc.conn, core.ERR_REJECTED)
            after_engine_call(m, channel, mc, events, now, True)
        pthread_mutex_unlock(&mc.lock)
        muxconn_decref(mc)
