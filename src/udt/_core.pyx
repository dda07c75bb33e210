# cython: language_level=3
"""The UDT protocol engine: one connection's state machine and the stateless listener, sans-IO.

See udt/_core.pxd for the C API and docs/engine.md for how it works.  The protocol units
(sequence arithmetic, codec, loss lists, buffers, native congestion control, SipHash) live in
header-only udt/core/*.pxd (cdef inline, cimported here and by the test shim udt._testing); the
native congestion control is its own unit, udt/core/cc.pyx.  At the bottom: the Python
congestion-control trampoline (udt/core/pycc.pxi).
"""
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset
from udt._net cimport sockaddr_storage

from udt.core.buffers cimport (FRONTIER_PASSED_MESSAGE_END, RSLOT_DROPPED, RSLOT_EMPTY,
                               RSLOT_FILLED, RSLOT_TAKEN, rcvbuf_advance_frontier, rcvbuf_alloc,
                               rcvbuf_consume_head, rcvbuf_free, rcvbuf_index, rcvbuf_payload,
                               sndbuf_alloc, sndbuf_free, sndbuf_index, sndbuf_payload,
                               sndbuf_release)
from udt.core.cc cimport native_cc_ops
from udt.core.losslist cimport (losslist_alloc, losslist_clear, losslist_free, losslist_insert,
                                losslist_pop_first, losslist_remove, losslist_remove_before,
                                losslist_remove_range)
from udt.core.packet cimport (AF_INET6_VALUE, AF_INET_VALUE, CONTROL_FLAG, LOSS_RANGE_FLAG,
                              MSG_BOUNDARY_SHIFT, MSG_INORDER_BIT, MSG_NUMBER_26, Handshake,
                              address_bytes, address_port, control_word0, get_u32,
                              handshake_decode, handshake_encode, msg_boundary, msg_number,
                              msg_word, put_control, put_header, put_u32)
from udt.core.seq cimport (SEQ_MAX, SEQ_THRESHOLD, ackno_inc, msgno_inc, seq_add, seq_cmp,
                           seq_dec, seq_inc, seq_off)
from udt.core.siphash cimport siphash24, splitmix64


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
    cdef int64_t a = c.rcv.capacity - seq_off(c.rcv.read_seq, c.rcv.frontier_seq) - 1
    return a if a > MIN_AVAILABLE_BUFFER else MIN_AVAILABLE_BUFFER


cdef inline void _rtt_update(Conn* c, int64_t rtt) noexcept nogil:
    """Spec §5: RTTVar = (3·RTTVar + |rtt − RTT|)/4, RTT = (7·RTT + rtt)/8."""
    cdef int64_t diff = rtt - c.rtt_us if rtt > c.rtt_us else c.rtt_us - rtt
    c.rttvar_us = (c.rttvar_us * 3 + diff) >> 2
    c.rtt_us = (c.rtt_us * 7 + rtt) >> 3


cdef void _cc_sync_inputs(Conn* c) noexcept nogil:
    c.cc.rtt_us = c.rtt_us
    c.cc.rttvar_us = c.rttvar_us
    # like UDT4's CCC, the algorithm sees no receive rate until an ACK reported one: a loss
    # before the first 6-word ACK must not pace at the 16 packets/s placeholder
    c.cc.rcv_rate = c.delivery_rate if c.rate_sampled else 0
    c.cc.bandwidth = c.bandwidth
    c.cc.mss = c.mss
    c.cc.snd_curr_seq = c.snd_curr_seq


cdef void _cc_after(Conn* c) noexcept nogil:
    """Sanitise what the algorithm set (a user CC may write anything)."""
    if not (c.cc.period_us >= 0):          # also catches NaN
        c.cc.period_us = 1.0
    if c.cc.period_us > 1e7:
        c.cc.period_us = 1e7
    if not (c.cc.cwnd >= 2):
        c.cc.cwnd = 2.0
    if c.cc.cwnd > 1e9:
        c.cc.cwnd = 1e9


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------
cdef void conn_options_default(ConnOptions* opts) noexcept nogil:
    memset(opts, 0, sizeof(ConnOptions))
    opts.mss = DEFAULT_MSS
    opts.sock_type = SOCK_TYPE_STREAM
    opts.flight_flag_size = DEFAULT_FLIGHT_FLAG_SIZE
    opts.snd_buf_packets = DEFAULT_BUFFER_PACKETS
    opts.rcv_buf_packets = DEFAULT_BUFFER_PACKETS
    opts.rendezvous = False
    opts.max_bandwidth = -1
    opts.broken_timeout_us = DEFAULT_BROKEN_US
    opts.linger_us = DEFAULT_LINGER_US
    opts.msg_ttl_us = -1
    opts.connect_timeout_us = 0
    opts.cc_ops = NULL
    opts.cc_user = NULL
    opts.random_seed = 0


cdef int conn_init(Conn* c, const ConnOptions* opts, uint32_t socket_id, int64_t now) noexcept nogil:
    memset(c, 0, sizeof(Conn))
    if (opts.mss < MIN_MSS or opts.mss > 65535
            or (opts.sock_type != SOCK_TYPE_STREAM and opts.sock_type != SOCK_TYPE_DGRAM)
            or opts.flight_flag_size < MIN_FLIGHT_FLAG_SIZE
            or opts.snd_buf_packets < 2 or opts.rcv_buf_packets < 2
            or opts.snd_buf_packets > (1 << 28) or opts.rcv_buf_packets > (1 << 28)):
        c.state = STATE_NONEXIST
        return -ERR_BAD_PARAMETER
    c.opts = opts[0]
    if c.opts.broken_timeout_us <= 0:
        c.opts.broken_timeout_us = DEFAULT_BROKEN_US
    if c.opts.linger_us < 0:
        c.opts.linger_us = 0
    c.state = STATE_OPENED
    c.socket_id = socket_id
    c.start_time = now
    c.rng = opts.random_seed
    if c.rng == 0:
        c.rng = (<uint64_t>socket_id * 0x9E3779B97F4A7C15ULL) ^ <uint64_t>now ^ 0x5DEECE66DULL
    c.mss = opts.mss
    c.flight_flag_size = opts.flight_flag_size
    if opts.rcv_buf_packets < c.flight_flag_size:
        c.flight_flag_size = opts.rcv_buf_packets     # UDT4 announces min(rcv buffer, FC)
    c.rtt_us = INITIAL_RTT_US
    c.rttvar_us = INITIAL_RTTVAR_US
    c.delivery_rate = 16
    c.bandwidth = 1000
    c.exp_count = 1
    c.last_clear_time = now
    c.cc.ops = opts.cc_ops if opts.cc_ops != NULL else native_cc_ops()
    c.cc.user = opts.cc_user
    c.cc.rng = splitmix64(&c.rng)
    c.cc.cwnd = 16.0
    c.cc.period_us = 1.0
    conn_set_max_bandwidth(c, opts.max_bandwidth)
    return 0


cdef void conn_free(Conn* c) noexcept nogil:
    if c.cc_ready:
        c.cc_ready = False
        if c.cc.ops != NULL and c.cc.ops.close != NULL:
            c.cc.ops.close(&c.cc)
    if c.buffers_ready:
        c.buffers_ready = False
        sndbuf_free(&c.snd)
        rcvbuf_free(&c.rcv)
        losslist_free(&c.snd_loss)
        losslist_free(&c.rcv_loss)
    if c.state != STATE_NONEXIST:
        c.state = STATE_CLOSED


