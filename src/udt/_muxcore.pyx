# cython: language_level=3
"""Scheduling, registration, the closed-connection memory and closing a connection: the
operations on a multiplexer's shared state (MuxCore, the lock order is in the .pxd)."""
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from udt._pages cimport pages_map, pages_unmap

from udt._epoll cimport READY_READ_FD, READY_WRITE_FD, conn_ready_note, ready_close
from udt._conntable cimport (MuxConn, muxconn_decref, muxconn_incref, peer_key, same_address,
                             table_find_id, table_insert, table_remove)
from udt._heap cimport HEAP_SEND, HEAP_TIMER, heap_push_or_lower, heap_remove_at, heap_set_key
from udt._net cimport (AF_INET, Channel, CSendBatch, send_batch_add, send_batch_add_pair,
                       send_batch_clear, send_batch_free, send_batch_new, sockaddr, sockaddr_in,
                       sockaddr_in6, sockaddr_storage)
from udt._seal cimport SealState, is_handshake, seal
from udt._sync cimport mux_atomic_load, mux_count
from udt._sync cimport (mux_atomic_add, cond_wait_until, now_us, pthread_cond_broadcast, pthread_cond_signal,
                        pthread_mutex_lock, pthread_mutex_unlock)
cimport udt.core.engine as core
from udt.core.connutil cimport _pacing_period


# ---------------------------------------------------------------------------------------------
# scheduling (called with the connection lock held)
# ---------------------------------------------------------------------------------------------

cdef enum:
    RX_SEND_WAIT_US = 1000      # the receive worker waits this long at most for a full kernel buffer


cdef int64_t send_heap_key(core.Conn* c, int64_t when, int64_t now) noexcept nogil:
    """When the send worker should come for a connection whose next datagram is due at `when`
    (conn_next_send_time).  Due now: now.  Due later by pacing at a short period: up to
    PACING_SLACK_PACKETS periods later (PACING_SLACK_MAX_US at most), since the engine's budget
    then sends everything due in one burst (_next_data: at most MAX_PACING_LAG_US behind).  At
    1 Gbit/s the worker woke every 8 packets or so, a futex wait, a context switch and a
    sendmmsg each; one wake-up per ~32 packets divides those by four, and the link sees the
    bursts of 0.4 ms that TCP's 1 ms TSO autosizing makes anyway."""
    cdef double period, slack
    if when <= now:
        return when
    period = _pacing_period(c)
    if period <= 0 or period * PACING_SLACK_MIN_PACKETS > PACING_SLACK_MAX_US:
        return when
    slack = period * PACING_SLACK_PACKETS
    if slack > PACING_SLACK_MAX_US:
        slack = PACING_SLACK_MAX_US
    return when + <int64_t>slack


cdef void schedule_send(MuxCore* m, MuxConn* mc, int64_t now) noexcept nogil:
    """Queue mc in the send heap at its next send time (send_heap_key); wake the send worker if
    it sleeps past that time."""
    cdef int64_t when = send_heap_key(&mc.conn, core.conn_next_send_time(&mc.conn, now), now)
    cdef int earliest
    if when < 0 or mc.mux_dead:
        return
    pthread_mutex_lock(m.send_lock)
    earliest = heap_push_or_lower(&m.send_heap, mc, when)
    if earliest == 1 and m.send_sleep_until[0] != -2 and (m.send_sleep_until[0] < 0 or when < m.send_sleep_until[0]):
        m.send_sleep_until[0] = -2  # one signal is enough until it sleeps again
        pthread_cond_signal(m.send_wake)
    pthread_mutex_unlock(m.send_lock)


cdef void schedule_timer(MuxCore* m, Channel channel, MuxConn* mc, int64_t now,
                         bint from_receive_worker) noexcept nogil:
    """Put mc's next timer deadline in the timer heap; interrupt the receive worker's wait when
    the deadline is earlier than the one it sleeps towards."""
    cdef int64_t when = core.conn_next_timer(&mc.conn)
    cdef bint wake = False
    cdef MuxConn* removed
    if mc.mux_dead:
        return
    pthread_mutex_lock(m.timer_lock)
    if when < 0:
        if mc.heap_pos[HEAP_TIMER] >= 0:
            removed = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
            pthread_mutex_unlock(m.timer_lock)
            muxconn_decref(removed)  # never the last reference: the caller holds one
            return
    else:
        if when <= now - 1000000:
            when = now  # a deadline long past still runs at once, never "before" now
        if mc.heap_pos[HEAP_TIMER] >= 0:
            heap_set_key(&m.timer_heap, mc, when)
        else:
            heap_push_or_lower(&m.timer_heap, mc, when)
        if (not from_receive_worker and m.rx_sleep_until[0] != -2
                and (m.rx_sleep_until[0] < 0 or when < m.rx_sleep_until[0])):
            m.rx_sleep_until[0] = -2
            wake = True
    pthread_mutex_unlock(m.timer_lock)
    if wake:
        channel.c_interrupt()


