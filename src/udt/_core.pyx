# cython: language_level=3
"""The UDT protocol engine's packet paths, sans-IO: what one connection does per datagram and
per timer.  Receive (control packets, data, the arrival history), send (ACK/NAK/ACK2/handshake
emission, retransmissions, new data under flow window, congestion window and pacing) and the
timers stay in this one unit so that per-packet work makes no call across extension modules.

The types and this unit's C API are in udt/_core.pxd; the rest of the engine is split by job
under udt/core/ (docs/engine.md has the map): lifecycle.pyx (init, connect, accept, handshakes,
close), app.pyx (write/read), stats.pyx (perfmon), listener.pyx (the stateless listener,
packet_peek), and the header-only connutil.pxd / rate.pxd / packet.pxd / buffers.pxd / ... .
The native congestion control is udt/core/cc.pyx, the Python trampoline udt/core/pycc.pyx.
"""
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memmove

from udt.core.buffers cimport (FRONTIER_PASSED_MESSAGE_END, RSLOT_DROPPED, RSLOT_EMPTY,
                               RSLOT_FILLED, buffer_scale_limits, chunks_set_slot_size, chunks_slot_size,
                               chunks_upgrade,
                               rcvbuf_advance_frontier, rcvbuf_autotune,
                               rcvbuf_idle_release, rcvbuf_index, rcvbuf_message_complete,
                               rcvbuf_note_arrival, rcvbuf_payload, rcvbuf_slot, rcvbuf_state,
                               rcvbuf_take, sndbuf_idle_release, sndbuf_index, sndbuf_payload,
                               sndbuf_release, sndbuf_slot)
from udt.core.losslist cimport losslist_shrink
from udt.core.losslist cimport (losslist_insert, losslist_lower, losslist_pop_first, losslist_remove,
                                losslist_remove_before, losslist_remove_range)
from udt.core.packet cimport (CONTROL_FLAG, LOSS_RANGE_FLAG, MSG_NUMBER_26,
                              Handshake, control_word0, get_u32, handshake_encode, msg_boundary,
                              msg_number, put_control, put_header, put_u32)
from udt.core.seq cimport (SEQ_MAX, SEQ_THRESHOLD, ackno_inc, seq_add, seq_cmp, seq_dec, seq_inc,
                           seq_off)
from udt.core.connutil cimport (HANDSHAKE_RETRY_US, MAX_NAK_WORDS, MAX_PACING_LAG_US, MIN_AVAILABLE_BUFFER,
                                MIN_EXP_US,
                                SHUTDOWN_GRACE_US, SHUTDOWN_SPACING_US, SYN_US, _can_send_new,
                                _cc_after, _cc_sync_inputs, _close_may_finish, _connect_failed,
                                _exp_deadline, _fill_handshake, _finish_close, _invalid, _is_live,
                                _min_time, _nak_interval, _packet_period, _peer_alive,
                                _rcv_available, _rtt_update, _timestamp)
from udt.core.lifecycle cimport conn_on_handshake, conn_rendezvous_complete
from udt.core.fragments cimport frag_count, frag_size, frag_stride, frag_take, frags_entry, frags_free
from udt.core.hsext cimport (CAP_HALF_CLOSE, CAP_PMTUD, CAPS_LOCAL, EXT_EOF, EXT_EOF_ACK,
                             EXT_PMTU_ACK, EXT_PMTU_FRAGMENT, EXT_PMTU_PROBE, HSEXT_MAGIC,
                             hsext_add_max_mss,
                             hsext_encode, hsext_encode_crypto)
from udt.core.rate cimport _link_capacity, _receive_rate, _record_arrival

# udt._core.INVALID_REASONS, as it always was: the names are defined by udt/core/stats.pyx
from udt.core.stats import INVALID_REASONS  # no-cython-lint