cdef int _alloc_buffers(Conn* c, int32_t first_rcv_seq) noexcept nogil:
    cdef int slot = c.opts.mss - IP_UDP_OVERHEAD - HEADER_SIZE
    if c.buffers_ready:
        return 0
    if sndbuf_alloc(&c.snd, c.opts.snd_buf_packets, slot) < 0:
        return -ERR_NO_MEMORY
    if rcvbuf_alloc(&c.rcv, c.opts.rcv_buf_packets, slot, first_rcv_seq) < 0:
        sndbuf_free(&c.snd)
        return -ERR_NO_MEMORY
    if (losslist_alloc(&c.snd_loss, c.opts.snd_buf_packets // 2 + 2) < 0
            or losslist_alloc(&c.rcv_loss, c.opts.rcv_buf_packets // 2 + 2) < 0):
        sndbuf_free(&c.snd)
        rcvbuf_free(&c.rcv)
        losslist_free(&c.snd_loss)
        losslist_free(&c.rcv_loss)
        return -ERR_NO_MEMORY
    c.buffers_ready = True
    return 0


cdef void _set_mss(Conn* c, int mss) noexcept nogil:
    c.mss = mss
    c.recv_payload_size = mss - IP_UDP_OVERHEAD - HEADER_SIZE
    c.payload_size = mss - (IP_UDP_OVERHEAD_V6 if c.is_ipv6 else IP_UDP_OVERHEAD) - HEADER_SIZE
    if c.payload_size < 16:
        c.payload_size = 16


cdef uint32_t _established(Conn* c, int64_t now, int32_t peer_isn, int peer_ffs, int mss) noexcept nogil:
    """Common tail of every successful handshake: sequence state, timers, CC."""
    _set_mss(c, mss)
    c.peer_isn = peer_isn
    # receive side (buffers were allocated with our ISN guess; re-anchor them on the peer's)
    c.rcv.read_seq = peer_isn
    c.rcv.frontier_seq = peer_isn
    c.rcv_largest = seq_dec(peer_isn)
    c.rcv_last_ack = peer_isn
    c.rcv_last_ack_ack = peer_isn
    # send side
    c.snd_una = c.isn
    c.snd_last_ack = c.isn
    c.snd_next_seq = c.isn
    c.snd_curr_seq = seq_dec(c.isn)
    c.flow_window = peer_ffs if peer_ffs > 0 else 2
    c.next_send_exact = <double>now
    c.next_send_time = now
    c.state = STATE_CONNECTED
    c.next_ack_time = now + SYN_US
    c.next_nak_time = now + _nak_interval(c)
    _peer_alive(c, now)
    c.rcv_last_6word_time = now - SYN_US - 1     # the first full ACK carries all 6 words
    c.light_ack_count = 1
    # congestion control
    c.cc.max_cwnd = c.flow_window
    _cc_sync_inputs(c)
    if c.cc.ops.init != NULL:
        c.cc.ops.init(&c.cc, now)
    _cc_after(c)
    c.cc_ready = True
    return EV_CONNECTED | EV_WRITABLE | EV_WANT_TRANSMIT


cdef uint32_t _connect_failed(Conn* c, int error) noexcept nogil:
    c.error = error
    c.state = STATE_CLOSED
    return EV_CONNECT_FAILED


cdef int conn_connect(Conn* c, const sockaddr_storage* peer, int64_t now) noexcept nogil:
    cdef int rc
    if c.state == STATE_CONNECTED or c.state == STATE_CONNECTING:
        return -ERR_ALREADY_CONNECTED
    if c.state != STATE_OPENED:
        return -ERR_INVALID_OPERATION
    if peer.ss_family != AF_INET_VALUE and peer.ss_family != AF_INET6_VALUE:
        return -ERR_BAD_PARAMETER
    memcpy(&c.peer_addr, peer, sizeof(sockaddr_storage))
    c.is_ipv6 = peer.ss_family == AF_INET6_VALUE
    c.rendezvous = c.opts.rendezvous
    c.isn = <int32_t>(splitmix64(&c.rng) & SEQ_MAX)
    rc = _alloc_buffers(c, 0)
    if rc < 0:
        return rc
    c.hs_req_type = REQ_RENDEZVOUS if c.rendezvous else REQ_INDUCTION
    c.hs_cookie = 0
    c.hs_next_time = now
    if c.opts.connect_timeout_us > 0:
        c.connect_deadline = now + c.opts.connect_timeout_us
    else:
        c.connect_deadline = now + (RENDEZVOUS_TIMEOUT_US if c.rendezvous else CONNECT_TIMEOUT_US)
    _set_mss(c, c.opts.mss)
    c.state = STATE_CONNECTING
    return 0


cdef void _fill_handshake(Conn* c, Handshake* hs, int req_type) noexcept nogil:
    hs.version = UDT_VERSION
    hs.sock_type = c.opts.sock_type
    hs.isn = c.isn
    hs.mss = c.opts.mss if c.state == STATE_CONNECTING else c.mss
    hs.flight_flag_size = c.flight_flag_size
    hs.req_type = req_type
    hs.socket_id = c.socket_id
    hs.cookie = c.hs_cookie
    address_bytes(&c.peer_addr, hs.peer_ip)


cdef ssize_t conn_accept(Conn* c, const AcceptRequest* req, int64_t now, uint8_t* out,
                         size_t cap) noexcept nogil:
    cdef Handshake hs
    cdef int rc
    if c.state != STATE_OPENED:
        return -ERR_INVALID_OPERATION
    if cap < HANDSHAKE_SIZE:
        return -ERR_NO_SEND_BUFFER
    if req.sock_type != c.opts.sock_type or req.mss < MIN_MSS:
        return -ERR_REJECTED
    memcpy(&c.peer_addr, &req.peer_addr, sizeof(sockaddr_storage))
    c.is_ipv6 = req.peer_addr.ss_family == AF_INET6_VALUE
    c.is_server = True
    c.peer_socket_id = req.peer_socket_id
    c.isn = req.isn                      # the server sends from the client's ISN too
    c.hs_cookie = req.cookie
    memcpy(c.peer_ip, req.self_ip, 16)
    rc = _alloc_buffers(c, req.isn)
    if rc < 0:
        return rc
    cdef int mss = req.mss if req.mss < c.opts.mss else c.opts.mss
    _established(c, now, req.isn, req.peer_flight_flag_size, mss)
    _fill_handshake(c, &hs, REQ_CONCLUSION)
    hs.mss = mss
    handshake_encode(c.hs_response, &hs, c.peer_socket_id)
    c.hs_response_valid = True
    memcpy(out, c.hs_response, HANDSHAKE_SIZE)
    return HANDSHAKE_SIZE


cdef uint32_t _finish_close(Conn* c) noexcept nogil:
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


cdef uint32_t conn_close(Conn* c, int64_t now) noexcept nogil:
    if c.state == STATE_CLOSED or c.state == STATE_NONEXIST:
        return 0
    if c.state != STATE_CONNECTED and c.state != STATE_CLOSING:
        c.state = STATE_CLOSED
        return EV_CLOSED
    if c.opts.linger_us <= 0 or _close_may_finish(c, now):
        return _finish_close(c)
    if c.state != STATE_CLOSING:
        c.state = STATE_CLOSING
        c.closing = True
        c.linger_deadline = now + c.opts.linger_us
    return EV_WANT_TRANSMIT


cdef uint32_t conn_abort(Conn* c, int64_t now) noexcept nogil:
    if c.state == STATE_CLOSED or c.state == STATE_NONEXIST:
        return 0
    if c.state != STATE_CONNECTED and c.state != STATE_CLOSING:
        c.state = STATE_CLOSED
        return EV_CLOSED
    if c.buffers_ready:
        losslist_clear(&c.snd_loss)
    return _finish_close(c)


cdef void conn_set_max_bandwidth(Conn* c, int64_t bytes_per_second) noexcept nogil:
    c.opts.max_bandwidth = bytes_per_second
    if bytes_per_second > 0:
        c.cc.max_bw_period_us = 1e6 * <double>c.opts.mss / <double>bytes_per_second
    else:
        c.cc.max_bw_period_us = 0


# ---------------------------------------------------------------------------------------------
# Input: handshakes
# ---------------------------------------------------------------------------------------------
# One step function per (role, phase); each switches on the request type.  The table is
# documented in docs/engine.md (handshake transitions).  A NULL entry, and any state that is
# neither connecting nor live, drops the handshake as INVALID_STATE.
ctypedef uint32_t (*HandshakeStep)(Conn* c, const Handshake* hs, int64_t now) noexcept nogil

cdef enum:
    HS_ROLE_CLIENT = 0
    HS_ROLE_SERVER = 1
    HS_ROLE_RENDEZVOUS = 2
    HS_ROLE_COUNT = 3
    HS_PHASE_CONNECTING = 0
    HS_PHASE_LIVE = 1               # CONNECTED or CLOSING
    HS_PHASE_COUNT = 2


cdef inline bint _hs_late_induction(Conn* c, const Handshake* hs) noexcept nogil:
    """A second copy of the induction answer this client already used (late, not invalid)."""
    return (hs.req_type == REQ_INDUCTION and c.hs_req_type == REQ_CONCLUSION
            and hs.cookie == c.hs_cookie and hs.isn == c.isn)


cdef uint32_t _hs_client_connecting(Conn* c, const Handshake* hs, int64_t now) noexcept nogil:
    cdef int mss
    if hs.req_type == REQ_INDUCTION and c.hs_req_type == REQ_INDUCTION:
        c.hs_cookie = hs.cookie
        c.hs_req_type = REQ_CONCLUSION
        c.hs_next_time = now
        return EV_WANT_TRANSMIT
    if hs.req_type == REQ_CONCLUSION and c.hs_req_type == REQ_CONCLUSION:
        if hs.version != UDT_VERSION or hs.sock_type != c.opts.sock_type or hs.isn != c.isn:
            _invalid(c, INVALID_WRONG_PEER)
            return _connect_failed(c, ERR_SECURITY_FAILURE)
        if hs.mss < MIN_MSS or hs.socket_id == 0:
            _invalid(c, INVALID_HANDSHAKE)
            return _connect_failed(c, ERR_SECURITY_FAILURE)
        c.peer_socket_id = hs.socket_id
        memcpy(c.peer_ip, hs.peer_ip, 16)
        mss = hs.mss if hs.mss < c.opts.mss else c.opts.mss
        return _established(c, now, hs.isn, hs.flight_flag_size, mss)
    _invalid(c, INVALID_STATE)
    return 0


cdef uint32_t _hs_rendezvous_connecting(Conn* c, const Handshake* hs, int64_t now) noexcept nogil:
    if hs.req_type == REQ_INDUCTION:
        _invalid(c, INVALID_STATE)          # a rendezvous socket ignores req 1
        return 0
    if hs.req_type == REQ_RENDEZVOUS_AGREEMENT:
        # UDT4 sends its -2 answer with version 0, type 0 and no peer IP: only the socket
        # ID matters, and it completes the connection once we have the peer's request.
        if not c.hs_peer_seen or hs.socket_id != c.peer_socket_id:
            _invalid(c, INVALID_STATE)
            return 0
        if c.hs_req_type != REQ_CONCLUSION:
            _invalid(c, INVALID_STATE)
            return 0
        return _rendezvous_complete(c, now, False)
    if (hs.version != UDT_VERSION or hs.sock_type != c.opts.sock_type or hs.mss < MIN_MSS
            or hs.socket_id == 0 or hs.isn < 0
            or (hs.req_type != REQ_RENDEZVOUS and hs.req_type != REQ_CONCLUSION)):
        _invalid(c, INVALID_HANDSHAKE)
        return 0
    if c.hs_peer_seen and hs.socket_id != c.peer_socket_id:
        _invalid(c, INVALID_WRONG_PEER)
        return 0
    c.hs_peer_seen = True
    c.peer_socket_id = hs.socket_id
    c.peer_isn = hs.isn
    c.peer_mss = hs.mss
    c.peer_flight_flag_size = hs.flight_flag_size
    memcpy(c.peer_ip, hs.peer_ip, 16)
    if c.hs_req_type == REQ_RENDEZVOUS or hs.req_type == REQ_RENDEZVOUS:
        c.hs_req_type = REQ_CONCLUSION
        c.hs_next_time = now
        return EV_WANT_TRANSMIT
    return _rendezvous_complete(c, now, hs.req_type == REQ_CONCLUSION)


cdef uint32_t _hs_client_live(Conn* c, const Handshake* hs, int64_t now) noexcept nogil:
    if hs.req_type == REQ_CONCLUSION and hs.socket_id == c.peer_socket_id:
        _peer_alive(c, now)                 # a late duplicate response: harmless
        return 0
    _invalid(c, INVALID_STATE)
    return 0


cdef uint32_t _hs_server_live(Conn* c, const Handshake* hs, int64_t now) noexcept nogil:
    if hs.socket_id != c.peer_socket_id:
        _invalid(c, INVALID_WRONG_PEER)
        return 0
    _peer_alive(c, now)
    if hs.req_type == REQ_CONCLUSION or hs.req_type > 0:
        c.hs_reply_due = True               # the client lost our response: send it again
        return EV_WANT_TRANSMIT
    return 0


cdef uint32_t _hs_rendezvous_live(Conn* c, const Handshake* hs, int64_t now) noexcept nogil:
    if hs.req_type == REQ_RENDEZVOUS_AGREEMENT:
        _peer_alive(c, now)
        return 0
    if hs.socket_id != c.peer_socket_id:
        _invalid(c, INVALID_WRONG_PEER)
        return 0
    c.hs_reply_due = True                   # the peer still waits for our agreement
    _peer_alive(c, now)
    return EV_WANT_TRANSMIT


cdef HandshakeStep HANDSHAKE_STEPS[HS_ROLE_COUNT][HS_PHASE_COUNT]
HANDSHAKE_STEPS[HS_ROLE_CLIENT][HS_PHASE_CONNECTING] = _hs_client_connecting
HANDSHAKE_STEPS[HS_ROLE_CLIENT][HS_PHASE_LIVE] = _hs_client_live
HANDSHAKE_STEPS[HS_ROLE_SERVER][HS_PHASE_CONNECTING] = NULL     # conn_accept starts CONNECTED
HANDSHAKE_STEPS[HS_ROLE_SERVER][HS_PHASE_LIVE] = _hs_server_live
HANDSHAKE_STEPS[HS_ROLE_RENDEZVOUS][HS_PHASE_CONNECTING] = _hs_rendezvous_connecting
HANDSHAKE_STEPS[HS_ROLE_RENDEZVOUS][HS_PHASE_LIVE] = _hs_rendezvous_live


cdef uint32_t _on_handshake(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef Handshake hs
    cdef int role, phase
    cdef HandshakeStep step
    if length != HANDSHAKE_SIZE:
        _invalid(c, INVALID_HANDSHAKE)
        return 0
    handshake_decode(buf + HEADER_SIZE, &hs)
    if not c.rendezvous and _hs_late_induction(c, &hs):     # in any state, even after the end
        c.stats.late_packets += 1
        return 0
    if c.state == STATE_CONNECTING:
        if hs.req_type >= REQ_FAILURE_FIRST:        # a refusal, whatever the role
            c.reject_req_type = hs.req_type
            return _connect_failed(c, ERR_REJECTED)
        phase = HS_PHASE_CONNECTING
    elif _is_live(c):
        phase = HS_PHASE_LIVE
    else:
        _invalid(c, INVALID_STATE)
        return 0
    if c.rendezvous:
        role = HS_ROLE_RENDEZVOUS
    elif c.is_server:
        role = HS_ROLE_SERVER
    else:
        role = HS_ROLE_CLIENT
    step = HANDSHAKE_STEPS[role][phase]
    if step == NULL:
        _invalid(c, INVALID_STATE)
        return 0
    return step(c, &hs, now)


cdef uint32_t _rendezvous_complete(Conn* c, int64_t now, bint answer) noexcept nogil:
    cdef Handshake hs
    cdef int mss = c.peer_mss if c.peer_mss < c.opts.mss else c.opts.mss
    cdef uint32_t ev = _established(c, now, c.peer_isn, c.peer_flight_flag_size, mss)
    _fill_handshake(c, &hs, REQ_RENDEZVOUS_AGREEMENT)
    handshake_encode(c.hs_response, &hs, c.peer_socket_id)
    c.hs_response_valid = True
    if answer:
        c.hs_reply_due = True
    return ev


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
        # light ACK: flow window accounting only (UDT4)
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
    if seq_cmp(ack, c.snd_last_ack) >= 0:
        c.flow_window = win
        c.snd_last_ack = ack
        c.peer_avail = win
        if win > c.peer_avail_max:
            c.peer_avail_max = win
    if seq_cmp(ack, c.snd_una) > 0:
        sndbuf_release(&c.snd, seq_off(c.snd_una, ack))
        c.snd_una = ack
        losslist_remove_before(&c.snd_loss, ack)
        ev |= EV_WRITABLE
        if c.state == STATE_CLOSING:
            c.linger_deadline = now + c.opts.linger_us   # the linger bounds a stall, not a drain
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
        w = <uint32_t>words[i]
        if w & LOSS_RANGE_FLAG:
            first = <int32_t>(w & SEQ_MAX)
            last = words[i + 1]
            i += 2
        else:
            first = <int32_t>w
            last = first
            i += 1
        if seq_cmp(last, c.snd_una) < 0:
            continue
        if seq_cmp(first, c.snd_una) < 0:
            first = c.snd_una
        added = losslist_insert(&c.snd_loss, first, last)
        if added > 0:
            c.stats.pkt_snd_loss_total += added
    _cc_sync_inputs(c)
    if c.cc.ops.on_loss != NULL:
        c.cc.ops.on_loss(&c.cc, words, n, now)
        _cc_after(c)
    return EV_WANT_TRANSMIT


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
        slot = &c.rcv.slots[idx]
        if slot.state == RSLOT_EMPTY or (slot.state == RSLOT_FILLED and msg_number(slot.msg_word) == msgno):
            if slot.state == RSLOT_FILLED and seq_cmp(s, c.rcv.frontier_seq) < 0:
                c.rcv.contiguous_bytes -= slot.length - (c.rcv.read_offset if off == 0 else 0)
            slot.state = RSLOT_DROPPED
            c.stats.pkt_dropped_total += 1
    # earlier packets of the same message already buffered (not yet read) are useless too
    off = seq_off(c.rcv.read_seq, first) - 1
    while off >= 0 and off < c.rcv.capacity:
        idx = rcvbuf_index(&c.rcv, off)
        slot = &c.rcv.slots[idx]
        if slot.state != RSLOT_FILLED or msg_number(slot.msg_word) != msgno:
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
    cdef uint32_t ev
    if ctrl_type == PKT_HANDSHAKE:
        return _on_handshake(c, buf, length, now)
    if c.state == STATE_CONNECTING:
        # rendezvous: a keep-alive from a peer that already connected completes our side
        if c.rendezvous and c.hs_peer_seen and ctrl_type == PKT_KEEPALIVE:
            return _rendezvous_complete(c, now, False)
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
        if c.cc.ops.on_custom != NULL:
            c.cc.ops.on_custom(&c.cc, buf, <int>length, now)
            _cc_after(c)
        return 0
    _invalid(c, INVALID_CONTROL_TYPE)
    return 0


# ---------------------------------------------------------------------------------------------
# Input: data
# ---------------------------------------------------------------------------------------------
cdef void _record_arrival(Conn* c, int32_t seq, int64_t now) noexcept nogil:
    cdef RateEstimator* r = &c.rate
    cdef int64_t gap
    if r.last_arrival > 0:
        gap = now - r.last_arrival
        if gap < 1:
            gap = 1
        r.arrival_gap[r.arrival_pos] = gap
        r.arrival_pos = (r.arrival_pos + 1) % ARRIVAL_WINDOW
        if r.arrival_count < ARRIVAL_WINDOW:
            r.arrival_count += 1
    r.last_arrival = now if now > 0 else 1
    if (seq & 0xF) == 0:
        r.probe1_time = now if now > 0 else 1
        r.probe1_seq = seq
    elif r.probe1_time > 0 and seq == seq_inc(r.probe1_seq):
        gap = now - r.probe1_time
        if gap < 1:
            gap = 1
        r.probe_gap[r.probe_pos] = gap
        r.probe_pos = (r.probe_pos + 1) % PROBE_WINDOW
        if r.probe_count < PROBE_WINDOW:
            r.probe_count += 1
        r.probe1_time = 0
    else:
        r.probe1_time = 0


cdef double _median_mean(const int64_t* values, int count, int min_survivors) noexcept nogil:
    """Median filter of protocol.md §7: drop values outside (median/8, median*8), average the rest.
    Returns the mean gap in µs, or 0 if fewer than min_survivors values survive."""
    cdef int64_t tmp[PROBE_WINDOW]
    cdef int i, j, n = 0
    cdef int64_t v, median, total = 0
    if count <= 0:
        return 0
    for i in range(count):
        v = values[i]
        j = i
        while j > 0 and tmp[j - 1] > v:
            tmp[j] = tmp[j - 1]
            j -= 1
        tmp[j] = v
    median = tmp[count // 2]
    for i in range(count):
        v = values[i]
        if v * 8 > median and v < median * 8:
            total += v
            n += 1
    if n < min_survivors or n == 0:
        return 0
    return <double>total / n


cdef int64_t _receive_rate(Conn* c) noexcept nogil:
    cdef double mean = _median_mean(c.rate.arrival_gap, c.rate.arrival_count, 9)
    if mean <= 0:
        return 0
    return <int64_t>ceil(1e6 / mean)        # UDT4 rounds up


cdef int64_t _link_capacity(Conn* c) noexcept nogil:
    cdef double mean = _median_mean(c.rate.probe_gap, c.rate.probe_count, 1)
    if mean <= 0:
        return 1000
    return <int64_t>ceil(1e6 / mean)


cdef bint _message_complete_at(Conn* c, int64_t off) noexcept nogil:
    """Is the packet at receive offset off part of a complete out-of-order (o=0) message?"""
    cdef RecvBuffer* b = &c.rcv
    cdef int idx = rcvbuf_index(b, off)
    cdef uint32_t word = b.slots[idx].msg_word
    cdef int32_t msgno = msg_number(word)
    cdef int64_t k
    cdef int bnd
    if word & MSG_INORDER_BIT:
        return False
    k = off
    while True:                                 # back to the first packet
        idx = rcvbuf_index(b, k)
        if b.slots[idx].state != RSLOT_FILLED or msg_number(b.slots[idx].msg_word) != msgno:
            return False
        bnd = msg_boundary(b.slots[idx].msg_word)
        if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
            break
        k -= 1
        if k < 0:
            return False
    k = off
    while True:                                 # forward to the last packet
        idx = rcvbuf_index(b, k)
        if b.slots[idx].state != RSLOT_FILLED or msg_number(b.slots[idx].msg_word) != msgno:
            return False
        bnd = msg_boundary(b.slots[idx].msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            return True
        k += 1
        if k >= b.capacity:
            return False


cdef uint32_t _on_data(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef int32_t seq = <int32_t>(get_u32(buf) & SEQ_MAX)
    cdef uint32_t word = get_u32(buf + 4)
    cdef size_t payload = length - HEADER_SIZE
    cdef int64_t off, gap
    cdef int idx
    cdef uint32_t ev = 0
    cdef int bnd, moved
    cdef bint was_lost
    if payload == 0 or payload > <size_t>c.rcv.slot_size:
        _invalid(c, INVALID_DATA_LENGTH)
        return 0
    if c.state == STATE_CONNECTING:
        if c.rendezvous and c.hs_peer_seen:
            ev |= _rendezvous_complete(c, now, False)
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
    if c.rcv.slots[idx].state != RSLOT_EMPTY:
        c.stats.duplicate_packets += 1
        return ev
    if seq_cmp(seq, c.rcv_largest) > 0:
        gap = seq_off(c.rcv_largest, seq) - 1
        if gap > 0:
            # loss detected: remember it and report it at once
            losslist_insert(&c.rcv_loss, seq_inc(c.rcv_largest), seq_dec(seq))
            c.stats.pkt_rcv_loss_total += gap
            if c.pending_nak_count < PENDING_NAK_RANGES:
                c.pending_nak_first[c.pending_nak_count] = seq_inc(c.rcv_largest)
                c.pending_nak_last[c.pending_nak_count] = seq_dec(seq)
                c.pending_nak_count += 1
            else:
                c.nak_report_due = True
            ev |= EV_WANT_TRANSMIT
        c.rcv_largest = seq
    else:
        was_lost = losslist_remove(&c.rcv_loss, seq)
    memcpy(rcvbuf_payload(&c.rcv, idx), buf + HEADER_SIZE, payload)
    c.rcv.slots[idx].length = <int32_t>payload
    c.rcv.slots[idx].msg_word = word
    c.rcv.slots[idx].state = RSLOT_FILLED
    moved = rcvbuf_advance_frontier(&c.rcv)
    if moved:
        if c.opts.sock_type == SOCK_TYPE_STREAM or (moved & FRONTIER_PASSED_MESSAGE_END):
            ev |= EV_READABLE
    elif c.opts.sock_type == SOCK_TYPE_DGRAM and seq_cmp(seq, c.rcv.frontier_seq) > 0:
        if _message_complete_at(c, off):
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
    put_u32(out + 28, <uint32_t>_rcv_available(c))
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


cdef ssize_t _emit_nak(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef size_t room = cap
    cdef int max_words, n = 0, i
    cdef int32_t f, l
    if room > <size_t>(HEADER_SIZE + c.payload_size):
        room = HEADER_SIZE + c.payload_size
    max_words = <int>((room - HEADER_SIZE) // 4) if room > HEADER_SIZE else 0
    if max_words < 1:
        return -ERR_NO_SEND_BUFFER
    if c.nak_report_due:
        for i in range(c.rcv_loss.count):
            f = c.rcv_loss.first[i]
            l = c.rcv_loss.last[i]
            if f == l:
                if n + 1 > max_words:
                    break
                put_u32(out + HEADER_SIZE + 4 * n, <uint32_t>f)
                n += 1
            else:
                if n + 2 > max_words:
                    break
                put_u32(out + HEADER_SIZE + 4 * n, <uint32_t>f | LOSS_RANGE_FLAG)
                put_u32(out + HEADER_SIZE + 4 * n + 4, <uint32_t>l)
                n += 2
        c.nak_report_due = False
        c.pending_nak_count = 0
    else:
        for i in range(c.pending_nak_count):
            f = c.pending_nak_first[i]
            l = c.pending_nak_last[i]
            if f == l:
                if n + 1 > max_words:
                    break
                put_u32(out + HEADER_SIZE + 4 * n, <uint32_t>f)
                n += 1
            else:
                if n + 2 > max_words:
                    break
                put_u32(out + HEADER_SIZE + 4 * n, <uint32_t>f | LOSS_RANGE_FLAG)
                put_u32(out + HEADER_SIZE + 4 * n + 4, <uint32_t>l)
                n += 2
        c.pending_nak_count = 0
    if n == 0:
        return 0
    put_header(out, control_word0(PKT_NAK, 0), 0, 0, c.peer_socket_id)
    c.next_nak_time = now + _nak_interval(c)
    c.stats.pkt_sent_nak_total += 1
    return HEADER_SIZE + 4 * n


cdef ssize_t _next_control(Conn* c, int64_t now, uint8_t* out, size_t cap) noexcept nogil:
    cdef Handshake hs
    cdef ssize_t n
    cdef int i
    if cap < HANDSHAKE_SIZE:
        return -ERR_NO_SEND_BUFFER
    if c.state == STATE_CONNECTING:
        if now >= c.hs_next_time:
            _fill_handshake(c, &hs, c.hs_req_type)
            c.hs_next_time = now + HANDSHAKE_RETRY_US
            return <ssize_t>handshake_encode(out, &hs, c.peer_socket_id if (c.rendezvous and c.hs_peer_seen) else 0)
        return 0
    if c.hs_reply_due:
        c.hs_reply_due = False
        if c.hs_response_valid and _is_live(c):
            memcpy(out, c.hs_response, HANDSHAKE_SIZE)
            return HANDSHAKE_SIZE
    if c.state == STATE_CLOSED:
        if c.reset_due > 0:
            c.reset_due -= 1
            return <ssize_t>put_control(out, PKT_ERROR_SIGNAL, ERR_CONNECTION_BROKEN, c.peer_socket_id)
        if c.shutdown_due > 0 and now >= c.shutdown_next_time:
            c.shutdown_due -= 1
            c.shutdown_next_time = now + SHUTDOWN_SPACING_US
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
    if c.keepalive_due:
        c.keepalive_due = False
        return <ssize_t>put_control(out, PKT_KEEPALIVE, 0, c.peer_socket_id)
    return 0


cdef bint _slot_expired(SendSlot* slot, int64_t now) noexcept nogil:
    return slot.ttl_us >= 0 and now - slot.origin_time > slot.ttl_us


cdef void _drop_message(Conn* c, int32_t seq, int64_t now) noexcept nogil:
    """The message holding seq outlived its TTL: stop sending it and tell the receiver."""
    cdef int64_t k = seq_off(c.snd_una, seq)
    cdef int64_t kf = k, kl = k
    cdef int idx = sndbuf_index(&c.snd, k)
    cdef int32_t msgno = msg_number(c.snd.slots[idx].msg_word)
    cdef int bnd
    cdef int32_t first, last
    while kf > 0:
        bnd = msg_boundary(c.snd.slots[sndbuf_index(&c.snd, kf)].msg_word)
        if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
            break
        if msg_number(c.snd.slots[sndbuf_index(&c.snd, kf - 1)].msg_word) != msgno:
            break
        kf -= 1
    while kl + 1 < c.snd.count:
        bnd = msg_boundary(c.snd.slots[sndbuf_index(&c.snd, kl)].msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            break
        kl += 1
    for k in range(kf, kl + 1):
        c.snd.slots[sndbuf_index(&c.snd, k)].ttl_us = -1     # dropped once is enough
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


cdef ssize_t _emit_data(Conn* c, int32_t seq, int64_t now, bint retransmit, uint8_t* out,
                        const uint8_t** payload, size_t* payload_len) noexcept nogil:
    cdef int idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
    cdef SendSlot* slot = &c.snd.slots[idx]
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
        c.next_send_exact += 2 * _pacing_period(c)
    else:
        c.next_send_exact += _pacing_period(c)
    c.next_send_time = <int64_t>c.next_send_exact
    if c.cc.want_pkt_sent and c.cc.ops.on_pkt_sent != NULL:
        _cc_sync_inputs(c)
        c.cc.ops.on_pkt_sent(&c.cc, seq, slot.length, now)
        _cc_after(c)
    return HEADER_SIZE


cdef ssize_t _next_data(Conn* c, int64_t now, uint8_t* out, size_t cap,
                        const uint8_t** payload, size_t* payload_len) noexcept nogil:
    cdef int32_t seq
    cdef int idx
    if not _is_live(c) or not c.buffers_ready:
        return 0
    if c.next_send_exact > <double>now:
        return 0
    if c.next_send_exact < <double>(now - MAX_PACING_LAG_US):
        c.next_send_exact = <double>(now - MAX_PACING_LAG_US)
    while c.snd_loss.count > 0:
        seq = losslist_pop_first(&c.snd_loss)
        if seq_cmp(seq, c.snd_una) < 0 or seq_cmp(seq, c.snd_curr_seq) > 0:
            continue
        idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
        if _slot_expired(&c.snd.slots[idx], now):
            _drop_message(c, seq, now)
            continue
        return _emit_data(c, seq, now, True, out, payload, payload_len)
    while _can_send_new(c):
        seq = c.snd_next_seq
        idx = sndbuf_index(&c.snd, seq_off(c.snd_una, seq))
        if _slot_expired(&c.snd.slots[idx], now):
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
    if n > 0 and payload_len > 0:
        memcpy(out + n, payload, payload_len)
        n += <ssize_t>payload_len
    return n


cdef inline bint _control_pending(Conn* c) noexcept nogil:
    if not _is_live(c):
        return False
    return (c.hs_reply_due or c.pending_ack2_count > 0 or c.full_ack_due or c.light_ack_due
            or c.pending_nak_count > 0 or c.nak_report_due or c.pending_drop_count > 0
            or c.keepalive_due)


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
    if _control_pending(c):
        return now
    if not _is_live(c) or not c.buffers_ready:
        return -1
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
    t = _min_time(t, c.last_peer_activity + c.opts.broken_timeout_us + 1)
    if c.state == STATE_CLOSING:
        t = _min_time(t, c.linger_deadline)
        if c.snd.count == 0:
            t = _min_time(t, c.snd_empty_time + SHUTDOWN_GRACE_US)
    return t


cdef uint32_t conn_on_timer(Conn* c, int64_t now) noexcept nogil:
    cdef uint32_t ev = 0
    cdef int64_t n
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
    if now >= _exp_deadline(c):
        if c.snd.count > 0:
            if c.snd_curr_seq != seq_dec(c.snd_una) and c.snd_loss.count == 0:
                # nothing heard for a while: everything unacknowledged is presumed lost
                n = losslist_insert(&c.snd_loss, c.snd_una, c.snd_curr_seq)
                if n > 0:
                    c.stats.pkt_snd_loss_total += n
            _cc_sync_inputs(c)
            if c.cc.ops.on_timeout != NULL:
                c.cc.ops.on_timeout(&c.cc, now)
                _cc_after(c)
            # restart transmission at once
            if c.next_send_exact > <double>now:
                c.next_send_exact = <double>now
        else:
            c.keepalive_due = True
        c.exp_count += 1
        c.last_rsp_time = now
        ev |= EV_WANT_TRANSMIT
    return ev


# ---------------------------------------------------------------------------------------------
# Application side
# ---------------------------------------------------------------------------------------------
cdef ssize_t conn_write(Conn* c, const uint8_t* data, size_t length, int64_t ttl_us,
                        bint inorder, int64_t now) noexcept nogil:
    cdef int64_t sent_count, npk, k
    cdef size_t done = 0, chunk
    cdef int idx, tail, bnd
    cdef int32_t msgno
    cdef int psize = c.payload_size
    cdef SendSlot* slot
    cdef bint was_empty
    if c.state == STATE_BROKEN or c.peer_shutdown:
        return -ERR_CONNECTION_BROKEN
    if c.state != STATE_CONNECTED:
        return -ERR_NO_CONNECTION
    if ttl_us < 0:
        ttl_us = c.opts.msg_ttl_us
    was_empty = c.snd.count == 0
    if c.opts.sock_type == SOCK_TYPE_DGRAM:
        if length == 0:
            return -ERR_BAD_PARAMETER
        npk = (<int64_t>length + psize - 1) // psize
        if npk > c.snd.capacity:
            return -ERR_MESSAGE_TOO_LARGE
        if c.snd.count + npk > c.snd.capacity:
            return -ERR_NO_SEND_BUFFER
        msgno = c.snd.next_msgno
        c.snd.next_msgno = msgno_inc(msgno)
        for k in range(npk):
            idx = sndbuf_index(&c.snd, c.snd.count)
            slot = &c.snd.slots[idx]
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
    else:
        if length == 0:
            return 0
        sent_count = seq_off(c.snd_una, c.snd_next_seq)
        tail = -1
        if c.snd.count > sent_count:
            tail = sndbuf_index(&c.snd, c.snd.count - 1)
            if c.snd.slots[tail].length >= psize:
                tail = -1
        if tail >= 0:
            # append to the unsent last packet: the bytes join its message
            slot = &c.snd.slots[tail]
            chunk = <size_t>(psize - slot.length)
            if chunk > length:
                chunk = length
            memcpy(sndbuf_payload(&c.snd, tail) + slot.length, data, chunk)
            slot.length += <int32_t>chunk
            c.snd.bytes += <int64_t>chunk
            done = chunk
            msgno = msg_number(slot.msg_word)
        else:
            if c.snd.count >= c.snd.capacity:
                return -ERR_NO_SEND_BUFFER
            msgno = c.snd.next_msgno
            c.snd.next_msgno = msgno_inc(msgno)
        while done < length and c.snd.count < c.snd.capacity:
            if tail >= 0:
                # the message goes on past the old last packet
                c.snd.slots[tail].msg_word &= ~((<uint32_t>BOUNDARY_LAST) << MSG_BOUNDARY_SHIFT)
            idx = sndbuf_index(&c.snd, c.snd.count)
            slot = &c.snd.slots[idx]
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
            c.snd.slots[tail].msg_word |= (<uint32_t>BOUNDARY_LAST) << MSG_BOUNDARY_SHIFT
    if was_empty and c.snd.count > 0:
        c.snd_busy_since = now if now > 0 else 1
    return <ssize_t>done


cdef ssize_t _eof_or_wait(Conn* c) noexcept nogil:
    if c.peer_shutdown:
        return 0
    if c.state == STATE_BROKEN:
        return -(c.error if c.error != 0 else ERR_CONNECTION_BROKEN)
    if c.state == STATE_CLOSED or c.state == STATE_CLOSING:
        return 0
    if c.state != STATE_CONNECTED:
        return -ERR_NO_CONNECTION
    return -ERR_NO_DATA


cdef ssize_t conn_read(Conn* c, uint8_t* out, size_t cap, int64_t now) noexcept nogil:
    cdef size_t done = 0, n
    cdef RecvBuffer* b = &c.rcv
    cdef RecvSlot* slot
    if c.opts.sock_type != SOCK_TYPE_STREAM:
        return -ERR_NOT_STREAM_MODE
    if not c.buffers_ready:
        return _eof_or_wait(c)
    while done < cap and seq_off(b.read_seq, b.frontier_seq) > 0:
        slot = &b.slots[b.head]
        if slot.state != RSLOT_FILLED:
            rcvbuf_consume_head(b)
            continue
        n = <size_t>(slot.length - b.read_offset)
        if n > cap - done:
            n = cap - done
        memcpy(out + done, rcvbuf_payload(b, b.head) + b.read_offset, n)
        b.read_offset += <int32_t>n
        b.contiguous_bytes -= <int64_t>n
        done += n
        if b.read_offset >= slot.length:
            rcvbuf_consume_head(b)
    if done == 0 and cap > 0:
        return _eof_or_wait(c)
    return <ssize_t>done


cdef int64_t _message_at(Conn* c, int64_t off, int64_t limit, int64_t* npk) noexcept nogil:
    """Size of the complete message starting at offset off (within limit), or -1."""
    cdef RecvBuffer* b = &c.rcv
    cdef int64_t k = off, total = 0
    cdef int idx, bnd
    cdef int32_t msgno
    idx = rcvbuf_index(b, k)
    if b.slots[idx].state != RSLOT_FILLED:
        return -1
    bnd = msg_boundary(b.slots[idx].msg_word)
    if bnd != BOUNDARY_FIRST and bnd != BOUNDARY_SOLO:
        return -1
    msgno = msg_number(b.slots[idx].msg_word)
    while k < limit:
        idx = rcvbuf_index(b, k)
        if b.slots[idx].state != RSLOT_FILLED or msg_number(b.slots[idx].msg_word) != msgno:
            return -1
        total += b.slots[idx].length
        bnd = msg_boundary(b.slots[idx].msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            npk[0] = k - off + 1
            return total
        k += 1
    return -1


cdef void _skip_dead_head(Conn* c) noexcept nogil:
    """Message mode: consume dropped/taken slots and orphan fragments at the head."""
    cdef RecvBuffer* b = &c.rcv
    cdef int bnd
    cdef int32_t msgno
    while seq_off(b.read_seq, b.frontier_seq) > 0:
        if b.slots[b.head].state == RSLOT_FILLED:
            bnd = msg_boundary(b.slots[b.head].msg_word)
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
        if (b.slots[idx].state == RSLOT_FILLED and not (b.slots[idx].msg_word & MSG_INORDER_BIT)):
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
        n = <size_t>b.slots[idx].length
        if n > cap - done:
            n = cap - done
        if n > 0:
            memcpy(out + done, rcvbuf_payload(b, idx), n)
            done += n
        if from_head:
            rcvbuf_consume_head(b)
        else:
            b.slots[idx].state = RSLOT_TAKEN
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
    return <int64_t>(c.snd.capacity - c.snd.count) * c.payload_size


cdef int64_t conn_pending_send_bytes(Conn* c) noexcept nogil:
    return c.snd.bytes if c.buffers_ready else 0


cdef int conn_state(Conn* c) noexcept nogil:
    return c.state


cdef int conn_poll_events(Conn* c) noexcept nogil:
    cdef int ev = 0
    if c.state == STATE_CONNECTED:
        if conn_readable_bytes(c) > 0:
            ev |= 1
        if c.snd.count < c.snd.capacity:
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


cdef void conn_stats(Conn* c, Stats* out, bint clear, int64_t now) noexcept nogil:
    cdef Stats* s = &c.stats
    cdef Stats* z = &c.stats_at_clear
    cdef int64_t interval = now - c.last_clear_time
    cdef int64_t busy = s.us_snd_duration_total
    if c.snd_busy_since > 0:
        busy += now - c.snd_busy_since
    memcpy(out, s, sizeof(Stats))
    out.ms_timestamp = (now - c.start_time) // 1000
    out.us_snd_duration_total = busy
    out.pkt_sent = s.pkt_sent_total - z.pkt_sent_total
    out.pkt_recv = s.pkt_recv_total - z.pkt_recv_total
    out.pkt_snd_loss = s.pkt_snd_loss_total - z.pkt_snd_loss_total
    out.pkt_rcv_loss = s.pkt_rcv_loss_total - z.pkt_rcv_loss_total
    out.pkt_retrans = s.pkt_retrans_total - z.pkt_retrans_total
    out.pkt_sent_ack = s.pkt_sent_ack_total - z.pkt_sent_ack_total
    out.pkt_recv_ack = s.pkt_recv_ack_total - z.pkt_recv_ack_total
    out.pkt_sent_nak = s.pkt_sent_nak_total - z.pkt_sent_nak_total
    out.pkt_recv_nak = s.pkt_recv_nak_total - z.pkt_recv_nak_total
    out.us_snd_duration = busy - z.us_snd_duration_total
    if interval > 0:
        out.mbps_send_rate = <double>(s.bytes_sent_total - z.bytes_sent_total) * 8.0 / <double>interval
        out.mbps_recv_rate = <double>(s.bytes_recv_total - z.bytes_recv_total) * 8.0 / <double>interval
    else:
        out.mbps_send_rate = 0
        out.mbps_recv_rate = 0
    out.us_pkt_snd_period = _pacing_period(c)
    out.pkt_flow_window = c.flow_window
    out.pkt_congestion_window = <int64_t>c.cc.cwnd
    out.pkt_flight_size = seq_off(c.snd_last_ack, c.snd_next_seq) if _is_live(c) else 0
    out.ms_rtt = c.rtt_us / 1000.0
    out.mbps_bandwidth = <double>c.bandwidth * c.payload_size * 8.0 / 1e6
    if c.buffers_ready:
        out.byte_avail_snd_buf = <int64_t>(c.snd.capacity - c.snd.count) * c.payload_size
        out.byte_avail_rcv_buf = (c.rcv.capacity - seq_off(c.rcv.read_seq, c.rcv.frontier_seq)) \
            * <int64_t>c.rcv.slot_size
    else:
        out.byte_avail_snd_buf = 0
        out.byte_avail_rcv_buf = 0
    if clear:
        memcpy(z, s, sizeof(Stats))
        z.us_snd_duration_total = busy
        c.last_clear_time = now


# Names of the InvalidReason enum (_core.pxd), indexed by its values: the one place they are
# spelled (perfmon keys invalid_<name>, packet_peek's errors in the test shim).
INVALID_REASONS = (
    "too_short", "control_type", "length", "handshake", "ack_range", "nak_range", "ack2",
    "data_seq", "data_length", "drop_request", "state", "wrong_peer", "cookie", "buffer_full",
)


cdef dict stats_dict(const Stats* s):
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
    cdef int64_t total = 0
    cdef int i
    for i in range(INVALID_REASON_COUNT):
        result["invalid_" + INVALID_REASONS[i]] = s.invalid[i]
        total += s.invalid[i]
    result["invalid_total"] = total
    return result


# ---------------------------------------------------------------------------------------------
# Listener
# ---------------------------------------------------------------------------------------------
cdef uint32_t _cookie(Listener* lst, const sockaddr_storage* peer, int64_t slice_no) noexcept nogil:
    cdef uint8_t msg[28]
    cdef uint16_t port = address_port(peer)
    cdef int i
    cdef uint32_t v
    memset(msg, 0, 28)
    msg[0] = <uint8_t>(peer.ss_family & 0xFF)
    msg[1] = <uint8_t>(port & 0xFF)
    msg[2] = <uint8_t>(port >> 8)
    address_bytes(peer, msg + 4)
    for i in range(8):
        msg[20 + i] = <uint8_t>((<uint64_t>slice_no) >> (8 * i))
    v = <uint32_t>siphash24(lst.key, msg, 28)
    return v if v != 0 else 1


cdef void listener_init(Listener* lst, const uint8_t* key, int sock_type, int mss,
                        int flight_flag_size, int64_t now) noexcept nogil:
    memset(lst, 0, sizeof(Listener))
    memcpy(lst.key, key, 16)
    lst.start_time = now
    lst.slice_us = 60000000
    lst.sock_type = sock_type
    lst.mss = mss
    lst.flight_flag_size = flight_flag_size


cdef inline int64_t _slice(Listener* lst, int64_t now) noexcept nogil:
    cdef int64_t span = lst.slice_us if lst.slice_us > 0 else 60000000
    return (now - lst.start_time) // span


cdef int listener_on_handshake(Listener* lst, const uint8_t* buf, size_t length,
                               const sockaddr_storage* peer, int64_t now, uint8_t* out,
                               size_t cap, size_t* out_len, AcceptRequest* req) noexcept nogil:
    cdef Handshake hs
    cdef int64_t sl
    out_len[0] = 0
    if length < HEADER_SIZE:
        lst.invalid[INVALID_TOO_SHORT] += 1
        return LISTENER_DROP
    if (get_u32(buf) & CONTROL_FLAG) == 0 or ((get_u32(buf) >> 16) & 0x7FFF) != PKT_HANDSHAKE:
        lst.invalid[INVALID_STATE] += 1
        return LISTENER_DROP
    if length != HANDSHAKE_SIZE:
        lst.invalid[INVALID_HANDSHAKE] += 1
        return LISTENER_DROP
    if cap < HANDSHAKE_SIZE:
        return LISTENER_DROP
    handshake_decode(buf + HEADER_SIZE, &hs)
    if hs.socket_id == 0 or hs.isn < 0:
        lst.invalid[INVALID_HANDSHAKE] += 1
        return LISTENER_DROP
    sl = _slice(lst, now)
    if hs.req_type == REQ_INDUCTION:
        lst.inductions += 1
        hs.cookie = _cookie(lst, peer, sl)
        handshake_encode(out, &hs, hs.socket_id)
        out_len[0] = HANDSHAKE_SIZE
        return LISTENER_REPLY
    if hs.req_type != REQ_CONCLUSION:
        lst.invalid[INVALID_STATE] += 1
        return LISTENER_DROP
    if hs.cookie != _cookie(lst, peer, sl) and hs.cookie != _cookie(lst, peer, sl - 1):
        lst.invalid[INVALID_COOKIE] += 1
        return LISTENER_DROP
    if hs.version != UDT_VERSION or hs.sock_type != lst.sock_type or hs.mss < MIN_MSS:
        lst.rejected += 1
        hs.req_type = REQ_REJECTED
        handshake_encode(out, &hs, hs.socket_id)
        out_len[0] = HANDSHAKE_SIZE
        return LISTENER_REPLY
    memset(req, 0, sizeof(AcceptRequest))
    req.peer_socket_id = hs.socket_id
    req.isn = hs.isn
    req.mss = hs.mss if hs.mss < lst.mss else lst.mss
    req.peer_flight_flag_size = hs.flight_flag_size
    req.sock_type = hs.sock_type
    req.cookie = hs.cookie
    memcpy(req.self_ip, hs.peer_ip, 16)
    memcpy(&req.peer_addr, peer, sizeof(sockaddr_storage))
    lst.accepted += 1
    return LISTENER_ACCEPT


cdef ssize_t listener_reject(Listener* lst, const AcceptRequest* req, uint8_t* out, size_t cap) noexcept nogil:
    cdef Handshake hs
    if cap < HANDSHAKE_SIZE:
        return -ERR_NO_SEND_BUFFER
    hs.version = UDT_VERSION
    hs.sock_type = req.sock_type
    hs.isn = req.isn
    hs.mss = req.mss
    hs.flight_flag_size = lst.flight_flag_size
    hs.req_type = REQ_REJECTED
    hs.socket_id = req.peer_socket_id
    hs.cookie = req.cookie
    address_bytes(&req.peer_addr, hs.peer_ip)
    lst.rejected += 1
    return <ssize_t>handshake_encode(out, &hs, req.peer_socket_id)


# ---------------------------------------------------------------------------------------------
# packet_peek
# ---------------------------------------------------------------------------------------------
cdef int packet_peek(const uint8_t* buf, size_t length, PacketInfo* info) noexcept nogil:
    cdef uint32_t w0
    cdef int t
    memset(info, 0, sizeof(PacketInfo))
    if length < HEADER_SIZE:
        return -1 - INVALID_TOO_SHORT
    w0 = get_u32(buf)
    info.dst_id = get_u32(buf + 12)
    if (w0 & CONTROL_FLAG) == 0:
        info.kind = PKT_DATA
        info.seq = <int32_t>(w0 & SEQ_MAX)
        if length == HEADER_SIZE:
            return -1 - INVALID_DATA_LENGTH
        return 0
    t = <int>((w0 >> 16) & 0x7FFF)
    info.kind = t
    if t > PKT_ERROR_SIGNAL and t != PKT_USER_DEFINED:
        return -1 - INVALID_CONTROL_TYPE
    if t == PKT_HANDSHAKE:
        if length != HANDSHAKE_SIZE:
            return -1 - INVALID_HANDSHAKE
        info.hs_sock_type = <int>get_u32(buf + HEADER_SIZE + 4)
        info.hs_req_type = <int32_t>get_u32(buf + HEADER_SIZE + 20)
        info.hs_socket_id = get_u32(buf + HEADER_SIZE + 24)
    return 0


cdef ssize_t shutdown_packet(uint32_t peer_socket_id, uint8_t* out, size_t cap) noexcept nogil:
    if cap < HEADER_SIZE + 4:
        return -ERR_NO_SEND_BUFFER
    return <ssize_t>put_control(out, PKT_SHUTDOWN, 0, peer_socket_id)