cdef void after_engine_call(MuxCore* m, Channel channel, MuxConn* mc, uint32_t events, int64_t now,
                            bint from_receive_worker) noexcept nogil:
    """What follows every engine call on mc (lock held): wake the user threads waiting on it
    when something they wait for changed, reschedule sending and timers.  In the receive
    worker, what is due now (the immediate ACK, an ACK2) leaves from here (send_now: the
    lock is released while sending), after the wake-up, so the user thread runs meanwhile."""
    if mc.waiters > 0 and (events & WAKE_EVENTS):
        pthread_cond_broadcast(&mc.changed)
    conn_ready_note(mc)
    if from_receive_worker and m.rx_tx.batch != NULL:
        send_now(m, channel, mc, &m.rx_tx, now, RX_SEND_WAIT_US, True)
    else:
        schedule_send(m, mc, now)
    schedule_timer(m, channel, mc, now, from_receive_worker)


cdef void unschedule(MuxCore* m, MuxConn* mc) noexcept nogil:
    """Take mc out of both heaps (its references are dropped)."""
    cdef MuxConn* a = NULL
    cdef MuxConn* b = NULL
    pthread_mutex_lock(m.send_lock)
    if mc.heap_pos[HEAP_SEND] >= 0:
        a = heap_remove_at(&m.send_heap, mc.heap_pos[HEAP_SEND])
    pthread_mutex_unlock(m.send_lock)
    pthread_mutex_lock(m.timer_lock)
    if mc.heap_pos[HEAP_TIMER] >= 0:
        b = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
    pthread_mutex_unlock(m.timer_lock)
    muxconn_decref(a)
    muxconn_decref(b)


# ---------------------------------------------------------------------------------------------
# bursts (the send worker, and a user thread sending directly)
# ---------------------------------------------------------------------------------------------

cdef int burst_area_init(BurstArea* a, int limit) noexcept nogil:
    """Allocate a's batch and header room for bursts of up to limit datagrams; 0 or -1."""
    a.limit = limit if 0 < limit <= SEND_BURST else SEND_BURST
    a.batch = send_batch_new(a.limit, 2 * a.limit)
    a.headers = <uint8_t*>malloc(<size_t>a.limit * core.MAX_CONTROL_SIZE)
    a.sealing = 0
    a.seal_bytes = 0
    a.seal_in = NULL
    a.seal_out = NULL
    if a.batch == NULL or a.headers == NULL:
        burst_area_free(a)
        return -1
    return 0


cdef void burst_area_free(BurstArea* a) noexcept nogil:
    send_batch_free(a.batch)
    free(a.headers)
    pages_unmap(a.seal_in, a.seal_bytes)
    pages_unmap(a.seal_out, a.seal_bytes)
    a.batch = NULL
    a.headers = NULL
    a.seal_in = NULL
    a.seal_out = NULL
    a.seal_bytes = 0


cdef int _grow_seal_area(BurstArea* a, size_t need) noexcept nogil:
    """Room for a burst in clear and sealed: SEAL_AREA_BYTES, or one packet of need bytes
    (with its SEAL_ROOM) if that is more."""
    cdef size_t size = need if need > SEAL_AREA_BYTES else SEAL_AREA_BYTES
    cdef uint8_t* clear = <uint8_t*>pages_map(size)     # own pages: udt/_pages.pxd says why
    cdef uint8_t* sealed = <uint8_t*>pages_map(size)
    if clear == NULL or sealed == NULL:
        pages_unmap(clear, size)
        pages_unmap(sealed, size)
        return -1
    pages_unmap(a.seal_in, a.seal_bytes)
    pages_unmap(a.seal_out, a.seal_bytes)
    a.seal_in = clear
    a.seal_out = sealed
    a.seal_bytes = size
    return 0