# ---------------------------------------------------------------------------------------------
# Input: control packets
# ---------------------------------------------------------------------------------------------
cdef uint32_t _on_ack(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef size_t cif = length - HEADER_SIZE
    cdef int32_t ack_no = <int32_t>(get_u32(buf + 4) & 0x7FFFFFFF)
    cdef int32_t ack
    cdef int64_t rtt, rttvar, rate, bw, win
    cdef uint32_t ev = 0
    if cif < 4 or (cif & 3) != 0 or (cif != 4 and cif < 16):
        _invalid(c, INVALID_LENGTH)
        return 0
    ack = <int32_t>(get_u32(buf + HEADER_SIZE) & SEQ_MAX)
    if seq_cmp(ack, c.snd_next_seq) > 0 or seq_off(c.snd_una, ack) < -<int64_t>c.snd.capacity:
        _invalid(c, INVALID_ACK_RANGE)
        return 0
    _peer_alive(c, now)
    if cif == 4:
        # light ACK: flow window accounting only (UDT4); a newer one means data got through
        if c.state == STATE_CLOSING and seq_cmp(ack, c.snd_last_ack) > 0:
            c.linger_deadline = now + c.opts.linger_us
        if seq_cmp(ack, c.snd_last_ack) >= 0:
            c.flow_window -= seq_off(c.snd_last_ack, ack)
            c.snd_last_ack = ack
        return EV_WANT_TRANSMIT if _can_send_new(c) else 0
    rtt = <int32_t>get_u32(buf + HEADER_SIZE + 4)
    rttvar = <int32_t>get_u32(buf + HEADER_SIZE + 8)
    win = <int32_t>get_u32(buf + HEADER_SIZE + 12)
    if rtt < 0 or rttvar < 0 or win < 0:
        _invalid(c, INVALID_LENGTH)
        return 0
    c.stats.pkt_recv_ack_total += 1
    # The linger bounds a stall, not the drain: data acknowledged, or room the peer's reader
    # freed, is progress.  A repeated ACK is not (the peer re-sends it while our ACK2s are lost).
    if c.state == STATE_CLOSING and (seq_cmp(ack, c.snd_una) > 0 or win > c.peer_avail):
        c.linger_deadline = now + c.opts.linger_us
    if seq_cmp(ack, c.snd_last_ack) >= 0:
        c.flow_window = win
        c.snd_last_ack = ack
        c.peer_avail = win
        if c.zero_window_paced and win > MIN_AVAILABLE_BUFFER:
            c.zero_window_paced = False     # the reader is back: no more zero-window spacing
            if c.next_send_exact > <double>now:
                c.next_send_exact = <double>now
        if win > c.peer_avail_max:
            c.peer_avail_max = win
    if seq_cmp(ack, c.snd_una) > 0:
        sndbuf_release(&c.snd, seq_off(c.snd_una, ack))
        c.snd_una = ack
        c.pmtud_ack_progress = now
        losslist_remove_before(&c.snd_loss, ack)
        if c.exp_probing and seq_cmp(ack, c.exp_probe_seq) > 0:
            c.exp_probing = False
        ev |= EV_WRITABLE
        if c.snd.count == 0:
            c.snd_empty_time = now
            if c.snd_busy_since > 0:
                c.stats.us_snd_duration_total += now - c.snd_busy_since
                c.snd_busy_since = 0
    # Answer every full ACK with ACK2, except while a close waits for the peer's reader: without
    # the ACK2 the peer repeats its ACK (after RTT + 4 RTTVar) with a fresh free-buffer count.
    if not (c.state == STATE_CLOSING and c.snd.count == 0 and not _close_may_finish(c, now)):
        if c.pending_ack2_count < PENDING_ACK2:
            c.pending_ack2[c.pending_ack2_count] = ack_no
            c.pending_ack2_count += 1
        ev |= EV_WANT_TRANSMIT
    # The receiver's RTT/RTTVar are already smoothed from ACK2 round trips: adopt them (UDT4
    # smooths them a second time, which lags a changing path by a few dozen ACKs).
    c.rtt_us = rtt
    c.rttvar_us = rttvar
    if cif >= 24:
        rate = <int32_t>get_u32(buf + HEADER_SIZE + 16)
        bw = <int32_t>get_u32(buf + HEADER_SIZE + 20)
        if rate > 0:
            c.delivery_rate = (c.delivery_rate * 7 + rate) >> 3
            c.rate_sampled = True
        if bw > 0:
            c.bandwidth = (c.bandwidth * 7 + bw) >> 3
    _cc_sync_inputs(c)
    if c.cc.ops.on_ack != NULL:
        c.cc.ops.on_ack(&c.cc, ack, now)
        _cc_after(c)
    if c.state == STATE_CLOSING and _close_may_finish(c, now):
        ev |= _finish_close(c)
    return ev


cdef uint32_t _on_ack2(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef int32_t ack_no = <int32_t>(get_u32(buf + 4) & 0x7FFFFFFF)
    cdef int i, idx
    cdef int64_t rtt
    cdef AckRecord* rec
    for i in range(c.ack_history_count):
        idx = (c.ack_history_pos - 1 - i + ACK_HISTORY_SIZE) % ACK_HISTORY_SIZE
        rec = &c.ack_history[idx]
        if rec.ack_no == ack_no:
            _peer_alive(c, now)
            if rec.sent_time < 0:
                # already answered: a duplicated datagram must not skew the RTT again
                c.stats.duplicate_packets += 1
                return 0
            rtt = now - rec.sent_time
            if rtt < 0:
                rtt = 0
            if not c.rtt_sampled:
                # first measurement: RTT = sample, RTTVar = sample / 2 (as TCP does)
                c.rtt_sampled = True
                c.rtt_us = rtt
                c.rttvar_us = rtt // 2
            else:
                _rtt_update(c, rtt)
            if seq_cmp(rec.ack_seq, c.rcv_last_ack_ack) > 0:
                c.rcv_last_ack_ack = rec.ack_seq
            rec.sent_time = -1     # answered
            return 0
    _invalid(c, INVALID_ACK2)
    return 0


cdef inline int _loss_entry(const int32_t* words, int i, int32_t* first, int32_t* last) noexcept nogil:
    """The loss entry of a validated NAK at words[i], a single sequence number or a range
    (first word flagged): sets first/last, returns the index of the next entry."""
    cdef uint32_t w = <uint32_t>words[i]
    if w & LOSS_RANGE_FLAG:
        first[0] = <int32_t>(w & SEQ_MAX)
        last[0] = words[i + 1]
        return i + 2
    first[0] = <int32_t>w
    last[0] = first[0]
    return i + 1


cdef uint32_t _on_nak(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef size_t cif = length - HEADER_SIZE
    cdef int n = <int>(cif // 4)
    cdef int32_t words[MAX_NAK_WORDS]
    cdef int i
    cdef uint32_t w
    cdef int32_t first, last
    cdef int64_t added
    if cif < 4 or (cif & 3) != 0 or n > MAX_NAK_WORDS:
        _invalid(c, INVALID_LENGTH)
        return 0
    for i in range(n):
        words[i] = <int32_t>get_u32(buf + HEADER_SIZE + 4 * i)
    # validate the whole list before acting on any of it
    i = 0
    while i < n:
        w = <uint32_t>words[i]
        if w & LOSS_RANGE_FLAG:
            if i + 1 >= n or (<uint32_t>words[i + 1] & LOSS_RANGE_FLAG):
                _invalid(c, INVALID_NAK_RANGE)
                return 0
            first = <int32_t>(w & SEQ_MAX)
            last = words[i + 1]
            i += 2
        else:
            first = <int32_t>w
            last = first
            i += 1
        if seq_cmp(first, last) > 0 or seq_cmp(last, c.snd_curr_seq) > 0:
            _invalid(c, INVALID_NAK_RANGE)
            return 0
    _peer_alive(c, now)
    c.stats.pkt_recv_nak_total += 1
    i = 0
    while i < n:
        i = _loss_entry(words, i, &first, &last)
        if seq_cmp(last, c.snd_una) < 0:
            continue
        if seq_cmp(first, c.snd_una) < 0:
            first = c.snd_una
        added = losslist_insert(&c.snd_loss, first, last)
        if added > 0:
            c.stats.pkt_snd_loss_total += added
    if c.exp_probing:
        n = _losses_after_probe(c, words, n)
    if c.pmtud_max > 0 and now - c.pmtud_ack_progress >= _pmtud_stall_time(c):
        _pmtud_suspect(c)               # small packets cross, the ACK does not move (§13)
        c.pmtud_ack_progress = now
    _cc_sync_inputs(c)
    if n > 0 and c.cc.ops.on_loss != NULL:
        c.cc.ops.on_loss(&c.cc, words, n, now)
        _cc_after(c)
    return EV_WANT_TRANSMIT


cdef int _losses_after_probe(Conn* c, int32_t* words, int n) noexcept nogil:
    """Keep in a validated NAK only what was sent after the last EXP probe (returns the new word
    count).  What the probe's NAKs name from before it is what UDT4's EXP would have re-queued
    without telling the CC more than on_timeout: it is the same signal, not a new loss."""
    cdef int i = 0, out = 0
    cdef int32_t first, last
    while i < n:
        i = _loss_entry(words, i, &first, &last)
        if seq_cmp(last, c.exp_probe_seq) <= 0:
            continue
        if seq_cmp(first, c.exp_probe_seq) <= 0:
            first = seq_inc(c.exp_probe_seq)
        if first == last:
            words[out] = first
            out += 1
        else:
            words[out] = <int32_t>(<uint32_t>first | LOSS_RANGE_FLAG)
            words[out + 1] = last
            out += 2
    return out


cdef uint32_t _on_drop_request(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef int32_t msgno = <int32_t>(get_u32(buf + 4) & MSG_NUMBER_26)
    cdef int32_t first, last, s
    cdef int64_t off, span, k
    cdef int idx
    cdef RecvSlot* slot
    if length < HEADER_SIZE + 8:
        _invalid(c, INVALID_LENGTH)
        return 0
    if c.opts.sock_type != SOCK_TYPE_DGRAM:
        # messages only expire in message mode; dropping stream bytes would corrupt the stream
        _invalid(c, INVALID_STATE)
        return 0
    first = <int32_t>(get_u32(buf + HEADER_SIZE) & SEQ_MAX)
    last = <int32_t>(get_u32(buf + HEADER_SIZE + 4) & SEQ_MAX)
    span = seq_off(first, last)
    if span < 0 or span >= c.rcv.capacity or seq_off(c.rcv.read_seq, first) >= c.rcv.capacity \
            or seq_off(c.rcv.read_seq, last) < -<int64_t>c.rcv.capacity:
        _invalid(c, INVALID_DROP_REQUEST)
        return 0
    _peer_alive(c, now)
    for k in range(span + 1):
        s = seq_add(first, k)
        off = seq_off(c.rcv.read_seq, s)
        if off < 0 or off >= c.rcv.capacity:
            continue
        idx = rcvbuf_index(&c.rcv, off)
        if rcvbuf_state(&c.rcv, idx) == RSLOT_EMPTY:
            slot = rcvbuf_take(&c.rcv, idx)     # bounded: the range lies within the ring
            if slot == NULL:
                continue
            slot.state = RSLOT_DROPPED
            c.stats.pkt_dropped_total += 1
            continue
        slot = rcvbuf_slot(&c.rcv, idx)
        if slot.state == RSLOT_FILLED and msg_number(slot.msg_word) == msgno:
            if seq_cmp(s, c.rcv.frontier_seq) < 0:
                c.rcv.contiguous_bytes -= slot.length - (c.rcv.read_offset if off == 0 else 0)
            slot.state = RSLOT_DROPPED
            c.stats.pkt_dropped_total += 1
    # earlier packets of the same message already buffered (not yet read) are useless too
    off = seq_off(c.rcv.read_seq, first) - 1
    while off >= 0 and off < c.rcv.capacity:
        idx = rcvbuf_index(&c.rcv, off)
        if rcvbuf_state(&c.rcv, idx) != RSLOT_FILLED:
            break
        slot = rcvbuf_slot(&c.rcv, idx)
        if msg_number(slot.msg_word) != msgno:
            break
        if seq_cmp(seq_add(c.rcv.read_seq, off), c.rcv.frontier_seq) < 0:
            c.rcv.contiguous_bytes -= slot.length - (c.rcv.read_offset if off == 0 else 0)
        slot.state = RSLOT_DROPPED
        c.stats.pkt_dropped_total += 1
        off -= 1
    losslist_remove_range(&c.rcv_loss, first, last)
    if seq_cmp(last, c.rcv_largest) > 0:
        c.rcv_largest = last
    if rcvbuf_advance_frontier(&c.rcv):
        return EV_READABLE
    return 0


cdef uint32_t _on_control(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef int ctrl_type = <int>((get_u32(buf) >> 16) & 0x7FFF)
    if ctrl_type == PKT_HANDSHAKE:
        return conn_on_handshake(c, buf, length, now)
    if c.state == STATE_CONNECTING:
        # rendezvous: a keep-alive from a peer that already connected completes our side
        if c.rendezvous and c.hs_peer_seen and ctrl_type == PKT_KEEPALIVE:
            return conn_rendezvous_complete(c, now, False)
        _invalid(c, INVALID_STATE)
        return 0
    if not _is_live(c):
        _invalid(c, INVALID_STATE)
        return 0
    if ctrl_type == PKT_ACK:
        return _on_ack(c, buf, length, now)
    if ctrl_type == PKT_NAK:
        return _on_nak(c, buf, length, now)
    if ctrl_type == PKT_ACK2:
        return _on_ack2(c, buf, length, now)
    if ctrl_type == PKT_KEEPALIVE:
        _peer_alive(c, now)
        _release_idle_buffers(c, now)   # the peer's keep-alive may be what pushes our EXP back
        return 0
    if ctrl_type == PKT_SHUTDOWN:
        _peer_alive(c, now)
        c.state = STATE_BROKEN
        c.closing = False
        if c.buffers_ready and c.rcv_loss.count > 0:
            # data the peer sent never arrived and now never will: a reset, not an end of file
            c.peer_reset = True
            c.error = ERR_CONNECTION_BROKEN
            return EV_PEER_ERROR | EV_READABLE | EV_WRITABLE
        c.peer_shutdown = True
        return EV_PEER_SHUTDOWN | EV_READABLE | EV_WRITABLE
    if ctrl_type == PKT_CONGESTION_WARNING:
        _peer_alive(c, now)
        c.cc.period_us *= 1.125
        c.cc.last_dec_seq = c.snd_curr_seq
        _cc_after(c)
        return 0
    if ctrl_type == PKT_DROP_REQUEST:
        return _on_drop_request(c, buf, length, now)
    if ctrl_type == PKT_ERROR_SIGNAL:
        _peer_alive(c, now)
        if get_u32(buf + 4) == ERR_CONNECTION_BROKEN:
            c.peer_reset = True         # udt's close that dropped data (UDT4 only sends 4000)
            c.error = ERR_CONNECTION_BROKEN
        else:
            c.error = ERR_PEER_ERROR
        c.state = STATE_BROKEN
        c.closing = False
        return EV_PEER_ERROR | EV_READABLE | EV_WRITABLE
    if ctrl_type == PKT_USER_DEFINED:
        _peer_alive(c, now)
        if c.caps & CAP_PMTUD:
            if (get_u32(buf) & 0xFFFF) == EXT_PMTU_PROBE:
                return _pmtud_on_probe(c, buf, length)
            if (get_u32(buf) & 0xFFFF) == EXT_PMTU_ACK:
                return _pmtud_on_ack(c, buf, length, now)
            if (get_u32(buf) & 0xFFFF) == EXT_PMTU_FRAGMENT and c.pmtud_fragments:
                return _pmtud_on_fragment(c, buf, length, now)
        if c.caps & CAP_HALF_CLOSE and length >= HEADER_SIZE + 4:
            if (get_u32(buf) & 0xFFFF) == EXT_EOF:
                return _on_peer_eof(c, <int32_t>(get_u32(buf + 4) & SEQ_MAX))
            if (get_u32(buf) & 0xFFFF) == EXT_EOF_ACK:
                if c.wr_shut and <int32_t>(get_u32(buf + 4) & SEQ_MAX) == c.snd_next_seq:
                    c.eof_acked = True
                    return EV_WRITABLE
                _invalid(c, INVALID_STATE)
                return 0
        if c.cc.ops.on_custom != NULL:
            c.cc.ops.on_custom(&c.cc, buf, <int>length, now)
            _cc_after(c)
        return 0
    _invalid(c, INVALID_CONTROL_TYPE)
    return 0


cdef uint32_t _on_peer_eof(Conn* c, int32_t seq) noexcept nogil:
    """The peer shut its sending side after everything before seq was acknowledged.  A copy
    that overtook data we still miss is left unanswered: the peer sends it again."""
    if not c.buffers_ready or c.rcv_loss.count > 0 or seq_cmp(seq, c.rcv.frontier_seq) > 0:
        return 0
    c.eof_ack_due = True
    c.eof_ack_seq = seq
    if c.peer_eof:
        return EV_WANT_TRANSMIT
    c.peer_eof = True
    return EV_READABLE | EV_WANT_TRANSMIT


# ---------------------------------------------------------------------------------------------
# Input: data
# ---------------------------------------------------------------------------------------------
cdef uint32_t _on_data(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef int32_t seq = <int32_t>(get_u32(buf) & SEQ_MAX)
    cdef uint32_t word = get_u32(buf + 4)
    cdef size_t payload = length - HEADER_SIZE
    cdef int64_t off, gap
    cdef int idx
    cdef uint32_t ev = 0
    cdef int bnd, moved
    cdef RecvSlot* slot
    if payload == 0 or payload > <size_t>c.rcv.slot_size:
        _invalid(c, INVALID_DATA_LENGTH)
        return 0
    if c.state == STATE_CONNECTING:
        if c.rendezvous and c.hs_peer_seen:
            ev |= conn_rendezvous_complete(c, now, False)
        else:
            _invalid(c, INVALID_STATE)
            return 0
    if not _is_live(c):
        _invalid(c, INVALID_STATE)
        return ev
    off = seq_off(c.rcv.read_seq, seq)
    if off >= c.rcv.capacity:
        if off < SEQ_THRESHOLD // 2 and seq_off(c.rcv_largest, seq) < <int64_t>c.rcv.capacity * 2:
            _invalid(c, INVALID_BUFFER_FULL)
        else:
            _invalid(c, INVALID_DATA_SEQ)
        return ev
    if off < -(<int64_t>c.rcv.capacity) * 4:
        _invalid(c, INVALID_DATA_SEQ)
        return ev
    if off >= c.rcv.max_limit and seq_cmp(seq, c.rcv_largest) > 0:
        # UDT_RCVBUF is bytes: once the MSS grew, the ring's geometry (packets) holds far more
        # than that; new data past the ceiling is dropped (holes below it still fill)
        _invalid(c, INVALID_BUFFER_FULL)
        return ev
    _peer_alive(c, now)
    _record_arrival(c, seq, now)
    c.stats.pkt_recv_total += 1
    c.stats.bytes_recv_total += <int64_t>payload
    if c.cc.want_pkt_received and c.cc.ops.on_pkt_received != NULL:
        c.cc.ops.on_pkt_received(&c.cc, seq, <int>payload, now)
        _cc_after(c)
    # ACK cadence: light ACK every 64 packets, CC ACK interval, short end-of-message packet
    c.pkts_since_ack += 1
    if c.pkts_since_ack >= LIGHT_ACK_PACKETS * (c.light_ack_count if c.light_ack_count > 0 else 1):
        c.light_ack_due = True
        c.light_ack_count += 1
        ev |= EV_WANT_TRANSMIT
    if c.cc.ack_interval > 0 and c.pkts_since_ack >= c.cc.ack_interval:
        c.full_ack_due = True
        ev |= EV_WANT_TRANSMIT
    bnd = msg_boundary(word)
    if <int>payload < c.recv_payload_size and (bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO):
        c.full_ack_due = True
        ev |= EV_WANT_TRANSMIT
    if off < 0:
        c.stats.duplicate_packets += 1
        return ev
    idx = rcvbuf_index(&c.rcv, off)
    if rcvbuf_state(&c.rcv, idx) != RSLOT_EMPTY:
        c.stats.duplicate_packets += 1
        return ev
    if (<int>payload > chunks_slot_size(&c.rcv.store, idx)      # a chunk from before the MSS grew
            and chunks_upgrade(&c.rcv.store, idx) < 0):
        _invalid(c, INVALID_BUFFER_FULL)
        return ev
    slot = rcvbuf_take(&c.rcv, idx)
    if slot == NULL:                            # out of memory: as if the buffer were full
        _invalid(c, INVALID_BUFFER_FULL)
        return ev
    rcvbuf_note_arrival(&c.rcv, now)
    if seq_cmp(seq, c.rcv_largest) > 0:
        gap = seq_off(c.rcv_largest, seq) - 1
        if gap > 0:
            # loss detected: remember it and report it at once
            if c.rcv_loss.count == 0:
                # the periodic re-report starts one NAK period after the first loss
                c.next_nak_time = now + _nak_interval(c)
                c.nak_horizon = c.rcv_largest
            losslist_insert(&c.rcv_loss, seq_inc(c.rcv_largest), seq_dec(seq))
            c.stats.pkt_rcv_loss_total += gap
            if c.pending_nak_count < PENDING_NAK_RANGES:
                c.pending_nak_first[c.pending_nak_count] = seq_inc(c.rcv_largest)
                c.pending_nak_last[c.pending_nak_count] = seq_dec(seq)
                c.pending_nak_count += 1
            else:
                c.nak_report_due = True
                c.nak_horizon = seq
            ev |= EV_WANT_TRANSMIT
        c.rcv_largest = seq
    else:
        losslist_remove(&c.rcv_loss, seq)
    memcpy(rcvbuf_payload(&c.rcv, idx), buf + HEADER_SIZE, payload)
    slot.length = <int32_t>payload
    slot.msg_word = word
    slot.state = RSLOT_FILLED
    moved = rcvbuf_advance_frontier(&c.rcv)
    if moved:
        if c.opts.sock_type == SOCK_TYPE_STREAM or (moved & FRONTIER_PASSED_MESSAGE_END):
            ev |= EV_READABLE
    elif c.opts.sock_type == SOCK_TYPE_DGRAM and seq_cmp(seq, c.rcv.frontier_seq) > 0:
        if rcvbuf_message_complete(&c.rcv, off):
            c.rcv.ooo_messages += 1
            ev |= EV_READABLE
    return ev


cdef uint32_t conn_on_datagram(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    if length < HEADER_SIZE:
        _invalid(c, INVALID_TOO_SHORT)
        return 0
    if (c.state == STATE_BROKEN and (c.peer_reset or c.peer_shutdown)) or (
            c.state == STATE_CLOSED and c.peer_socket_id != 0 and c.buffers_ready):
        # the connection has ended: what still comes from the peer (the rest of its SHUTDOWN
        # copies, packets the network delayed or duplicated) is late, not garbage
        c.stats.late_packets += 1
        return 0
    if c.state != STATE_CONNECTING and not _is_live(c) and c.state != STATE_BROKEN:
        _invalid(c, INVALID_STATE)
        return 0
    if c.pmtud_wait_peer and (get_u32(buf) >> 16) != 0x8000:   # anything but a handshake
        c.pmtud_wait_peer = False
        c.pmtud_probe_due = c.state == STATE_CONNECTED
    if get_u32(buf) & CONTROL_FLAG:
        if c.state == STATE_BROKEN:
            _invalid(c, INVALID_STATE)
            return 0
        return _on_control(c, buf, length, now)
    if c.state == STATE_BROKEN:
        _invalid(c, INVALID_STATE)
        return 0
    return _on_data(c, buf, length, now)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
cdef bint _full_ack_wanted(Conn* c, int64_t now) noexcept nogil:
    """Would a full ACK go out now (protocol.md §5: never repeat one before its ACK2 unless RTT+4RTTVar)?"""
    cdef int32_t ack = c.rcv.frontier_seq
    if ack == c.rcv_last_ack_ack:
        return False
    if seq_cmp(ack, c.rcv_last_ack) > 0:
        return True
    if ack == c.rcv_last_ack:
        return now - c.rcv_last_ack_time >= c.rtt_us + 4 * c.rttvar_us
    return False


cdef bint _window_filled(Conn* c, int64_t now) noexcept nogil:
    """Did the data reach (within 1/4 of the limit) the right edge of the window our ACK of a
    round trip ago offered?  Then the sender sends as far as it is allowed: window-limited.
    (What it sends now it sent after that ACK reached it, half a round trip ago.)"""
    cdef int i, idx
    cdef AckRecord* rec
    for i in range(c.ack_history_count):
        idx = (c.ack_history_pos - 1 - i + ACK_HISTORY_SIZE) % ACK_HISTORY_SIZE
        rec = &c.ack_history[idx]
        if now - rec.sent_time >= c.rtt_us:
            return seq_off(rec.edge, seq_inc(c.rcv_largest)) > -(c.rcv.limit // 4)
    return False


cdef ssize_t _emit_full_ack(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef int32_t ack = c.rcv.frontier_seq
    cdef int words = 4
    cdef int64_t v
    if not _full_ack_wanted(c, now):
        return 0
    if seq_cmp(ack, c.rcv_last_ack) > 0:
        c.rcv_last_ack = ack
    if seq_cmp(c.rcv_last_ack, c.rcv_last_ack_ack) <= 0:
        return 0
    if cap < HEADER_SIZE + 24:
        return -ERR_NO_SEND_BUFFER
    c.ack_no = ackno_inc(c.ack_no)
    put_header(out, control_word0(PKT_ACK, 0), <uint32_t>c.ack_no, 0, c.peer_socket_id)
    put_u32(out + 16, <uint32_t>c.rcv_last_ack)
    put_u32(out + 20, <uint32_t>(c.rtt_us if c.rtt_us < 0x7FFFFFFF else 0x7FFFFFFF))
    put_u32(out + 24, <uint32_t>(c.rttvar_us if c.rttvar_us < 0x7FFFFFFF else 0x7FFFFFFF))
    rcvbuf_autotune(&c.rcv, now, c.rtt_us + SYN_US, seq_inc(c.rcv_largest), _window_filled(c, now))
    v = _rcv_available(c)
    put_u32(out + 28, <uint32_t>v)
    c.ack_history[c.ack_history_pos].edge = seq_add(c.rcv_last_ack, <int32_t>v)
    if now - c.rcv_last_6word_time > SYN_US:
        v = _receive_rate(c)
        put_u32(out + 32, <uint32_t>(v if v < 0x7FFFFFFF else 0x7FFFFFFF))
        v = _link_capacity(c)
        put_u32(out + 36, <uint32_t>(v if v < 0x7FFFFFFF else 0x7FFFFFFF))
        c.rcv_last_6word_time = now
        words = 6
    c.ack_history[c.ack_history_pos].ack_no = c.ack_no
    c.ack_history[c.ack_history_pos].ack_seq = c.rcv_last_ack
    c.ack_history[c.ack_history_pos].sent_time = now
    c.ack_history_pos = (c.ack_history_pos + 1) % ACK_HISTORY_SIZE
    if c.ack_history_count < ACK_HISTORY_SIZE:
        c.ack_history_count += 1
    c.rcv_last_ack_time = now
    c.pkts_since_ack = 0
    c.light_ack_count = 1
    c.stats.pkt_sent_ack_total += 1
    return HEADER_SIZE + 4 * words


cdef inline int _put_loss_ranges(uint8_t* words, int max_words, const int32_t* first,
                                 const int32_t* last, int count) noexcept nogil:
    """Write loss ranges as NAK words (a single sequence, or first|flag, last) until max_words
    would be exceeded; returns the words written."""
    cdef int n = 0, i
    for i in range(count):
        if first[i] == last[i]:
            if n + 1 > max_words:
                break
            put_u32(words + 4 * n, <uint32_t>first[i])
            n += 1
        else:
            if n + 2 > max_words:
                break
            put_u32(words + 4 * n, <uint32_t>first[i] | LOSS_RANGE_FLAG)
            put_u32(words + 4 * n + 4, <uint32_t>last[i])
            n += 2
    return n


cdef ssize_t _emit_nak(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef size_t room = cap
    cdef int max_words, n
    if room > <size_t>(HEADER_SIZE + c.payload_size):
        room = HEADER_SIZE + c.payload_size
    if c.pmtud_max > 0 and room > <size_t>(c.pmtud_base_mss - _ip_overhead(c)):
        room = c.pmtud_base_mss - _ip_overhead(c)   # a NAK must cross a black hole (§13)
    max_words = <int>((room - HEADER_SIZE) // 4) if room > HEADER_SIZE else 0
    if max_words < 1:
        return -ERR_NO_SEND_BUFFER
    if c.nak_report_due:
        # the re-report names only losses seen before the previous one (at least a NAK period,
        # more than a round trip, old): younger ones were just reported and their
        # retransmissions are still on the way; naming them again would send them twice
        n = _put_loss_ranges(out + HEADER_SIZE, max_words, c.rcv_loss.first, c.rcv_loss.last,
                             losslist_lower(&c.rcv_loss, seq_inc(c.nak_horizon)))
        c.nak_report_due = False
        c.nak_horizon = c.rcv_largest
        # only the re-report restarts the NAK timer: were every first report of a new loss to
        # push it back too, steady random loss would keep it from ever firing, and a lost
        # retransmission (or NAK) would hold the cumulative ACK forever (the peer is not silent,
        # so EXP never fires either)
        c.next_nak_time = now + _nak_interval(c)
    else:
        n = _put_loss_ranges(out + HEADER_SIZE, max_words, c.pending_nak_first, c.pending_nak_last,
                             c.pending_nak_count)
    c.pending_nak_count = 0
    if n == 0:
        return 0
    put_header(out, control_word0(PKT_NAK, 0), 0, 0, c.peer_socket_id)
    c.stats.pkt_sent_nak_total += 1
    return HEADER_SIZE + 4 * n


cdef ssize_t _next_control(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef Handshake hs
    cdef ssize_t n
    cdef int i
    if cap < HANDSHAKE_MAX_OUT:
        return -ERR_NO_SEND_BUFFER
    if c.state == STATE_CONNECTING:
        if now >= c.hs_next_time:
            _fill_handshake(c, &hs, c.hs_req_type)
            c.hs_next_time = now + HANDSHAKE_RETRY_US
            c.hs_sent += 1
            if hs.req_type == REQ_INDUCTION:
                hs.cookie = HSEXT_MAGIC     # the offer: UDT4/SRT listeners overwrite it
            n = <ssize_t>handshake_encode(out, &hs, c.peer_socket_id if (c.rendezvous and c.hs_peer_seen) else 0)
            if hs.req_type == REQ_CONCLUSION and c.hs_ext_seen and c.opts.crypto and not c.rendezvous:
                n += <ssize_t>hsext_encode_crypto(out + n, CAPS_LOCAL, c.opts.crypto_offer)  # §12
            elif c.rendezvous or (hs.req_type == REQ_CONCLUSION and c.hs_ext_seen):
                n += <ssize_t>hsext_encode(out + n, CAPS_LOCAL)
            if n > HANDSHAKE_SIZE:      # our trailer: discovery's TLV 3 when it is on (§13)
                n = HANDSHAKE_SIZE + <ssize_t>hsext_add_max_mss(out + HANDSHAKE_SIZE, <size_t>(n - HANDSHAKE_SIZE),
                                                                <uint32_t>c.opts.pmtud_max_mss)
            return n
        return 0
    if c.hs_reply_due:
        c.hs_reply_due = False
        if c.hs_response_valid and _is_live(c):
            memcpy(out, c.hs_response, c.hs_response_len)
            return c.hs_response_len
    if c.state == STATE_CLOSED:
        if c.reset_due > 0:
            c.reset_due -= 1
            return <ssize_t>put_control(out, PKT_ERROR_SIGNAL, ERR_CONNECTION_BROKEN, c.peer_socket_id)
        if c.shutdown_due > 0 and now >= c.shutdown_next_time:
            c.shutdown_due -= 1
            c.shutdown_next_time = now if c.shutdown_burst else now + SHUTDOWN_SPACING_US
            return <ssize_t>put_control(out, PKT_SHUTDOWN, 0, c.peer_socket_id)
        return 0
    if not _is_live(c):
        return 0
    if c.pending_ack2_count > 0:
        i = c.pending_ack2[0]
        c.pending_ack2_count -= 1
        if c.pending_ack2_count > 0:
            memmove(&c.pending_ack2[0], &c.pending_ack2[1], c.pending_ack2_count * sizeof(int32_t))
        return <ssize_t>put_control(out, PKT_ACK2, <uint32_t>i, c.peer_socket_id)
    if c.full_ack_due:
        c.full_ack_due = False
        c.light_ack_due = False
        n = _emit_full_ack(c, now, out, cap)
        if n != 0:
            return n
    if c.light_ack_due:
        c.light_ack_due = False
        if seq_cmp(c.rcv.frontier_seq, c.rcv_last_ack) >= 0:
            put_header(out, control_word0(PKT_ACK, 0), 0, 0, c.peer_socket_id)
            put_u32(out + 16, <uint32_t>c.rcv.frontier_seq)
            c.stats.pkt_sent_ack_total += 1
            return 20
    if c.pending_nak_count > 0 or c.nak_report_due:
        n = _emit_nak(c, now, out, cap)
        if n != 0:
            return n
    if c.pending_drop_count > 0:
        put_header(out, control_word0(PKT_DROP_REQUEST, 0), <uint32_t>c.pending_drop[0].msgno, 0,
                   c.peer_socket_id)
        put_u32(out + 16, <uint32_t>c.pending_drop[0].first)
        put_u32(out + 20, <uint32_t>c.pending_drop[0].last)
        c.pending_drop_count -= 1
        if c.pending_drop_count > 0:
            memmove(&c.pending_drop[0], &c.pending_drop[1], c.pending_drop_count * sizeof(PendingDrop))
        return 24
    if c.eof_ack_due:
        c.eof_ack_due = False
        put_header(out, control_word0(PKT_USER_DEFINED, EXT_EOF_ACK), <uint32_t>c.eof_ack_seq, 0,
                   c.peer_socket_id)
        put_u32(out + 16, 0)
        return 20
    if _eof_time(c) >= 0 and now >= c.eof_next_time:
        c.eof_next_time = now + c.rtt_us + 4 * c.rttvar_us + SYN_US    # until the peer confirms
        put_header(out, control_word0(PKT_USER_DEFINED, EXT_EOF), <uint32_t>c.snd_next_seq, 0,
                   c.peer_socket_id)
        put_u32(out + 16, 0)
        return 20
    if c.pmtud_ack_size > 0:            # confirm the peer's probe (§13)
        put_header(out, control_word0(PKT_USER_DEFINED, EXT_PMTU_ACK), c.pmtud_ack_id, 0, c.peer_socket_id)
        put_u32(out + 16, <uint32_t>c.pmtud_ack_size)
        c.pmtud_ack_size = 0
        return 20
    if c.pmtud_base_ack_id != 0:       # the peer checks that small packets still cross (§13)
        put_header(out, control_word0(PKT_USER_DEFINED, EXT_PMTU_ACK), c.pmtud_base_ack_id, 0,
                   c.peer_socket_id)
        put_u32(out + 16, <uint32_t>c.pmtud_base_mss)
        c.pmtud_base_ack_id = 0
        return 20
    if c.keepalive_due:
        c.keepalive_due = False
        return <ssize_t>put_control(out, PKT_KEEPALIVE, 0, c.peer_socket_id)
    return 0


cdef inline int64_t _eof_time(Conn* c) noexcept nogil:
    """When our EOF (half-close) is due: once everything written is acknowledged; -1 if not."""
    if not c.wr_shut or c.eof_acked or not c.buffers_ready or c.snd.count != 0:
        return -1
    return c.eof_next_time


cdef bint _slot_expired(SendSlot* slot, int64_t now) noexcept nogil:
    return slot.ttl_us >= 0 and now - slot.origin_time > slot.ttl_us


cdef void _drop_message(Conn* c, int32_t seq, int64_t now) noexcept nogil:
    """The message holding seq outlived its TTL: stop sending it and tell the receiver."""
    cdef int64_t k = seq_off(c.snd_una, seq)
    cdef int64_t kf = k, kl = k
    cdef int idx = sndbuf_index(&c.snd, k)
    cdef int32_t msgno = msg_number(sndbuf_slot(&c.snd, idx).msg_word)
    cdef int bnd
    cdef int32_t first, last
    while kf > 0:
        bnd = msg_boundary(sndbuf_slot(&c.snd, sndbuf_index(&c.snd, kf)).msg_word)
        if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
            break
        if msg_number(sndbuf_slot(&c.snd, sndbuf_index(&c.snd, kf - 1)).msg_word) != msgno:
            break
        kf -= 1
    while kl + 1 < c.snd.count:
        bnd = msg_boundary(sndbuf_slot(&c.snd, sndbuf_index(&c.snd, kl)).msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            break
        kl += 1
    for k in range(kf, kl + 1):
        sndbuf_slot(&c.snd, sndbuf_index(&c.snd, k)).ttl_us = -1     # dropped once is enough
    first = seq_add(c.snd_una, kf)
    last = seq_add(c.snd_una, kl)
    if seq_cmp(last, c.snd_curr_seq) > 0:
        # the unsent rest of the message is skipped: its numbers count as sent
        c.snd_curr_seq = last
        c.snd_next_seq = seq_inc(last)
    losslist_remove_range(&c.snd_loss, first, last)
    if c.pending_drop_count < PENDING_DROPS:
        c.pending_drop[c.pending_drop_count].msgno = msgno
        c.pending_drop[c.pending_drop_count].first = first
        c.pending_drop[c.pending_drop_count].last = last
        c.pending_drop_count += 1


cdef inline void _zero_window_pace(Conn* c, int length, int64_t now) noexcept nogil:
    """The peer's window is closed (ACK word 3 at its floor of 2 packets: a reader that stopped).
    UDT4's 2-packet probes per ACK interval are ~290 KB/s at MSS 1500 but 45 times that at
    64 KiB, which filled a stalled reader's buffer and kept sendall() from ever timing out; so
    a grown MSS spaces them to the same bytes per SYN.  An ACK that opens the window ends it."""
    cdef double gap = <double>SYN_US * length / (
        MIN_AVAILABLE_BUFFER * (c.pmtud_base_mss - _ip_overhead(c) - HEADER_SIZE))
    if c.next_send_exact < <double>now + gap:
        c.next_send_exact = <double>now + gap
    c.zero_window_paced = True


cdef ssize_t _emit_data(Conn* c, int32_t seq, int64_t now, bint retransmit, uint8_t* out,
                        const uint8_t** payload, size_t* payload_len) noexcept nogil:
    cdef int idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
    cdef SendSlot* slot = sndbuf_slot(&c.snd, idx)
    put_header(out, <uint32_t>seq, slot.msg_word, _timestamp(c, now), c.peer_socket_id)
    payload[0] = sndbuf_payload(&c.snd, idx)
    payload_len[0] = <size_t>slot.length
    c.stats.pkt_sent_total += 1
    c.stats.bytes_sent_total += slot.length
    if retransmit:
        c.stats.pkt_retrans_total += 1
    # Packet pair (protocol.md §7): a packet with seq % 16 == 0 is followed by the next one at once;
    # that one then waits two periods, so the average rate still obeys the period (and MAXBW).
    if (seq & 0xF) == 0:
        c.probe_sent = True
    elif c.probe_sent:
        c.probe_sent = False
        c.next_send_exact += 2 * _packet_period(c, slot.length)
    else:
        c.next_send_exact += _packet_period(c, slot.length)
    if (not retransmit and c.peer_avail <= MIN_AVAILABLE_BUFFER and c.pmtud_max > 0
            and c.mss > c.pmtud_base_mss):
        _zero_window_pace(c, slot.length, now)
    c.next_send_time = <int64_t>c.next_send_exact
    if c.cc.want_pkt_sent and c.cc.ops.on_pkt_sent != NULL:
        _cc_sync_inputs(c)
        c.cc.ops.on_pkt_sent(&c.cc, seq, slot.length, now)
        _cc_after(c)
    if slot.length > c.payload_size and c.pmtud_fragments:
        # written before a black hole (protocol.md §13): it leaves as base-size fragments
        c.frag_count = frag_count(slot.length, _fragment_room(c))
        if c.frag_count > 0:
            c.frag_seq = seq
            c.frag_next = 0
            return _emit_fragment(c, now, out, payload, payload_len)
    return HEADER_SIZE


cdef ssize_t _next_data(Conn* c, int64_t now, uint8_t* out, size_t cap,
                        const uint8_t** payload, size_t* payload_len) noexcept nogil:
    cdef int32_t seq
    cdef int idx
    cdef ssize_t n
    if not _is_live(c) or not c.buffers_ready:
        return 0
    if c.frag_count > 0:                # the rest of a packet's fragments, back to back
        n = _emit_fragment(c, now, out, payload, payload_len)
        if n > 0:
            return n
    if c.next_send_exact > <double>now:
        return 0
    if c.next_send_exact < <double>(now - MAX_PACING_LAG_US):
        c.next_send_exact = <double>(now - MAX_PACING_LAG_US)
    while c.snd_loss.count > 0:
        seq = losslist_pop_first(&c.snd_loss)
        if seq_cmp(seq, c.snd_una) < 0 or seq_cmp(seq, c.snd_curr_seq) > 0:
            continue
        idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
        if _slot_expired(sndbuf_slot(&c.snd, idx), now):
            _drop_message(c, seq, now)
            continue
        return _emit_data(c, seq, now, True, out, payload, payload_len)
    while _can_send_new(c):
        seq = c.snd_next_seq
        idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
        if _slot_expired(sndbuf_slot(&c.snd, idx), now):
            _drop_message(c, seq, now)
            continue
        c.snd_curr_seq = seq
        c.snd_next_seq = seq_inc(seq)
        c.cc.snd_curr_seq = seq
        return _emit_data(c, seq, now, False, out, payload, payload_len)
    return 0


cdef ssize_t conn_next_datagram_zc(Conn* c, int64_t now, uint8_t* out, size_t cap,
                                   const uint8_t** payload, size_t* payload_len) noexcept nogil:
    cdef ssize_t n
    payload[0] = NULL
    payload_len[0] = 0
    n = _next_control(c, now, out, cap)
    if n != 0:
        return n
    if (c.pmtud_probe_due or c.pmtud_base_due) and c.state == STATE_CONNECTED:
        n = _pmtud_emit(c, now, out, payload, payload_len)
        if n != 0:
            return n
    # message drop requests created while choosing data go out before the data
    n = _next_data(c, now, out, cap, payload, payload_len)
    if n == 0 and c.pending_drop_count > 0:
        return _next_control(c, now, out, cap)
    return n


cdef ssize_t conn_next_datagram(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef const uint8_t* payload
    cdef size_t payload_len
    cdef ssize_t n
    if cap < <size_t>c.mss:
        return -ERR_NO_SEND_BUFFER
    n = conn_next_datagram_zc(c, now, out, cap, &payload, &payload_len)
    if n > 0 and <size_t>n + payload_len > cap:
        return -ERR_NO_SEND_BUFFER      # a probe larger than the caller's buffer: counts as lost
    if n > 0 and payload_len > 0:
        memcpy(out + n, payload, payload_len)
        n += <ssize_t>payload_len
    return n


cdef inline bint _control_pending(Conn* c) noexcept nogil:
    if not _is_live(c):
        return False
    return (c.hs_reply_due or c.pending_ack2_count > 0 or c.full_ack_due or c.light_ack_due
            or c.pending_nak_count > 0 or c.nak_report_due or c.pending_drop_count > 0
            or c.keepalive_due or c.eof_ack_due or c.pmtud_ack_size > 0 or c.pmtud_base_ack_id != 0)


cdef int64_t conn_next_send_time(Conn* c, int64_t now) noexcept nogil:
    cdef int64_t t
    if c.state == STATE_CONNECTING:
        return c.hs_next_time if c.hs_next_time > now else now
    if c.state == STATE_CLOSED:
        if c.reset_due > 0:
            return now
        if c.shutdown_due > 0:
            return c.shutdown_next_time if c.shutdown_next_time > now else now
        return -1
    if _control_pending(c) or ((c.pmtud_probe_due or c.pmtud_base_due) and c.state == STATE_CONNECTED):
        return now
    if not _is_live(c) or not c.buffers_ready:
        return -1
    if c.frag_count > 0:
        return now
    t = _eof_time(c)
    if t >= 0:
        return t if t > now else now
    if c.snd_loss.count > 0 or _can_send_new(c):
        t = <int64_t>ceil(c.next_send_exact)
        return t if t > now else now
    return -1


# ---------------------------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------------------------
cdef int64_t conn_next_timer(Conn* c) noexcept nogil:
    cdef int64_t t = -1
    if c.state == STATE_CONNECTING:
        return _min_time(c.hs_next_time, c.connect_deadline)
    if not _is_live(c):
        return -1
    # the ACK timer only runs while something received is not yet confirmed by an ACK2:
    # an idle connection wakes nobody every 10 ms (it re-arms on the next data packet)
    if c.rcv.frontier_seq != c.rcv_last_ack_ack or c.full_ack_due:
        t = c.next_ack_time
    if c.rcv_loss.count > 0:
        t = _min_time(t, c.next_nak_time)
    t = _min_time(t, _exp_deadline(c))
    if c.pmtud_deadline > 0:
        t = _min_time(t, c.pmtud_deadline)
    if c.pmtud_raise_time > 0:
        t = _min_time(t, c.pmtud_raise_time)
    t = _min_time(t, c.last_peer_activity + c.opts.broken_timeout_us + 1)
    if c.state == STATE_CLOSING:
        t = _min_time(t, c.linger_deadline)
        if c.snd.count == 0:
            t = _min_time(t, c.snd_empty_time + SHUTDOWN_GRACE_US)
    return t


cdef void _release_idle_buffers(Conn* c, int64_t now) noexcept nogil:
    """Keep-alive time with nothing to send: memory a quiet connection no longer needs goes
    back, and the limits restart small (udt/core/buffers.pxd), like TCP after an idle RTO."""
    if not c.buffers_ready:
        return
    if c.snd.count == 0:
        if c.snd_empty_time > c.snd.last_active:
            c.snd.last_active = c.snd_empty_time
        sndbuf_idle_release(&c.snd, now)
        if c.snd.store.chunks == NULL:
            losslist_shrink(&c.snd_loss)
    if c.rcv_loss.count == 0:
        rcvbuf_idle_release(&c.rcv, now, seq_inc(c.rcv_largest))
        if c.rcv.store.chunks == NULL:
            losslist_shrink(&c.rcv_loss)
            frags_free(&c.frags)


cdef void _exp_requeue(Conn* c) noexcept nogil:
    """Nothing heard for an EXP period with data unacknowledged.  A UDT4 or SRT receiver does
    not re-report its losses by itself, so everything unacknowledged is presumed lost (as UDT4
    does).  A udt receiver re-reports its loss list every NAK period: the silence is more
    likely a stall of its feedback (a receiver waiting for a core, lost ACKs) than a lost
    window, and re-sending a whole long-path window would arrive as thousands of duplicates.
    It gets a probe (like TCP's tail-loss probe): the first unacknowledged packet, which moves
    its ACK on if that one was lost, and the last one sent, which shows it a lost tail as a gap
    it then NAKs.  Probes are not counted as losses: nothing says they were lost."""
    cdef int64_t n
    if c.peer_caps == 0:
        n = losslist_insert(&c.snd_loss, c.snd_una, c.snd_curr_seq)
        if n > 0:
            c.stats.pkt_snd_loss_total += n
        return
    losslist_insert(&c.snd_loss, c.snd_una, c.snd_una)
    if c.snd_curr_seq != c.snd_una:
        losslist_insert(&c.snd_loss, c.snd_curr_seq, c.snd_curr_seq)
    c.exp_probing = True
    c.exp_probe_seq = c.snd_curr_seq


cdef uint32_t conn_on_timer(Conn* c, int64_t now) noexcept nogil:
    cdef uint32_t ev = 0
    if c.state == STATE_CONNECTING:
        if now >= c.connect_deadline:
            return _connect_failed(c, ERR_NO_SERVER)
        if now >= c.hs_next_time:
            return EV_WANT_TRANSMIT
        return 0
    if not _is_live(c):
        return 0
    if now - c.last_peer_activity > c.opts.broken_timeout_us:
        c.error = ERR_CONNECTION_BROKEN
        c.state = STATE_BROKEN
        c.closing = False
        return EV_BROKEN | EV_READABLE | EV_WRITABLE
    if c.state == STATE_CLOSING and (now >= c.linger_deadline or _close_may_finish(c, now)):
        return _finish_close(c)
    if now >= c.next_ack_time:
        c.next_ack_time = now + (c.cc.ack_period_us if c.cc.ack_period_us > 0 else SYN_US)
        if _full_ack_wanted(c, now):
            c.full_ack_due = True
            ev |= EV_WANT_TRANSMIT
    if c.rcv_loss.count > 0 and now >= c.next_nak_time:
        c.nak_report_due = True
        c.next_nak_time = now + _nak_interval(c)
        ev |= EV_WANT_TRANSMIT
    if c.pmtud_deadline > 0 and now >= c.pmtud_deadline:
        ev |= _pmtud_on_timeout(c, now)
    if c.pmtud_raise_time > 0 and now >= c.pmtud_raise_time:
        ev |= _pmtud_raise(c)
    if now >= _exp_deadline(c):
        if c.snd.count > 0:
            if c.snd_curr_seq != seq_dec(c.snd_una) and c.snd_loss.count == 0:
                _exp_requeue(c)
            _pmtud_suspect(c)           # is the grown MSS still crossing? (protocol.md §13)
            _cc_sync_inputs(c)
            if c.cc.ops.on_timeout != NULL:
                c.cc.ops.on_timeout(&c.cc, now)
                _cc_after(c)
            # restart transmission at once
            if c.next_send_exact > <double>now:
                c.next_send_exact = <double>now
        else:
            c.keepalive_due = True
            _release_idle_buffers(c, now)
        c.exp_count += 1
        c.last_rsp_time = now
        ev |= EV_WANT_TRANSMIT
    return ev


# ---------------------------------------------------------------------------------------------
# Path-MTU discovery (protocol.md §13; RFC 8899's packetization-layer PMTUD).  Negotiated in
# the handshake (lifecycle._pmtud_negotiate sets pmtud_max and sizes the rings' slots for it);
# one probe in flight at a time, confirmed by the peer's EXT_PMTU_ACK, lost after
# RTT + 4·RTTVar + SYN; PMTUD_MAX_TRIES lost copies mark the size too big.  Probes are not data:
# their loss is no congestion signal and they take no sequence number.  The search tries the
# ceiling first (loopback, a jumbo LAN: one round trip), then 9000, then halves the interval
# between the confirmed MSS and the smallest failure until it is below PMTUD_MIN_STEP.  Only new
# packets take the new size: what the send buffer holds keeps its length, retransmissions too.
# ---------------------------------------------------------------------------------------------
cdef uint8_t _PMTUD_PAD[65536]          # a probe's padding (zeros), sent by pointer


cdef inline int _ip_overhead(Conn* c) noexcept nogil:
    return IP_UDP_OVERHEAD_V6 if c.is_ipv6 else IP_UDP_OVERHEAD


cdef int _pmtud_next_size(Conn* c) noexcept nogil:
    """The next candidate MSS, or 0 when the search is over."""
    cdef int lo = c.mss
    cdef int hi = c.pmtud_fail if c.pmtud_fail > 0 else c.pmtud_max + 1
    cdef int mid
    if lo >= c.pmtud_max or hi - lo <= 1:
        return 0
    if c.pmtud_fail == 0:
        return c.pmtud_max
    if lo < 9000 < hi and hi - lo > PMTUD_MIN_STEP:
        return 9000
    if hi - lo <= PMTUD_MIN_STEP:
        return 0
    mid = (lo + hi) // 2
    return mid & ~3


cdef ssize_t _pmtud_emit(Conn* c, int64_t now, uint8_t* out, const uint8_t** payload,
                         size_t* payload_len) noexcept nogil:
    """The probe (a copy of the current candidate), padded to its size by pointer."""
    cdef int datagram
    cdef int64_t timeout
    if c.pmtud_base_due and not c.pmtud_probe_due:
        # confirming: a base-size probe after each copy, so that a silent peer (a dead path)
        # is not taken for a black hole
        c.pmtud_base_due = False
        datagram = c.pmtud_base_mss - _ip_overhead(c)
        put_header(out, control_word0(PKT_USER_DEFINED, EXT_PMTU_PROBE),
                   c.pmtud_probe_id | PMTUD_BASE_PROBE_ID, _timestamp(c, now), c.peer_socket_id)
        payload[0] = _PMTUD_PAD
        payload_len[0] = <size_t>(datagram - HEADER_SIZE)
        c.pmtud_probes_sent += 1
        c.pmtud_probe_out = True
        return HEADER_SIZE
    c.pmtud_probe_due = False
    if c.pmtud_probe == 0:
        c.pmtud_probe = _pmtud_next_size(c)
        c.pmtud_tries = 0
        c.pmtud_probe_id += 1
        if c.pmtud_probe == 0:
            c.pmtud_done = True
            if c.mss < c.pmtud_max and c.pmtud_raise_time == 0:
                c.pmtud_raise_time = now + PMTUD_RAISE_US    # the path may grow later
            return 0
    datagram = c.pmtud_probe - _ip_overhead(c)
    put_header(out, control_word0(PKT_USER_DEFINED, EXT_PMTU_PROBE), c.pmtud_probe_id,
               _timestamp(c, now), c.peer_socket_id)
    payload[0] = _PMTUD_PAD
    payload_len[0] = <size_t>(datagram - HEADER_SIZE)
    timeout = c.rtt_us + 4 * c.rttvar_us + SYN_US
    if c.pmtud_confirming:
        c.pmtud_base_due = True
        if c.pmtud_tries >= PMTUD_BLACK_HOLE_TRIES and timeout < MIN_EXP_US:
            timeout = MIN_EXP_US        # the peer is silent: no flood of big copies meanwhile
    c.pmtud_deadline = now + timeout
    c.pmtud_probes_sent += 1
    c.pmtud_probe_out = True
    return HEADER_SIZE


cdef uint32_t _pmtud_on_probe(Conn* c, const uint8_t* buf, size_t length) noexcept nogil:
    """The peer's probe: confirm its size (up to what we accept)."""
    cdef int size = <int>length + _ip_overhead(c)
    cdef int old_slot = c.rcv.slot_size
    if c.pmtud_max == 0 or size > c.pmtud_max or length < <size_t>HEADER_SIZE + 4:
        _invalid(c, INVALID_LENGTH)
        return 0
    if (get_u32(buf + 4) & PMTUD_BASE_PROBE_ID) and size == c.pmtud_base_mss:
        c.pmtud_base_ack_id = get_u32(buf + 4)
        return EV_WANT_TRANSMIT
    # packets this large may follow: new receive chunks get slots for them (older ones are
    # moved to bigger slots when such a packet lands in them)
    chunks_set_slot_size(&c.rcv.store, size - _ip_overhead(c) - HEADER_SIZE)
    c.rcv.slot_size = c.rcv.store.slot_size
    buffer_scale_limits(&c.rcv.limit, &c.rcv.initial_limit, &c.rcv.max_limit, c.rcv.capacity,
                        c.pmtud_base_mss - _ip_overhead(c) - HEADER_SIZE, old_slot, c.rcv.slot_size)
    c.pmtud_ack_size = size
    c.pmtud_ack_id = get_u32(buf + 4)
    return EV_WANT_TRANSMIT


cdef uint32_t _pmtud_on_ack(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    """The peer received our probe: new packets may be that large."""
    cdef int size
    cdef int old_payload = c.payload_size
    if length < <size_t>HEADER_SIZE + 4:
        _invalid(c, INVALID_LENGTH)
        return 0
    size = <int>get_u32(buf + HEADER_SIZE)
    if (c.pmtud_confirming and get_u32(buf + 4) == (c.pmtud_probe_id | PMTUD_BASE_PROBE_ID)
            and size == c.pmtud_base_mss):
        c.pmtud_base_heard = True       # small packets cross
        c.pmtud_probes_confirmed += 1
        return 0
    if c.pmtud_probe == 0 or get_u32(buf + 4) != c.pmtud_probe_id or size != c.pmtud_probe:
        c.stats.late_packets += 1       # a second confirmation, or one for a size given up
        return 0
    c.pmtud_probes_confirmed += 1
    c.pmtud_probe = 0
    c.pmtud_tries = 0
    c.pmtud_deadline = 0
    c.pmtud_probe_due = True            # the next candidate, if any
    c.pmtud_ack_progress = now
    if c.pmtud_confirming:              # the current MSS still crosses: that EXP was loss
        c.pmtud_confirming = False
        c.pmtud_base_due = False
        return EV_WANT_TRANSMIT
    if c.cc.max_bw_period_us > 0:       # UDT_MAXBW stays bytes per second
        c.cc.max_bw_period_us *= <double>size / <double>c.mss
    c.mss = size
    c.payload_size = size - _ip_overhead(c) - HEADER_SIZE
    c.cc.mss = size
    chunks_set_slot_size(&c.snd.store, c.payload_size)    # new chunks only: queued packets keep theirs
    c.snd.slot_size = c.snd.store.slot_size
    buffer_scale_limits(&c.snd.limit, &c.snd.initial_limit, &c.snd.max_limit, c.snd.capacity,
                        c.pmtud_base_mss - _ip_overhead(c) - HEADER_SIZE, old_payload, c.payload_size)
    return EV_WANT_TRANSMIT | EV_WRITABLE


cdef uint32_t _pmtud_on_timeout(Conn* c, int64_t now) noexcept nogil:
    """The probe in flight is lost: again, or this size is too big for the path."""
    c.pmtud_deadline = 0
    c.pmtud_probes_lost += 1
    c.pmtud_tries += 1
    if c.pmtud_confirming:
        if c.pmtud_tries >= PMTUD_BLACK_HOLE_TRIES:
            if c.pmtud_base_heard:      # big packets lost, small ones not: a black hole
                return _pmtud_black_hole(c, now)
            c.pmtud_tries = PMTUD_BLACK_HOLE_TRIES  # nothing crosses: wait for the path, copy by copy
        c.pmtud_probe_due = True
        return EV_WANT_TRANSMIT
    if c.pmtud_tries >= PMTUD_MAX_TRIES:
        if c.pmtud_fail == 0 or c.pmtud_probe < c.pmtud_fail:
            c.pmtud_fail = c.pmtud_probe
        c.pmtud_probe = 0
    c.pmtud_probe_due = True
    return EV_WANT_TRANSMIT


# ---------------------------------------------------------------------------------------------
# Black holes (protocol.md §13, RFC 8899 §4.3): an EXP with data out while the MSS is above the
# handshake's probes the current MSS; PMTUD_BLACK_HOLE_TRIES lost copies, while base-size probes
# are answered, bring the MSS back to the base, and the packets already written at the old size
# leave as fragments the peer joins (EXT_PMTU_FRAGMENT,
# udt/core/fragments.pxd) until they are acknowledged.  The search then runs again below the
# size that failed, and from the ceiling PMTUD_BLACK_HOLE_RAISE_US later.
# ---------------------------------------------------------------------------------------------
cdef inline int64_t _pmtud_stall_time(Conn* c) noexcept nogil:
    """How long NAKs may come while the cumulative ACK stands still before the sender checks
    its MSS: several retransmission rounds (a lost retransmission costs one), at least an EXP."""
    cdef int64_t t = 4 * (c.rtt_us + 4 * c.rttvar_us) + SYN_US
    return t if t > MIN_EXP_US else MIN_EXP_US


cdef void _pmtud_suspect(Conn* c) noexcept nogil:
    """An EXP timeout with data in flight: check that the grown MSS still crosses."""
    if (c.pmtud_max == 0 or c.mss <= c.pmtud_base_mss or c.pmtud_confirming
            or c.snd_curr_seq == seq_dec(c.snd_una)):
        return
    c.pmtud_confirming = True
    c.pmtud_base_heard = False
    c.pmtud_probe = c.mss               # replaces a search probe in flight (it proves no more)
    c.pmtud_tries = 0
    c.pmtud_probe_id += 1
    c.pmtud_deadline = 0
    c.pmtud_probe_due = True


cdef uint32_t _pmtud_black_hole(Conn* c, int64_t now) noexcept nogil:
    """The confirmed MSS no longer crosses: new packets (and the CC) go back to the base."""
    cdef int old_payload = c.payload_size
    c.pmtud_confirming = False
    c.pmtud_base_due = False
    c.pmtud_black_holes += 1
    c.pmtud_fail = c.mss
    c.pmtud_probe = 0
    c.pmtud_tries = 0
    if c.cc.max_bw_period_us > 0:       # UDT_MAXBW stays bytes per second
        c.cc.max_bw_period_us *= <double>c.pmtud_base_mss / <double>c.mss
    c.mss = c.pmtud_base_mss
    c.payload_size = c.mss - _ip_overhead(c) - HEADER_SIZE
    c.cc.mss = c.mss
    # the ring keeps its slots (what is queued keeps its length); new packets fill them only up
    # to payload_size (app.pyx's _room), and the limits stand for the same bytes again
    buffer_scale_limits(&c.snd.limit, &c.snd.initial_limit, &c.snd.max_limit, c.snd.capacity,
                        c.payload_size, old_payload, c.payload_size)
    c.pmtud_done = False
    c.pmtud_probe_due = True            # search again below the size that failed
    c.pmtud_raise_time = now + PMTUD_BLACK_HOLE_RAISE_US
    if c.next_send_exact > <double>now:
        c.next_send_exact = <double>now
    return EV_WANT_TRANSMIT | EV_WRITABLE


cdef uint32_t _pmtud_raise(Conn* c) noexcept nogil:
    """PMTU_RAISE_TIMER: the path may carry more now; search again from the ceiling."""
    c.pmtud_raise_time = 0
    if c.pmtud_max == 0 or c.mss >= c.pmtud_max or c.pmtud_probe != 0:
        return 0
    c.pmtud_fail = 0
    c.pmtud_done = False
    c.pmtud_probe_due = True
    return EV_WANT_TRANSMIT


cdef inline int _fragment_room(Conn* c) noexcept nogil:
    """Payload bytes a fragment carries at most: a base-size datagram less its header."""
    return c.pmtud_base_mss - _ip_overhead(c) - PMTUD_FRAG_HEADER


cdef ssize_t _emit_fragment(Conn* c, int64_t now, uint8_t* out, const uint8_t** payload,
                            size_t* payload_len) noexcept nogil:
    """The next fragment of c.frag_seq (header into out, its bytes by pointer into the slot);
    0 when that packet was acknowledged meanwhile."""
    cdef int32_t seq = c.frag_seq
    cdef int idx, n, index = c.frag_next
    cdef SendSlot* slot
    if seq_cmp(seq, c.snd_una) < 0:
        c.frag_count = 0
        return 0
    idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
    slot = sndbuf_slot(&c.snd, idx)
    n = frag_size(slot.length, c.frag_count, index)
    put_header(out, control_word0(PKT_USER_DEFINED, EXT_PMTU_FRAGMENT), <uint32_t>seq,
               _timestamp(c, now), c.peer_socket_id)
    put_u32(out + HEADER_SIZE, slot.msg_word)
    put_u32(out + HEADER_SIZE + 4, (<uint32_t>index << 16) | <uint32_t>c.frag_count)
    put_u32(out + HEADER_SIZE + 8, <uint32_t>slot.length)
    payload[0] = sndbuf_payload(&c.snd, idx) + <size_t>index * <size_t>frag_stride(slot.length, c.frag_count)
    payload_len[0] = <size_t>n
    c.frag_next += 1
    if c.frag_next >= c.frag_count:
        c.frag_count = 0
    c.pmtud_fragments_sent += 1
    return PMTUD_FRAG_HEADER


cdef uint32_t _pmtud_on_fragment(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    """A fragment of a packet the peer wrote before its black hole: join it; the last one
    hands the whole packet to _on_data, which never knows it came in parts."""
    cdef int32_t seq = <int32_t>(get_u32(buf + 4) & SEQ_MAX)
    cdef uint32_t word, cut
    cdef int index, count, total
    cdef int64_t off
    cdef FragEntry* e
    if length <= <size_t>PMTUD_FRAG_HEADER or not c.buffers_ready:
        _invalid(c, INVALID_LENGTH)
        return 0
    word = get_u32(buf + HEADER_SIZE)
    cut = get_u32(buf + HEADER_SIZE + 4)
    index = <int>(cut >> 16)
    count = <int>(cut & 0xFFFF)
    total = <int>get_u32(buf + HEADER_SIZE + 8)
    if (count < 2 or count > PMTUD_FRAG_MAX or index >= count or total <= 0
            or total > c.rcv.slot_size or total > c.pmtud_max
            or frag_size(total, count, index) != <int>length - PMTUD_FRAG_HEADER):
        _invalid(c, INVALID_LENGTH)
        return 0
    c.pmtud_fragments_received += 1
    off = seq_off(c.rcv.read_seq, seq)
    if off < 0 or (off < c.rcv.capacity and rcvbuf_state(&c.rcv, rcvbuf_index(&c.rcv, off)) != RSLOT_EMPTY):
        c.stats.duplicate_packets += 1  # that packet is here already
        return 0
    e = frags_entry(&c.frags, HEADER_SIZE + c.pmtud_max, seq, total, count, word, get_u32(buf + 8))
    if e == NULL:                       # out of memory: as if the buffer were full
        _invalid(c, INVALID_BUFFER_FULL)
        return 0
    if e.length != total or e.count != count or e.msg_word != word:
        _invalid(c, INVALID_LENGTH)     # not how the sender cut this packet before
        return 0
    if not frag_take(e, index):
        return 0
    memcpy(e.data + HEADER_SIZE + <size_t>index * <size_t>frag_stride(total, count),
           buf + PMTUD_FRAG_HEADER, <size_t>(length - PMTUD_FRAG_HEADER))
    if e.received < e.count:
        return 0
    put_header(e.data, <uint32_t>seq, e.msg_word, e.timestamp, c.socket_id)
    e.length = 0                        # the entry is free again (its buffer stays)
    return _on_data(c, e.data, <size_t>(HEADER_SIZE + total), now)
