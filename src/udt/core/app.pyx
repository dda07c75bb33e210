# cython: language_level=3
"""The application side of a connection: write, stream and message reads, readable/writable
bytes, state and poll events.  One call per user operation; uses only inline helpers."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy
from posix.uio cimport iovec

from udt._core cimport (BOUNDARY_FIRST, BOUNDARY_LAST, BOUNDARY_MIDDLE, BOUNDARY_SOLO,
                        ERR_BAD_PARAMETER, ERR_CONNECTION_BROKEN, ERR_MESSAGE_TOO_LARGE,
                        ERR_NOT_MESSAGE_MODE, ERR_NOT_STREAM_MODE, ERR_NO_CONNECTION, ERR_NO_DATA,
                        HEADER_SIZE, IP_UDP_OVERHEAD, IP_UDP_OVERHEAD_V6,
                        ERR_NO_SEND_BUFFER, SOCK_TYPE_DGRAM, SOCK_TYPE_STREAM, STATE_BROKEN,
                        STATE_CLOSED, STATE_CLOSING, STATE_CONNECTED, Conn, RecvBuffer, RecvSlot,
                        SendSlot)
from udt.core.buffers cimport (RSLOT_FILLED, RSLOT_TAKEN, buffer_grow_limit, chunks_slot_size, rcvbuf_consume_head,
                               rcvbuf_index, rcvbuf_payload, rcvbuf_slot, rcvbuf_state,
                               chunks_unuse, sndbuf_append, sndbuf_index, sndbuf_note_window, sndbuf_payload,
                               sndbuf_slot)
from udt.core.connutil cimport _send_window
from udt.core.packet cimport (MSG_BOUNDARY_SHIFT, MSG_INORDER_BIT, msg_boundary, msg_number,
                              msg_word)
from udt.core.seq cimport msgno_inc, seq_off


# ---------------------------------------------------------------------------------------------
# Application side
# ---------------------------------------------------------------------------------------------
cdef inline int _room(Conn* c, int idx) noexcept nogil:
    """Payload of a packet in slot idx: the MSS's, or less in a chunk made before the MSS grew
    (path-MTU discovery: slots keep the size their chunk was made with, buffers.pxd)."""
    cdef int r = chunks_slot_size(&c.snd.store, idx)
    return r if r < c.payload_size else c.payload_size


cdef inline int64_t _buffer_window(Conn* c) noexcept nogil:
    """The window a full send buffer grows for (twice it, sndbuf_note_window): the send
    window, or what is unacknowledged when that is less.  A sender the send window does not
    hold back (paced, or its worker busy: loopback) keeps a fraction of UDT4's window in
    flight, 1-3 k packets at 1 GB/s where the window asks for 13 k; twice the window queued
    ~38 MB that the writer wrote long before the send worker read it, from memory instead
    of the cache (both copies of the sending side).  When the buffer is what holds the
    sender back everything in it is sent and unacknowledged, so the limit still doubles."""
    cdef int64_t w = _send_window(c)
    cdef int64_t flight = seq_off(c.snd_una, c.snd_next_seq)
    return flight if flight < w else w


cdef ssize_t conn_write(Conn* c, const uint8_t* data, size_t length, int64_t ttl_us,
                        bint inorder, int64_t now) noexcept nogil:
    cdef int64_t sent_count, npk, k
    cdef size_t done = 0, chunk
    cdef int idx, tail, bnd
    cdef int32_t msgno
    cdef int psize = c.payload_size
    cdef SendSlot* slot
    cdef bint was_empty
    if c.state == STATE_BROKEN or c.peer_shutdown or c.wr_shut:
        return -ERR_CONNECTION_BROKEN
    if c.state != STATE_CONNECTED:
        return -ERR_NO_CONNECTION
    if ttl_us < 0:
        ttl_us = c.opts.msg_ttl_us
    was_empty = c.snd.count == 0
    if c.opts.sock_type == SOCK_TYPE_DGRAM:
        if length == 0:
            return -ERR_BAD_PARAMETER
        if c.snd.count > 0 and _room(c, c.snd.head) < psize:
            # the MSS grew while older (smaller) chunks are in use: count slot by slot
            npk = 0
            done = 0
            while done < length and npk <= c.snd.capacity:
                done += <size_t>_room(c, sndbuf_index(&c.snd, c.snd.count + npk))
                npk += 1
            done = 0
        else:
            npk = (<int64_t>length + psize - 1) // psize
        if npk > c.snd.capacity:
            return -ERR_MESSAGE_TOO_LARGE
        if c.snd.count + npk > c.snd.limit:
            sndbuf_note_window(&c.snd, _buffer_window(c))
            if c.snd.count == 0:            # one message larger than the limit: make room for it
                c.snd.limit = buffer_grow_limit(c.snd.limit, npk, c.snd.max_limit)
            if c.snd.count + npk > c.snd.limit:
                return -ERR_NO_SEND_BUFFER
        msgno = c.snd.next_msgno
        for k in range(npk):
            idx = sndbuf_index(&c.snd, c.snd.count)
            slot = sndbuf_append(&c.snd)
            if slot == NULL:                # out of memory: undo the message
                _unappend(c, k)
                return -ERR_NO_SEND_BUFFER
            psize = _room(c, idx)
            chunk = length - done if length - done < <size_t>psize else <size_t>psize
            memcpy(sndbuf_payload(&c.snd, idx), data + done, chunk)
            bnd = (BOUNDARY_FIRST if k == 0 else 0) | (BOUNDARY_LAST if k == npk - 1 else 0)
            slot.length = <int32_t>chunk
            slot.msg_word = msg_word(bnd, inorder, msgno)
            slot.origin_time = now
            slot.ttl_us = ttl_us
            c.snd.count += 1
            c.snd.bytes += <int64_t>chunk
            done += chunk
        c.snd.next_msgno = msgno_inc(msgno)
    else:
        if length == 0:
            return 0
        sent_count = seq_off(c.snd_una, c.snd_next_seq)
        tail = -1
        if c.snd.count > sent_count:
            tail = sndbuf_index(&c.snd, c.snd.count - 1)
            psize = _room(c, tail)
            if sndbuf_slot(&c.snd, tail).length >= psize:
                tail = -1
        if tail >= 0:
            # append to the unsent last packet: the bytes join its message
            slot = sndbuf_slot(&c.snd, tail)
            chunk = <size_t>(psize - slot.length)
            if chunk > length:
                chunk = length
            memcpy(sndbuf_payload(&c.snd, tail) + slot.length, data, chunk)
            slot.length += <int32_t>chunk
            c.snd.bytes += <int64_t>chunk
            done = chunk
            msgno = msg_number(slot.msg_word)
        else:
            if c.snd.count >= c.snd.limit:
                sndbuf_note_window(&c.snd, _buffer_window(c))
            if c.snd.count >= c.snd.limit:
                return -ERR_NO_SEND_BUFFER
            msgno = c.snd.next_msgno
            c.snd.next_msgno = msgno_inc(msgno)
        while done < length:
            if c.snd.count >= c.snd.limit:
                # the writer has more than the limit takes: grow it if the window asks
                sndbuf_note_window(&c.snd, _buffer_window(c))
                if c.snd.count >= c.snd.limit:
                    break
            idx = sndbuf_index(&c.snd, c.snd.count)
            slot = sndbuf_append(&c.snd)
            if slot == NULL:                # out of memory: take what fitted
                if done == 0:
                    return -ERR_NO_SEND_BUFFER
                break
            if tail >= 0:
                # the message goes on past the old last packet
                sndbuf_slot(&c.snd, tail).msg_word &= ~((<uint32_t>BOUNDARY_LAST) << MSG_BOUNDARY_SHIFT)
            psize = _room(c, idx)
            chunk = length - done if length - done < <size_t>psize else <size_t>psize
            memcpy(sndbuf_payload(&c.snd, idx), data + done, chunk)
            slot.length = <int32_t>chunk
            slot.msg_word = msg_word(BOUNDARY_FIRST if (done == 0) else BOUNDARY_MIDDLE, False, msgno)
            slot.origin_time = now
            slot.ttl_us = -1
            c.snd.count += 1
            c.snd.bytes += <int64_t>chunk
            done += chunk
            tail = idx
        if tail >= 0:
            sndbuf_slot(&c.snd, tail).msg_word |= (<uint32_t>BOUNDARY_LAST) << MSG_BOUNDARY_SHIFT
    c.snd.last_active = now
    if was_empty and c.snd.count > 0:
        c.snd_busy_since = now if now > 0 else 1
    return <ssize_t>done


cdef void _unappend(Conn* c, int64_t n) noexcept nogil:
    """Give back the n slots a message took after the last one counted (out of memory)."""
    cdef int64_t _
    cdef int idx
    for _ in range(n):
        c.snd.count -= 1
        idx = sndbuf_index(&c.snd, c.snd.count)
        c.snd.bytes -= sndbuf_slot(&c.snd, idx).length
        chunks_unuse(&c.snd.store, idx)


cdef ssize_t _eof_or_wait(Conn* c) noexcept nogil:
    if c.peer_shutdown or c.peer_eof:
        return 0
    if c.state == STATE_BROKEN:
        return -(c.error if c.error != 0 else ERR_CONNECTION_BROKEN)
    if c.state == STATE_CLOSED or c.state == STATE_CLOSING:
        return 0
    if c.state != STATE_CONNECTED:
        return -ERR_NO_CONNECTION
    return -ERR_NO_DATA


cdef size_t _take_readable(Conn* c, uint8_t* out, size_t cap) noexcept nogil:
    """Consume up to cap readable bytes from the read position, copying them to out unless it
    is NULL (conn_read_consume: the caller wrote them from the ring itself)."""
    cdef size_t done = 0, n
    cdef RecvBuffer* b = &c.rcv
    cdef RecvSlot* slot
    while done < cap and seq_off(b.read_seq, b.frontier_seq) > 0:
        if rcvbuf_state(b, b.head) != RSLOT_FILLED:
            rcvbuf_consume_head(b)
            continue
        slot = rcvbuf_slot(b, b.head)
        n = <size_t>(slot.length - b.read_offset)
        if n > cap - done:
            n = cap - done
        if out != NULL:
            memcpy(out + done, rcvbuf_payload(b, b.head) + b.read_offset, n)
        b.read_offset += <int32_t>n
        b.contiguous_bytes -= <int64_t>n
        done += n
        if b.read_offset >= slot.length:
            rcvbuf_consume_head(b)     # slot may point into a spare chunk from here on
    return done


cdef ssize_t conn_read(Conn* c, uint8_t* out, size_t cap, int64_t now) noexcept nogil:
    cdef size_t done
    if c.opts.sock_type != SOCK_TYPE_STREAM:
        return -ERR_NOT_STREAM_MODE
    if not c.buffers_ready:
        return _eof_or_wait(c)
    done = _take_readable(c, out, cap)
    if done == 0 and cap > 0:
        return _eof_or_wait(c)
    return <ssize_t>done


cdef int conn_read_iov(Conn* c, size_t skip, iovec* iov, int max_iov, size_t cap, size_t* total,
                       bint* movable) noexcept nogil:
    """Stream: up to cap readable bytes, starting skip bytes after the read position, as iovecs
    over the ring's slots (contiguous payloads merged), consumed only by conn_read_consume, so
    that a writer can hand them to the kernel with the lock released.  The worker never touches
    a filled slot before the frontier, except to move a chunk of smaller slots when a larger
    packet lands in it (chunks_upgrade, after path-MTU discovery grew the MSS): *movable says
    whether the slots described are in such a chunk (the caller copies them before unlocking);
    one call never mixes both kinds."""
    cdef RecvBuffer* b = &c.rcv
    cdef int64_t off = 0, limit
    cdef int n = 0, idx
    cdef int ceiling = 0
    cdef size_t done = 0, length, at
    cdef uint8_t* p
    cdef RecvSlot* slot
    cdef bint moves
    total[0] = 0
    movable[0] = False
    if c.opts.sock_type != SOCK_TYPE_STREAM:
        return -ERR_NOT_STREAM_MODE
    if not c.buffers_ready:
        return <int>_eof_or_wait(c)
    if c.pmtud_max > 0:
        ceiling = c.pmtud_max - (IP_UDP_OVERHEAD_V6 if c.is_ipv6 else IP_UDP_OVERHEAD) - HEADER_SIZE
    while seq_off(b.read_seq, b.frontier_seq) > 0 and rcvbuf_state(b, b.head) != RSLOT_FILLED:
        rcvbuf_consume_head(b)          # what conn_read skips too
    limit = seq_off(b.read_seq, b.frontier_seq)
    at = <size_t>b.read_offset + skip   # bytes into the slot at off
    while off < limit:
        idx = rcvbuf_index(b, off)
        if rcvbuf_state(b, idx) != RSLOT_FILLED or at < <size_t>rcvbuf_slot(b, idx).length:
            break
        at -= <size_t>rcvbuf_slot(b, idx).length
        off += 1
    while done < cap and off < limit:
        idx = rcvbuf_index(b, off)
        if rcvbuf_state(b, idx) != RSLOT_FILLED:
            break
        moves = chunks_slot_size(&b.store, idx) < ceiling
        if n == 0:
            movable[0] = moves
        elif moves != movable[0]:
            break
        slot = rcvbuf_slot(b, idx)
        length = <size_t>slot.length - at
        if length > cap - done:
            length = cap - done
        p = rcvbuf_payload(b, idx) + at
        at = 0
        if n > 0 and <uint8_t*>iov[n - 1].iov_base + iov[n - 1].iov_len == p:
            iov[n - 1].iov_len += length
        elif n < max_iov:
            iov[n].iov_base = p
            iov[n].iov_len = length
            n += 1
        else:
            break
        done += length
        off += 1
    total[0] = done
    if n == 0:
        return <int>_eof_or_wait(c)
    return n


cdef size_t conn_read_consume(Conn* c, size_t count) noexcept nogil:
    """Stream: forget count readable bytes (conn_read without the copy); returns how many."""
    if c.opts.sock_type != SOCK_TYPE_STREAM or not c.buffers_ready:
        return 0
    return _take_readable(c, NULL, count)


cdef int64_t _message_at(Conn* c, int64_t off, int64_t limit, int64_t* npk) noexcept nogil:
    """Size of the complete message starting at offset off (within limit), or -1."""
    cdef RecvBuffer* b = &c.rcv
    cdef int64_t k = off, total = 0
    cdef int idx, bnd
    cdef int32_t msgno
    cdef RecvSlot* slot
    idx = rcvbuf_index(b, k)
    if rcvbuf_state(b, idx) != RSLOT_FILLED:
        return -1
    slot = rcvbuf_slot(b, idx)
    bnd = msg_boundary(slot.msg_word)
    if bnd != BOUNDARY_FIRST and bnd != BOUNDARY_SOLO:
        return -1
    msgno = msg_number(slot.msg_word)
    while k < limit:
        idx = rcvbuf_index(b, k)
        if rcvbuf_state(b, idx) != RSLOT_FILLED:
            return -1
        slot = rcvbuf_slot(b, idx)
        if msg_number(slot.msg_word) != msgno:
            return -1
        total += slot.length
        bnd = msg_boundary(slot.msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            npk[0] = k - off + 1
            return total
        k += 1
    return -1


cdef void _skip_dead_head(Conn* c) noexcept nogil:
    """Message mode: consume dropped/taken slots and orphan fragments at the head."""
    cdef RecvBuffer* b = &c.rcv
    cdef int bnd
    while seq_off(b.read_seq, b.frontier_seq) > 0:
        if rcvbuf_state(b, b.head) == RSLOT_FILLED:
            bnd = msg_boundary(rcvbuf_slot(b, b.head).msg_word)
            if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
                return
            # a fragment whose first packet was dropped: discard up to its end
            rcvbuf_consume_head(b)
            continue
        rcvbuf_consume_head(b)


cdef int64_t _find_ooo_message(Conn* c, int64_t* start, int64_t* npk) noexcept nogil:
    """Message mode: a complete o=0 message beyond the in-order frontier, or -1."""
    cdef RecvBuffer* b = &c.rcv
    cdef int64_t off = seq_off(b.read_seq, b.frontier_seq)
    cdef int64_t end = seq_off(b.read_seq, c.rcv_largest) + 1
    cdef int64_t size
    cdef int idx
    if end > b.capacity:
        end = b.capacity
    while off < end:
        idx = rcvbuf_index(b, off)
        if (rcvbuf_state(b, idx) == RSLOT_FILLED
                and not (rcvbuf_slot(b, idx).msg_word & MSG_INORDER_BIT)):
            size = _message_at(c, off, end, npk)
            if size >= 0:
                start[0] = off
                return size
        off += 1
    return -1


cdef ssize_t conn_read_message(Conn* c, uint8_t* out, size_t cap, size_t* msg_length,
                               bint* truncated, int64_t now) noexcept nogil:
    cdef RecvBuffer* b = &c.rcv
    cdef int64_t size, npk = 0, start = 0, k, limit
    cdef size_t done = 0, n
    cdef int idx
    cdef bint from_head = True
    msg_length[0] = 0
    truncated[0] = False
    if c.opts.sock_type != SOCK_TYPE_DGRAM:
        return -ERR_NOT_MESSAGE_MODE
    if not c.buffers_ready:
        return _eof_or_wait(c)
    _skip_dead_head(c)
    limit = seq_off(b.read_seq, b.frontier_seq)
    size = _message_at(c, 0, limit, &npk) if limit > 0 else -1
    if size < 0:
        if b.ooo_messages <= 0:
            return _eof_or_wait(c)
        size = _find_ooo_message(c, &start, &npk)
        if size < 0:
            b.ooo_messages = 0
            return _eof_or_wait(c)
        from_head = False
        b.ooo_messages -= 1
    for k in range(start, start + npk):
        # reading from the head consumes as it goes, so the head is always the next packet
        idx = b.head if from_head else rcvbuf_index(b, k)
        n = <size_t>rcvbuf_slot(b, idx).length
        if n > cap - done:
            n = cap - done
        if n > 0:
            memcpy(out + done, rcvbuf_payload(b, idx), n)
            done += n
        if from_head:
            rcvbuf_consume_head(b)
        else:
            rcvbuf_slot(b, idx).state = RSLOT_TAKEN
    msg_length[0] = <size_t>size
    truncated[0] = <size_t>size > cap
    return <ssize_t>done


cdef int64_t conn_readable_bytes(Conn* c) noexcept nogil:
    cdef int64_t npk = 0, start = 0, size, limit
    if not c.buffers_ready:
        return 0
    if c.opts.sock_type == SOCK_TYPE_STREAM:
        return c.rcv.contiguous_bytes
    _skip_dead_head(c)
    limit = seq_off(c.rcv.read_seq, c.rcv.frontier_seq)
    size = _message_at(c, 0, limit, &npk) if limit > 0 else -1
    if size >= 0:
        return size if size > 0 else 1
    if c.rcv.ooo_messages > 0:
        size = _find_ooo_message(c, &start, &npk)
        if size >= 0:
            return size if size > 0 else 1
        c.rcv.ooo_messages = 0
    return 0


cdef int64_t conn_writable_bytes(Conn* c) noexcept nogil:
    if c.state != STATE_CONNECTED or not c.buffers_ready:
        return 0
    if c.snd.count >= c.snd.limit:
        return 0
    return <int64_t>(c.snd.limit - c.snd.count) * c.payload_size


cdef int64_t conn_pending_send_bytes(Conn* c) noexcept nogil:
    return c.snd.bytes if c.buffers_ready else 0


cdef int conn_state(Conn* c) noexcept nogil:
    return c.state


cdef int conn_poll_events(Conn* c) noexcept nogil:
    cdef int ev = 0
    if c.state == STATE_CONNECTED:
        if conn_readable_bytes(c) > 0 or c.peer_eof:
            ev |= 1
        if c.snd.count < c.snd.limit:
            ev |= 4
    elif c.state == STATE_BROKEN:
        ev |= 1
        if not c.peer_shutdown:
            ev |= 8
    elif c.state == STATE_CLOSED and c.error != 0:
        ev |= 8
    elif c.state == STATE_CLOSING:
        if conn_readable_bytes(c) > 0:
            ev |= 1
    return ev