cdef int burst_take(BurstArea* a, MuxConn* mc, int64_t now) noexcept nogil:
    """Take the datagrams mc has due now, up to a.limit, into a (mc.lock held, mc.tx_inflight
    clear; it is set when something was taken: the caller clears it under the lock once
    burst_send returned).  Zero-copy in clear (header + a pointer into the send buffer slot);
    an encrypted connection's packets are copied out to be sealed by burst_send without the
    lock.  Returns the count, or -1 when the seal area could not grow (nothing taken, nothing
    ever leaves in clear: try again later)."""
    cdef int k
    cdef ssize_t length
    cdef const uint8_t* payload
    cdef size_t payload_length
    cdef uint8_t* header
    cdef uint8_t* slot
    cdef size_t need = 0
    cdef size_t used = 0
    cdef CSendBatch* batch = a.batch
    send_batch_clear(batch)
    a.sealing = 0
    a.probe = False
    a.grow_buffers = mc.conn.pmtud_ack_size  # an answer to the peer's probe: bigger data follows
    if mc.crypto != NULL:
        need = <size_t>max(mc.conn.mss, mc.conn.pmtud_max, core.MAX_CONTROL_SIZE) + SEAL_ROOM  # probes too
        if a.seal_bytes < need and _grow_seal_area(a, need) != 0:
            a.sealing = -1
            return -1
        a.sealing = 1
    memcpy(&batch.address, &mc.conn.peer_addr, sizeof(sockaddr_storage))
    batch.address_length = (sizeof(sockaddr_in) if mc.conn.peer_addr.ss_family == AF_INET
                            else sizeof(sockaddr_in6))
    for k in range(a.limit):
        if a.sealing and a.seal_bytes - used < need:  # the area is full: the rest next turn
            break
        header = a.headers + k * core.MAX_CONTROL_SIZE
        length = core.conn_next_datagram_zc(&mc.conn, now, header, core.MAX_CONTROL_SIZE,
                                            &payload, &payload_length)
        if length <= 0:
            break
        if a.sealing:  # copied out in clear, sealed by burst_send without the lock
            slot = a.seal_in + used
            memcpy(slot, header, <size_t>length)
            if payload_length > 0:
                memcpy(slot + length, payload, payload_length)
            a.seal_off[k] = used
            a.seal_len[k] = <size_t>length + payload_length
            used += a.seal_len[k] + SEAL_ROOM
            a.sealing += 1
        elif payload_length > 0:
            send_batch_add_pair(batch, header, <size_t>length, payload, payload_length)
        else:
            send_batch_add(batch, header, <size_t>length)
        if mc.conn.pmtud_probe_out:  # last in the burst: it may fail alone (EMSGSIZE)
            mc.conn.pmtud_probe_out = False
            a.probe = True
            if mc.conn.pmtud_probe > a.grow_buffers:
                a.grow_buffers = mc.conn.pmtud_probe
            break
    k = a.sealing - 1 if a.sealing > 0 else batch.count
    if k > 0:
        mc.tx_inflight = 1
    return k


cdef int burst_send(MuxCore* m, Channel channel, BurstArea* a, MuxConn* mc,
                    int64_t wait_us) noexcept nogil:
    """Seal what burst_take copied out (only the holder of mc.tx_inflight seals for mc, so
    packet numbers go out in order) and send the burst in one call, no lock held.  Counts the
    datagrams out or the error; returns what c_send_batch returned (0 for an empty burst)."""
    cdef int k
    cdef ssize_t n
    cdef uint8_t* clear
    cdef uint8_t* sealed
    cdef int sent
    cdef CSendBatch* batch = a.batch
    for k in range(a.sealing - 1 if a.sealing > 1 else 0):
        clear = a.seal_in + a.seal_off[k]
        sealed = a.seal_out + a.seal_off[k]
        if is_handshake(clear, a.seal_len[k]):  # handshakes go as they are
            memcpy(sealed, clear, a.seal_len[k])
            n = <ssize_t>a.seal_len[k]
        else:
            n = seal(<SealState*>mc.seal, clear, a.seal_len[k], sealed)
        if n > 0:  # unsealable (not keyed): never sent in clear
            send_batch_add(batch, sealed, <size_t>n)
    if batch.count == 0:
        return 0
    if a.grow_buffers > 0:  # before the datagrams that may bring bigger ones (protocol.md §13)
        channel.c_size_buffers_for(a.grow_buffers)
    if a.probe:  # path-MTU probe: DF for this burst only (protocol.md §13)
        channel.c_probe_mode(True)
    sent = channel.c_send_batch(batch, wait_us)
    if a.probe:
        channel.c_probe_mode(False)
    if sent < 0:
        mux_count(&m.send_errors, 1)
    else:
        mux_count(&m.datagrams_out, sent)
    return sent


