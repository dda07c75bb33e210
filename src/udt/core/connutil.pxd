# cython: language_level=3
"""Header-only helpers every engine unit shares (cdef inline): timing constants, liveness, pacing
and window arithmetic, the CC input/output guards, and the small state changes (connect failed,
close finished, our handshake fields) that both the packet paths and the lifecycle make."""
from libc.stdint cimport int64_t, uint32_t, uint64_t

from udt._core cimport (EV_CLOSED, EV_CONNECT_FAILED, EV_WANT_TRANSMIT, STATE_CLOSED,
                        STATE_CLOSING, STATE_CONNECTED, STATE_CONNECTING, UDT_VERSION, Conn)
from udt.core.packet cimport Handshake, address_bytes
from udt.core.seq cimport seq_off


# ---------------------------------------------------------------------------------------------
# Timing constants (protocol.md §6)
# ---------------------------------------------------------------------------------------------
cdef enum:
    SYN_US = 10000                      # SYN interval: ACK timer, rate control
    HANDSHAKE_RETRY_US = 250000         # handshake requests at most every 250 ms
    CONNECT_TIMEOUT_US = 3000000        # client/server connect gives up after 3 s
    RENDEZVOUS_TIMEOUT_US = 30000000    # rendezvous after 30 s
    MIN_EXP_US = 300000                 # EXP at least count * 300 ms
    MIN_NAK_US = 20000                  # periodic NAK re-report floor
    IDLE_KEEPALIVE_US = 1000000         # EXP interval floor while nothing is unacknowledged
    MAX_PACING_LAG_US = 2000            # a late sender may catch up at most this much schedule
    DEFAULT_BROKEN_US = 10000000        # udt: silence after which the connection is broken
    DEFAULT_LINGER_US = 3000000
    SHUTDOWN_GRACE_US = 200000          # close: longest wait for the peer's reader after the last ACK
    RESET_SIGNALS = 2                   # error signals sent when a close drops data
    SHUTDOWN_COPIES = 4                 # SHUTDOWNs sent at close (UDT4 sends one; it has no ACK):
    SHUTDOWN_SPACING_US = 10000         # spaced so that one burst of loss cannot take them all
    INITIAL_RTT_US = 100000
    INITIAL_RTTVAR_US = 50000
    MAX_NAK_WORDS = 4096                # a NAK with more words is dropped as invalid
    MIN_AVAILABLE_BUFFER = 2            # ACK word 3 is never below 2 (keeps the sender probing)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
cdef inline void _invalid(Conn* c, int reason) noexcept nogil:
    c.stats.invalid[reason] += 1


cdef inline bint _is_live(Conn* c) noexcept nogil:
    return c.state == STATE_CONNECTED or c.state == STATE_CLOSING


cdef inline uint32_t _timestamp(Conn* c, int64_t now) noexcept nogil:
    return <uint32_t>(<uint64_t>(now - c.start_time))


cdef inline void _peer_alive(Conn* c, int64_t now) noexcept nogil:
    c.exp_count = 1
    c.last_rsp_time = now
    c.last_peer_activity = now


cdef inline int64_t _min_time(int64_t a, int64_t b) noexcept nogil:
    if a < 0:
        return b
    if b < 0:
        return a
    return a if a < b else b


cdef inline double _pacing_period(Conn* c) noexcept nogil:
    cdef double p = c.cc.period_us
    if p < c.cc.max_bw_period_us:
        p = c.cc.max_bw_period_us
    if p < 0:
        p = 0
    return p


cdef inline double _packet_period(Conn* c, size_t payload) noexcept nogil:
    """_pacing_period for one packet of payload bytes.  UDT_MAXBW's floor is per MSS-sized
    packet; once path-MTU discovery grew the MSS, packets queued at the older, smaller size
    must not wait a whole new-MSS period each (that paced them at a fraction of UDT_MAXBW)."""
    cdef double p = c.cc.period_us
    cdef double floor = c.cc.max_bw_period_us
    if floor > 0 and c.mss > c.pmtud_base_mss and payload < <size_t>c.payload_size:
        floor *= <double>(payload + <size_t>(c.mss - c.payload_size)) / <double>c.mss
    if p < floor:
        p = floor
    if p < 0:
        p = 0
    return p


cdef inline int64_t _unsent_packets(Conn* c) noexcept nogil:
    return c.snd.count - seq_off(c.snd_una, c.snd_next_seq)


cdef inline int64_t _send_window(Conn* c) noexcept nogil:
    cdef int64_t w = <int64_t>c.cc.cwnd
    if c.flow_window < w:
        w = c.flow_window
    return w


cdef inline bint _can_send_new(Conn* c) noexcept nogil:
    return _unsent_packets(c) > 0 and seq_off(c.snd_last_ack, c.snd_next_seq) < _send_window(c)


