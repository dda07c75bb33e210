# cython: language_level=3
"""The multiplexer: one UDP channel per (address, port, family), shared by every udt socket bound
there, served without the GIL by one worker pair (a receive and a send thread) of the
process-wide pool in ``_pool.pyx``, which serves other ports too.  This unit holds the work;
the pool decides when it runs (``_receive_ready``, ``_run_timers``, ``_send_due``).

* receive worker: waits (the pool's epoll set) until a datagram arrives or the nearest
  timer of its connections is due (no fixed tick: an idle link costs no wakeups), dispatches each
  datagram by destination socket ID (0: the listener or a rendezvous socket, by peer address),
  feeds the engine under the connection's lock, runs due timers, wakes user threads, sends what
  is due now itself (``send_now``: the immediate ACK, an ACK2) and leaves the rest to the send
  worker.  A Python congestion control's callbacks run here under that connection's lock only;
  creating one for an accepted connection and its init() are left to the listener's accepting
  thread (``_listener.pyx``), so a slow class never holds the port's locks nor this worker.
* send worker: a heap of connections ordered by next send time; sleeps on a condition variable
  until the earliest, takes a burst of datagrams (zero-copy: header + payload pointer) under the
  connection lock, sends them in one GSO ``sendmsg`` with the lock released.
* user threads: copy into / out of the engine's buffers under the connection lock and wait on the
  connection's condition variable with the GIL released; after a write, a burst that nothing
  paces leaves from the user thread itself (``send_now``, the same ``burst_take``/``burst_send``
  as the send worker's; ``MuxConn.tx_inflight`` keeps one burst per connection on its way).

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
                        is_handshake, open_sealed)
from udt.core.packet cimport get_u32
from udt._muxcore cimport (DIRECT_BURST, RX_DROP, RX_OPENED, RX_PLAIN, MUX_INVALID_HEADER, MUX_INVALID_NO_LISTENER,
                           MUX_INVALID_UNKNOWN_DESTINATION, MUX_INVALID_WRONG_SOURCE, SEND_BURST,
                           WAKE_EVENTS, BurstArea, MuxCore, MuxListener, after_engine_call,
                           allocate_socket_id, burst_area_free, burst_area_init, burst_send, burst_take,
                           closed_peer_to_answer, listener_ready_note, register_conn, schedule_send, schedule_timer,
                           send_heap_key, RX_NAP_MAX_US, RX_NAP_MIN_DATAGRAMS, RX_NAP_MIN_US, RX_NAP_RTT_SHARE,
                           unregister_conn, unschedule)
from udt._net cimport (AF_INET, Channel, CRecvBatch, CSendBatch, recv_batch_free, recv_batch_new,
                       recv_batch_source, send_batch_add, send_batch_clear,
                       send_batch_free, send_batch_new, sockaddr, sockaddr_from_address,
                       sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t)
from udt._sync cimport (cond_init, cond_wait_until, mux_atomic_load, mux_count, mux_read_count, now_us,
                        pthread_cond_broadcast, pthread_cond_destroy, pthread_mutex_destroy,
                        pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock)
from udt._net import Channel as _Channel

from udt._connection import Connection
from udt._crypto import ClientKeys, ListenerKeys
from udt._seal import CryptoState as _CryptoState
from udt._core import INVALID_REASONS
from udt._listener import Listener
from udt.cc import DEFAULT_CC
from udt.options import DEFAULT_UDP_RCVBUF, DEFAULT_UDP_SNDBUF
from udt.errors import BadSocketError, ErrorCode, error_from_code

__all__ = ["Multiplexer", "Listener", "Connection"]   # what the socket layer uses, from here

cdef enum:
    SEND_WAIT_US = 100000           # a full kernel send buffer is waited on at most this long
    RECV_SLOTS = 32                 # GRO-sized receive buffers per multiplexer
    # Datagrams dispatched per turn (one hold of a connection's lock, one wake-up of its
    # reader, one after_engine_call): every segment of up to 8 full GRO buffers (~350 at MSS
    # 1500).  32 cut each 64 KiB GRO buffer into two turns, so a reader woke per 46 KB.
    RECV_DISPATCH = 8 * 44
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


cdef long long _rcvbuf_for_window(Channel channel, MuxConn* mc, long long grow) noexcept nogil:
    """The connection's receive limit grew (the engine's autotuning, docs/engine.md "Buffers
    that follow the path"): let the kernel's UDP buffer hold that window too, so a receive worker
    that waits for a core drops nothing (a 1 Gbit/s x 200 ms window is ~17,000 datagrams; the
    default buffer holds ~10,000).  Asked for limit x MSS bytes, which the kernel doubles for its
    per-packet overhead; at least twice the last size asked (few syscalls), never more than
    the connection's UDT_RCVBUF cap allows; never lowered (the port's other connections).
    Returns the larger of that and ``grow``, what the batch asks for so far: the receive worker
    sets it after the batch, with no connection lock held."""
    cdef long long wanted = <long long>mc.conn.rcv.limit * mc.conn.mss
    cdef long long cap = <long long>mc.conn.rcv.max_limit * mc.conn.mss
    mc.rcvbuf_followed = mc.conn.rcv.limit
    if wanted <= channel.rcvbuf_asked:
        return grow
    if wanted < 2 * channel.rcvbuf_asked:
        wanted = 2 * channel.rcvbuf_asked
    if wanted > cap:
        wanted = cap
    return wanted if wanted > grow else grow


cdef inline int64_t _queued_bytes(int fd) noexcept nogil:
    """Memory the kernel holds in fd's receive queue (SO_MEMINFO's rmem_alloc), 0 if unknown."""
    cdef uint32_t info[9]
    cdef socklen_t length = sizeof(info)
    if getsockopt(fd, 1, SO_MEMINFO, info, &length) != 0 or length < sizeof(uint32_t):
        return 0  # level 1: SOL_SOCKET
    return info[0]


def _scale_default_buffers(channel, udp_rcvbuf, udp_sndbuf) -> None:
    """UDP_RCVBUF/UDP_SNDBUF left at their defaults are counts of MSS-1500 datagrams (UDT4's 8192
    for receiving): they grow with the MSS path-MTU discovery finds (protocol.md §13), or 64 KiB
    datagrams overflow a 12 MB receive buffer in one burst.  A value the user set is not scaled
    (only _rcvbuf_for_window may still raise the receive buffer, within UDT_RCVBUF)."""
    channel.scale_buffers_with_mss(udp_rcvbuf if udp_rcvbuf == DEFAULT_UDP_RCVBUF else 0,
                                   udp_sndbuf if udp_sndbuf == DEFAULT_UDP_SNDBUF else 0)


cdef inline int64_t _rx_nap(int datagrams, int64_t smallest_rtt) noexcept nogil:
    """How long the receive worker may nap after a turn that drained the channel (udt/_pool.pyx):
    a stream of data on a long path only.  At 1 Gbit/s through the WAN link a turn found about a
    dozen datagrams, so the wake-ups (epoll, a context switch, two recvmmsg) cost more than the
    datagrams; a nap of 1/64 RTT (at most RX_NAP_MAX_US) lets the next turn find a few dozen,
    and delays what the packets answer (ACKs, NAKs) by a negligible share of the round trip."""
    cdef int64_t nap
    if datagrams < RX_NAP_MIN_DATAGRAMS or smallest_rtt <= 0:
        return 0
    nap = smallest_rtt // RX_NAP_RTT_SHARE
    if nap < RX_NAP_MIN_US:
        return 0
    return nap if nap < RX_NAP_MAX_US else RX_NAP_MAX_US


cdef class Multiplexer:
    """One UDP channel and its place in the worker pool, shared by the udt sockets bound to it.

    Reference counted by the sockets (:meth:`retain`/:meth:`release`); the last release stops
    the workers, closes the channel and frees the port.
    """

    def __cinit__(self):
        self._m = <MuxCore*>calloc(1, sizeof(MuxCore))
        if self._m == NULL:
            raise MemoryError()
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
        burst_area_free(&m.tx)
        burst_area_free(&m.rx_tx)
        send_batch_free(m.reply_batch)
        recv_batch_free(m.rx_batch)
        free(m.reply_area)
        free(m.rx_owner)
        free(m.rx_mark)
        pthread_mutex_destroy(&m.table_lock)
        free(m)

    cdef _setup(self, Channel channel):
        cdef MuxCore* m = self._m
        self.channel = channel
        m.family = channel.family
        m.next_socket_id = int.from_bytes(os.urandom(4), "little") | 1
        if pthread_mutex_init(&m.table_lock, NULL) != 0:
            raise MemoryError()
        if (table_init(&m.by_id, TABLE_INITIAL) != 0 or table_init(&m.by_peer, TABLE_INITIAL) != 0
                or heap_init(&m.send_heap, HEAP_SEND, 64) != 0
                or heap_init(&m.timer_heap, HEAP_TIMER, 64) != 0):
            raise MemoryError()
        tx_ok = burst_area_init(&m.tx, SEND_BURST) == 0 and burst_area_init(&m.rx_tx, DIRECT_BURST) == 0
        m.reply_batch = send_batch_new(1, 1)
        m.rx_batch = recv_batch_new(RECV_SLOTS, 65536, RECV_DISPATCH)
        m.reply_area = <uint8_t*>malloc(core.MAX_CONTROL_SIZE)
        if m.rx_batch != NULL:
            m.rx_owner = <MuxConn**>calloc(m.rx_batch.max_datagrams, sizeof(MuxConn*))
            m.rx_mark = <uint8_t*>calloc(m.rx_batch.max_datagrams, 1)
        if (not tx_ok or m.reply_batch == NULL or m.rx_batch == NULL
                or m.reply_area == NULL or m.rx_owner == NULL
                or m.rx_mark == NULL):
            raise MemoryError()
        self._local_address = channel.getsockname()
        self._refs = 1
        from udt._pool import attach  # (not at import: _pool cimports this unit)
        self._pair = attach(self)     # a worker pair of the process-wide pool serves us now
        self._stopped = False
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
            _scale_default_buffers(channel, udp_rcvbuf, udp_sndbuf)
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
        _scale_default_buffers(channel, udp_rcvbuf, udp_sndbuf)
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
        from udt._pool import on_worker_thread
        if on_worker_thread():
            # a socket closed by code the pool's worker runs (a Python CC's callback, or the
            # collector freeing an unclosed socket there): the worker can neither wait for
            # itself nor join itself, so a helper thread stops the port
            threading.Thread(target=self.stop, name="udt-mux-stop", daemon=True).start()
            return
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
        #    connections still owe, in one burst each), then drops us (udt/_pool.pyx)
        self._pair.detach_send(self)
        # 3. the receive worker drops us (it is not in the middle of our batch), the channel closes
        self._pair.detach_receive(self)
        self.channel.close()
        self._pair.release(self)
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

    # ---- the work of the pool's workers for this port (udt/_pool.pyx runs them) ----

    cdef bint _receive_ready(self, int batches) noexcept nogil:
        """Receive and dispatch up to ``batches`` batches without waiting (the pool's receive
        worker, when the channel is readable).  True when batches may be left: call again
        before waiting (a GRO buffer still being split is not seen by epoll)."""
        cdef MuxCore* m = self._m
        cdef CRecvBatch* rx = m.rx_batch
        cdef int64_t now, queued
        cdef int n, i, peek
        cdef core.PacketInfo info
        cdef MuxConn* current = NULL
        cdef uint32_t events = 0
        cdef uint32_t answer_peer
        cdef const sockaddr* source
        cdef bint opened
        cdef long long grow = 0
        cdef int datagrams = 0
        cdef int64_t smallest_rtt = -1     # of the connections served; 0: a handshake was too
        while batches > 0:
            batches -= 1
            n = self.channel.c_recv_batch(rx, 0)
            if n == -EBADF or n == -EAGAIN:
                m.rx_nap_us = _rx_nap(datagrams, smallest_rtt)
                return False
            now = now_us()
            if n > 0:
                mux_count(&m.datagrams_in, n)
                datagrams += n
                m.hs_reply_budget = -1
                if rx.pending_messages >= RECV_SLOTS:  # the receive came back full
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
                            smallest_rtt = 0
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
                        if not current.conn.rtt_sampled:
                            smallest_rtt = 0           # the 100 ms initial RTT is no measure
                        elif smallest_rtt < 0 or current.conn.rtt_us < smallest_rtt:
                            smallest_rtt = current.conn.rtt_us
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
                    if current.conn.rcv.limit > current.rcvbuf_followed:
                        grow = _rcvbuf_for_window(self.channel, current, grow)
                if current != NULL:
                    after_engine_call(m, self.channel, current, events, now, True)
                    pthread_mutex_unlock(&current.lock)
                    muxconn_decref(current)
                    current = NULL
                if grow > 0:
                    self.channel.c_grow_rcvbuf(grow)   # a syscall: no lock held
                    grow = 0
            elif n == -ECONNREFUSED:
                refuse_connects(m, self.channel, now_us())  # only a pinned channel hears ICMP
            elif n < 0 and n != -ETIMEDOUT and n != -EAGAIN and n != -EINTR:
                mux_count(&m.send_errors, 1)  # a receive error (ICMP errors on some kernels): go on
        m.rx_nap_us = 0  # batches may be left: no nap
        return True

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
            pthread_mutex_lock(m.timer_lock)
            if m.timer_heap.count == 0 or m.timer_heap.items[0].heap_key[HEAP_TIMER] > now:
                pthread_mutex_unlock(m.timer_lock)
                return
            mc = heap_remove_at(&m.timer_heap, 0)  # its heap reference is ours now
            pthread_mutex_unlock(m.timer_lock)
            pthread_mutex_lock(&mc.lock)
            if not mc.mux_dead:
                events = core.conn_on_timer(&mc.conn, now)
                next_timer = core.conn_next_timer(&mc.conn)
                if 0 <= next_timer <= now:
                    # the engine did not move its deadline: retry a little later, never spin
                    pthread_mutex_lock(m.timer_lock)
                    heap_push_or_lower(&m.timer_heap, mc, now + MIN_TIMER_STEP_US)
                    pthread_mutex_unlock(m.timer_lock)
                    schedule_send(m, mc, now)
                    if mc.waiters > 0 and (events & WAKE_EVENTS):
                        pthread_cond_broadcast(&mc.changed)
                    conn_ready_note(mc)
                else:
                    after_engine_call(m, self.channel, mc, events, now, True)
            pthread_mutex_unlock(&mc.lock)
            muxconn_decref(mc)

    cdef int64_t _send_due(self, int turns) noexcept nogil:
        """Send the bursts that are due, at most ``turns`` connections' (the pool's send worker,
        with the pair's send lock held: it is released around each send).  Returns the next
        send time: -1 when nothing is queued, now or earlier when more is due already.  While
        stopping, everything queued is due (the SHUTDOWNs owed go now)."""
        cdef MuxCore* m = self._m
        cdef BurstArea* area = &m.tx
        cdef MuxConn* mc
        cdef int64_t now, next_time, top
        cdef int sent, taken
        cdef bint stopping, owes_shutdown
        while True:
            stopping = mux_atomic_load(&m.stopping) != 0
            now = now_us()
            if m.send_heap.count == 0:
                return -1
            top = m.send_heap.items[0].heap_key[HEAP_SEND]
            if top > now and not stopping:  # stopping: what is left goes now (SHUTDOWNs owed)
                return top
            if turns <= 0:
                return now
            turns -= 1
            mc = heap_remove_at(&m.send_heap, 0)  # the heap's reference is ours now
            pthread_mutex_unlock(m.send_lock)

            next_time = -1
            owes_shutdown = False
            taken = 0
            pthread_mutex_lock(&mc.lock)
            if mc.tx_inflight:
                # a user thread's direct burst is on its way: it reschedules mc once sent.  A
                # closing port, which sends what is due without waiting, takes mc back and
                # waits for that (signalled) or 1 ms, so it never leaves with a SHUTDOWN owed.
                pthread_mutex_unlock(&mc.lock)
                pthread_mutex_lock(m.send_lock)
                if stopping:  # (the pair's condition: any of its ports' signals ends the wait early)
                    heap_push_or_lower(&m.send_heap, mc, now + MIN_TIMER_STEP_US)
                    m.send_sleep_until[0] = now + MIN_TIMER_STEP_US
                    cond_wait_until(m.send_wake, m.send_lock, now + MIN_TIMER_STEP_US)
                    m.send_sleep_until[0] = -2
                muxconn_decref(mc)
                continue
            if stopping and mc.conn.state == core.STATE_CLOSED and mc.conn.shutdown_due > 0:
                # the port closes: the copies still spaced 10 ms apart go in this burst
                mc.conn.shutdown_burst = True
                mc.conn.shutdown_next_time = 0
            if not mc.mux_dead:
                taken = burst_take(area, mc, now)
            if taken >= 0 and not mc.mux_dead:
                next_time = send_heap_key(&mc.conn, core.conn_next_send_time(&mc.conn, now), now)
                owes_shutdown = mc.conn.state == core.STATE_CLOSED and mc.conn.shutdown_due > 0
                schedule_timer(m, self.channel, mc, now, False)
                if mc.waiters > 0 and mc.conn.state >= core.STATE_BROKEN:
                    pthread_cond_broadcast(&mc.changed)
                conn_ready_note(mc)
            elif taken < 0:  # no memory to seal now: nothing leaves in clear, try again later
                next_time = now + MIN_TIMER_STEP_US
            pthread_mutex_unlock(&mc.lock)

            if taken > 0:
                sent = burst_send(m, self.channel, area, mc, SEND_WAIT_US)
                if sent == -ECONNREFUSED:  # the ICMP reached this call first (pinned channel)
                    refuse_connects(m, self.channel, now_us())
                pthread_mutex_lock(&mc.lock)
                mc.tx_inflight = 0
                # what others queued meanwhile (send_now left it), and what came due while the
                # burst was sent: keyed from the burst's time, so that paced data still waits for
                # its slack (send_heap_key) instead of leaving at once as a burst of one or two
                schedule_send(m, mc, now)
                pthread_mutex_unlock(&mc.lock)
            pthread_mutex_lock(m.send_lock)
            if next_time >= 0 and (not stopping or owes_shutdown):
                heap_push_or_lower(&m.send_heap, mc, next_time)
            muxconn_decref(mc)

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
            after_engine_call(m, channel, mc, events, now, False)  # either worker calls this
        pthread_mutex_unlock(&mc.lock)
        muxconn_decref(mc)