cdef void send_now(MuxCore* m, Channel channel, MuxConn* mc, BurstArea* area, int64_t now,
                   int64_t wait_us, bint from_receive_worker) noexcept nogil:
    """Send what mc has due now from this thread (a user thread after its write, the receive
    worker after feeding the engine) instead of handing it to the send worker, when nothing
    paces the connection: what it has is due now (send window open, pacing period elapsed).
    mc.lock is held on entry and on return, released while sending.  On a latency-bound
    exchange the hand-off to the send worker (a wake-up and a context switch) was most of the
    round trip.  Only while the send buffer holds at most DIRECT_BURST packets' worth: a bulk
    stream (a writer, or the ACKs that open its window) stays the send worker's, paced and in
    its 64-datagram batches, as before.

    One burst at a time per connection (mc.tx_inflight, so the wire order and the seal numbers
    hold): while another thread's burst is on its way, what was queued is left to that thread,
    which looks again when it is done (here, or the send worker's schedule_send).  At most
    DIRECT_ROUNDS bursts of area.limit datagrams.  area NULL: the send worker sends everything."""
    cdef int rounds = 0
    cdef int taken
    while True:
        if mc.tx_inflight:
            return  # its holder looks again when done
        if (area == NULL or rounds >= DIRECT_ROUNDS or mc.mux_dead
                or mc.conn.state != core.STATE_CONNECTED or mux_atomic_load(&m.stopping)
                or core.conn_pending_send_bytes(&mc.conn) > <int64_t>DIRECT_BURST * mc.conn.mss
                or core.conn_next_send_time(&mc.conn, now) != now):
            break
        taken = burst_take(area, mc, now)
        if taken <= 0:
            break
        schedule_timer(m, channel, mc, now, from_receive_worker)
        pthread_mutex_unlock(&mc.lock)
        burst_send(m, channel, area, mc, wait_us)
        pthread_mutex_lock(&mc.lock)
        mc.tx_inflight = 0
        if mc.waiters > 0 and mc.conn.state >= core.STATE_BROKEN:
            pthread_cond_broadcast(&mc.changed)
        rounds += 1
        now = now_us()
    schedule_send(m, mc, now)


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
    if mc.crypto != NULL:
        mux_atomic_add(&m.crypto_conns, 1)
    if by_peer:
        mc.peer_table_key = peer_key(<const sockaddr*>&mc.conn.peer_addr, mc.conn.peer_socket_id)
        if table_insert(&m.by_peer, mc.peer_table_key, mc) == 0:
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
        if mc.crypto != NULL:
            mux_atomic_add(&m.crypto_conns, -1)
        drops += 1
    if mc.in_peer_table:
        table_remove(&m.by_peer, mc.peer_table_key, mc)
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
# closing a connection (user threads, the listener and the multiplexer's stop)
# ---------------------------------------------------------------------------------------------

cdef int close_conn(MuxCore* m, Channel channel, MuxConn* mc, int64_t linger_us,
                    int wait) noexcept nogil:
    """Close mc: drain while the peer acknowledges (linger_us without progress gives up; 0
    aborts), send SHUTDOWN, wake its waiters, leave the tables.  With wait (CloseWait), block
    until the engine reports CLOSED or its linger deadline (+1 s) passed; when the port ends
    with this socket, also until the SHUTDOWN copies are sent."""
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
        # a closed socket leaves every poller (the kernel drops a closed fd from its epoll sets)
        ready_close(&mc.ready_fd[READY_READ_FD], &mc.ready_on[READY_READ_FD])
        ready_close(&mc.ready_fd[READY_WRITE_FD], &mc.ready_on[READY_WRITE_FD])
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
        # The SHUTDOWN copies go out SHUTDOWN_SPACING_US apart from the send worker, which keeps
        # its reference: a port that stays up sends them after we return.  A port that closes
        # with this socket would take them along, so they go out now in one burst and we see
        # them sent (the send worker wakes us; bounded).  Waiting out the spacing instead made
        # every close of a client socket cost 30 ms.
        if (wait == CLOSE_WAIT_PORT_ENDS and not mc.mux_dead and mc.conn.state == core.STATE_CLOSED
                and mc.conn.shutdown_due > 0):
            mc.conn.shutdown_burst = True
            mc.conn.shutdown_next_time = 0
            schedule_send(m, mc, now_us())
            deadline = now_us() + 200000
            while (not mc.mux_dead and mc.conn.state == core.STATE_CLOSED
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
    pthread_mutex_lock(m.timer_lock)
    if mc.heap_pos[HEAP_TIMER] >= 0:
        mc = heap_remove_at(&m.timer_heap, mc.heap_pos[HEAP_TIMER])
        pthread_mutex_unlock(m.timer_lock)
        muxconn_decref(mc)
    else:
        pthread_mutex_unlock(m.timer_lock)
    return 0