cdef inline int64_t _exp_deadline(Conn* c) noexcept nogil:
    cdef int64_t interval
    if c.cc.rto_us > 0:
        interval = c.cc.rto_us * c.exp_count
    else:
        interval = c.exp_count * (c.rtt_us + 4 * c.rttvar_us) + SYN_US
        if interval < c.exp_count * <int64_t>MIN_EXP_US:
            interval = c.exp_count * <int64_t>MIN_EXP_US
    if c.snd.count == 0 and interval < IDLE_KEEPALIVE_US:
        # nothing to retransmit: the EXP only keeps the peer informed; once a second is plenty
        # (UDT4 exchanges one every 0.3 s) and an idle connection wakes nobody in between
        interval = IDLE_KEEPALIVE_US
    return c.last_rsp_time + interval


cdef inline int64_t _nak_interval(Conn* c) noexcept nogil:
    cdef int64_t i = c.rtt_us + 4 * c.rttvar_us
    return i if i > MIN_NAK_US else MIN_NAK_US


cdef inline bint _close_may_finish(Conn* c, int64_t now) noexcept nogil:
    """May SHUTDOWN go out now?  Everything must be acknowledged, and the peer's reader must have
    caught up (its ACK reports the buffer as free as it ever was) or had SHUTDOWN_GRACE_US since
    the last ACK.  UDT4's blocking recvmsg, woken for the last messages, throws ECONNLOST without
    reading them when a SHUTDOWN lands before it runs: an ACK alone does not make the data safe."""
    if c.snd.count != 0:
        return False
    return c.peer_avail >= c.peer_avail_max or now - c.snd_empty_time >= SHUTDOWN_GRACE_US


cdef inline int64_t _rcv_available(Conn* c) noexcept nogil:
    # the autotuned limit, not the ring: the peer is told what we mean to hold (buffers.pxd)
    cdef int64_t a = c.rcv.limit - seq_off(c.rcv.read_seq, c.rcv.frontier_seq) - 1
    return a if a > MIN_AVAILABLE_BUFFER else MIN_AVAILABLE_BUFFER


cdef inline void _rtt_update(Conn* c, int64_t rtt) noexcept nogil:
    """Spec §5: RTTVar = (3·RTTVar + |rtt − RTT|)/4, RTT = (7·RTT + rtt)/8."""
    cdef int64_t diff = rtt - c.rtt_us if rtt > c.rtt_us else c.rtt_us - rtt
    c.rttvar_us = (c.rttvar_us * 3 + diff) >> 2
    c.rtt_us = (c.rtt_us * 7 + rtt) >> 3


cdef inline void _cc_sync_inputs(Conn* c) noexcept nogil:
    c.cc.rtt_us = c.rtt_us
    c.cc.rttvar_us = c.rttvar_us
    # like UDT4's CCC, the algorithm sees no receive rate until an ACK reported one: a loss
    # before the first 6-word ACK must not pace at the 16 packets/s placeholder
    c.cc.rcv_rate = c.delivery_rate if c.rate_sampled else 0
    c.cc.bandwidth = c.bandwidth
    c.cc.mss = c.mss
    c.cc.snd_curr_seq = c.snd_curr_seq
    c.cc.inflight = seq_off(c.snd_una, c.snd_next_seq)
    c.cc.unsent = _unsent_packets(c)


cdef inline void _cc_after(Conn* c) noexcept nogil:
    """Sanitise what the algorithm set (a user CC may write anything)."""
    if not (c.cc.period_us >= 0):          # also catches NaN
        c.cc.period_us = 1.0
    if c.cc.period_us > 1e7:
        c.cc.period_us = 1e7
    if not (c.cc.cwnd >= 2):
        c.cc.cwnd = 2.0
    if c.cc.cwnd > 1e9:
        c.cc.cwnd = 1e9


cdef inline uint32_t _connect_failed(Conn* c, int error) noexcept nogil:
    c.error = error
    c.state = STATE_CLOSED
    return EV_CONNECT_FAILED


cdef inline void _fill_handshake(Conn* c, Handshake* hs, int req_type) noexcept nogil:
    hs.version = UDT_VERSION
    hs.sock_type = c.opts.sock_type
    hs.isn = c.isn
    hs.mss = c.opts.mss if c.state == STATE_CONNECTING else c.mss
    hs.flight_flag_size = c.flight_flag_size
    hs.req_type = req_type
    hs.socket_id = c.socket_id
    hs.cookie = c.hs_cookie
    address_bytes(&c.peer_addr, hs.peer_ip)


cdef inline uint32_t _finish_close(Conn* c) noexcept nogil:
    if c.state == STATE_CONNECTED or c.state == STATE_CLOSING:
        c.shutdown_due = SHUTDOWN_COPIES
        c.shutdown_next_time = 0
        if c.buffers_ready and c.snd.count > 0:
            # data dropped (abort, or linger out without progress): tell the peer, twice
            # against a loss, so its reader ends with ECONNRESET and not with a clean EOF
            c.reset_due = RESET_SIGNALS
    c.state = STATE_CLOSED
    c.closing = False
    return EV_CLOSED | (EV_WANT_TRANSMIT if c.shutdown_due > 0 else 0)
