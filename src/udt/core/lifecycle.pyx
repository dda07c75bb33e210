# cython: language_level=3
"""Connection lifecycle: options, init/free, connect, accept, the handshake step table, close
and abort.  Called by the packet paths (_core.pyx) once per handshake; it never calls them."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from udt._net cimport sockaddr_storage

from udt._core cimport (DEFAULT_BUFFER_PACKETS, DEFAULT_FLIGHT_FLAG_SIZE, DEFAULT_MSS,
                        ERR_ALREADY_CONNECTED, ERR_BAD_PARAMETER, ERR_INVALID_OPERATION,
                        ERR_NO_CONNECTION, ERR_NO_MEMORY, ERR_NO_SEND_BUFFER, ERR_REJECTED,
                        ERR_SECURITY_FAILURE, EV_CLOSED, EV_CONNECTED, EV_WANT_TRANSMIT,
                        EV_WRITABLE, HANDSHAKE_MAX_OUT, HANDSHAKE_SIZE, HEADER_SIZE,
                        INVALID_HANDSHAKE, INVALID_STATE, INVALID_WRONG_PEER,
                        IP_UDP_OVERHEAD, IP_UDP_OVERHEAD_V6, MIN_FLIGHT_FLAG_SIZE, MIN_MSS,
                        REQ_CONCLUSION, REQ_CRYPTO_BAD_ANSWER, REQ_CRYPTO_PLAIN_PEER, REQ_FAILURE_FIRST,
                        REQ_INDUCTION, REQ_RENDEZVOUS,
                        REQ_RENDEZVOUS_AGREEMENT, SOCK_TYPE_DGRAM, SOCK_TYPE_STREAM, STATE_CLOSED,
                        STATE_CLOSING, STATE_CONNECTED, STATE_CONNECTING, STATE_NONEXIST,
                        STATE_OPENED, UDT_VERSION, PMTUD_FRAG_HEADER, PMTUD_FRAG_MAX, PMTUD_MAX_MSS, AcceptRequest,
                        Conn, ConnOptions)
from udt.core.buffers cimport BUFFER_CHUNK_PACKETS, rcvbuf_alloc, rcvbuf_free, sndbuf_alloc, sndbuf_free
from udt.core.cc cimport native_cc_ops
from udt.core.fragments cimport frags_free
from udt.core.hsext cimport (CAP_HALF_CLOSE, CAP_PMTUD, CAP_PMTUD_FRAGMENTS, CAPS_LOCAL, HSEXT_MAGIC, HSEXT_MAX_SIZE,
                             hsext_add_max_mss, hsext_decode, hsext_encode, hsext_encode_crypto,
                             hsext_find_crypto, hsext_find_max_mss)
from udt.core.losslist cimport losslist_alloc, losslist_clear, losslist_free
from udt.core.packet cimport (AF_INET6_VALUE, AF_INET_VALUE, Handshake, get_u32, handshake_decode,
                              handshake_encode)
from udt.core.seq cimport SEQ_MAX, seq_dec
from udt.core.siphash cimport splitmix64
from udt.core.connutil cimport (CONNECT_TIMEOUT_US, DEFAULT_BROKEN_US, DEFAULT_LINGER_US,
                                INITIAL_RTTVAR_US, INITIAL_RTT_US, RENDEZVOUS_TIMEOUT_US, SYN_US,
                                _cc_after, _cc_sync_inputs, _close_may_finish, _connect_failed,
                                _fill_handshake, _finish_close, _invalid, _is_live, _nak_interval,
                                _peer_alive)


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
    cdef int64_t fits
    memset(c, 0, sizeof(Conn))
    if (opts.mss < MIN_MSS or opts.mss > 65535
            or (opts.sock_type != SOCK_TYPE_STREAM and opts.sock_type != SOCK_TYPE_DGRAM)
            or opts.flight_flag_size < MIN_FLIGHT_FLAG_SIZE
            or opts.snd_buf_packets < 2 or opts.rcv_buf_packets < 2
            or opts.snd_buf_packets > (1 << 28) or opts.rcv_buf_packets > (1 << 28)):
        c.state = STATE_NONEXIST
        return -ERR_BAD_PARAMETER
    c.opts = opts[0]
    if c.opts.pmtud_max_mss > PMTUD_MAX_MSS:
        c.opts.pmtud_max_mss = PMTUD_MAX_MSS
    # the rings' bytes (UDT_SNDBUF/UDT_RCVBUF) must hold a chunk of packets at the grown size;
    # what TLV 3 offers is that limit, so both sides agree on the ceiling (a side that lowered
    # it only after the handshake refused the peer's bigger probes as invalid: the peer then
    # crawled down from a ceiling it could never reach)
    fits = <int64_t>(opts.snd_buf_packets if opts.snd_buf_packets < opts.rcv_buf_packets
                     else opts.rcv_buf_packets) \
        * (c.opts.mss - IP_UDP_OVERHEAD - HEADER_SIZE) // BUFFER_CHUNK_PACKETS + IP_UDP_OVERHEAD + HEADER_SIZE
    if c.opts.pmtud_max_mss > fits:
        c.opts.pmtud_max_mss = <int>fits
    if c.opts.pmtud_max_mss <= c.opts.mss:
        c.opts.pmtud_max_mss = 0            # nothing to discover above the handshake's MSS
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
    frags_free(&c.frags)
    if c.state != STATE_NONEXIST:
        c.state = STATE_CLOSED


cdef int _alloc_buffers(Conn* c, int32_t first_rcv_seq) noexcept nogil:
    cdef int slot = c.opts.mss - IP_UDP_OVERHEAD - HEADER_SIZE
    if c.buffers_ready:
        return 0
    # the rings' geometry only: their memory comes in chunks as data needs it (buffers.pxd)
    if sndbuf_alloc(&c.snd, c.opts.snd_buf_packets, c.opts.buf_initial_packets, slot) < 0:
        return -ERR_NO_MEMORY
    if rcvbuf_alloc(&c.rcv, c.opts.rcv_buf_packets, c.opts.buf_initial_packets, slot,
                    first_rcv_seq) < 0:
        sndbuf_free(&c.snd)
        return -ERR_NO_MEMORY
    # loss lists start small and double up to these bounds (losslist.pxd)
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


cdef void _pmtud_negotiate(Conn* c) noexcept nogil:
    """Both udt, both offered discovery (CAP_PMTUD and TLV 3): the ceiling is the smaller
    maximum and the first probe is due (protocol.md §13).  Otherwise the MSS stays the
    handshake's.  The rings keep their slot size: it grows with the MSS, chunk by chunk."""
    cdef int top = c.opts.pmtud_max_mss     # what our TLV 3 offered (conn_init bounds it)
    c.pmtud_max = 0
    c.pmtud_base_mss = c.mss
    cdef int64_t fits
    if c.peer_pmtud_max < top:
        top = c.peer_pmtud_max
    if not (c.caps & CAP_PMTUD) or top <= c.mss or not c.buffers_ready:
        c.caps &= ~(<uint32_t>(CAP_PMTUD | CAP_PMTUD_FRAGMENTS))
        return
    c.pmtud_max = top
    # the black-hole fallback's fragments (protocol.md §13): a packet at the ceiling must go in
    # at most PMTUD_FRAG_MAX of them at the base MSS, else there is no fallback but a smaller MSS
    fits = <int64_t>PMTUD_FRAG_MAX * (c.mss - (IP_UDP_OVERHEAD_V6 if c.is_ipv6 else IP_UDP_OVERHEAD)
                                      - PMTUD_FRAG_HEADER)
    if fits < top - IP_UDP_OVERHEAD - HEADER_SIZE:
        c.caps &= ~(<uint32_t>CAP_PMTUD_FRAGMENTS)
    c.pmtud_fragments = (c.caps & CAP_PMTUD_FRAGMENTS) != 0
    # a server waits for the client's first packet after the handshake: its probe must not reach
    # a client still busy with the conclusion answer (lost probes would fail the size for good)
    c.pmtud_wait_peer = c.is_server
    c.pmtud_probe_due = not c.is_server


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
    c.caps = c.peer_caps & CAPS_LOCAL
    _pmtud_negotiate(c)
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
    c.hs_sent = 0
    if c.opts.connect_timeout_us > 0:
        c.connect_deadline = now + c.opts.connect_timeout_us
    else:
        c.connect_deadline = now + (RENDEZVOUS_TIMEOUT_US if c.rendezvous else CONNECT_TIMEOUT_US)
    _set_mss(c, c.opts.mss)
    c.state = STATE_CONNECTING
    return 0


cdef ssize_t conn_accept(Conn* c, const AcceptRequest* req, int64_t now, uint8_t* out,
                         size_t cap) noexcept nogil:
    cdef Handshake hs
    cdef int rc
    if c.state != STATE_OPENED:
        return -ERR_INVALID_OPERATION
    if cap < HANDSHAKE_MAX_OUT:
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
    c.peer_caps = req.peer_caps if req.ext else 0
    c.peer_pmtud_max = req.peer_pmtud_max if req.ext else 0
    rc = _alloc_buffers(c, req.isn)
    if rc < 0:
        return rc
    cdef int mss = req.mss if req.mss < c.opts.mss else c.opts.mss
    _established(c, now, req.isn, req.peer_flight_flag_size, mss)
    _fill_handshake(c, &hs, REQ_CONCLUSION)
    hs.mss = mss
    c.hs_response_len = <int>handshake_encode(c.hs_response, &hs, c.peer_socket_id)
    if req.ext and c.crypto_answer_set:  # the key exchange's second half (protocol.md §12)
        c.hs_response_len += <int>hsext_encode_crypto(c.hs_response + HANDSHAKE_SIZE, CAPS_LOCAL,
                                                      c.crypto_answer)
    elif req.ext:                        # a udt client: answer its offer (a plain one never sees it)
        c.hs_response_len += <int>hsext_encode(c.hs_response + HANDSHAKE_SIZE, CAPS_LOCAL)
    if req.ext and c.peer_pmtud_max > 0:  # answered only when offered: never longer than the request
        c.hs_response_len = HANDSHAKE_SIZE + <int>hsext_add_max_mss(
            c.hs_response + HANDSHAKE_SIZE, c.hs_response_len - HANDSHAKE_SIZE, <uint32_t>c.opts.pmtud_max_mss)
    c.hs_response_valid = True
    memcpy(out, c.hs_response, c.hs_response_len)
    return c.hs_response_len


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


cdef int conn_shutdown_write(Conn* c, int64_t now) noexcept nogil:
    if c.state != STATE_CONNECTED or c.closing:
        return -ERR_NO_CONNECTION
    if not (c.caps & CAP_HALF_CLOSE):
        return -ERR_INVALID_OPERATION
    if not c.wr_shut:
        c.wr_shut = True
        c.eof_next_time = now
    return 0


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
        c.cc.max_bw_period_us = 1e6 * <double>c.mss / <double>bytes_per_second  # c.mss: it may grow
    else:
        c.cc.max_bw_period_us = 0


# ---------------------------------------------------------------------------------------------
# Handshakes (the packet paths hand every handshake datagram to conn_on_handshake)
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
        if c.opts.crypto and not hs.ext:    # a UDT4/SRT listener: never fall back to plaintext
            c.reject_req_type = REQ_CRYPTO_PLAIN_PEER
            return _connect_failed(c, ERR_REJECTED)
        c.hs_cookie = hs.cookie
        c.hs_ext_seen = hs.ext              # a udt listener: our conclusion carries the offer
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
        c.peer_caps = hs.ext_caps if hs.ext else 0
        if c.opts.crypto:                   # keys agreed before the connection exists (§12)
            if not c.crypto_answer_set:
                c.reject_req_type = REQ_CRYPTO_PLAIN_PEER
                return _connect_failed(c, ERR_REJECTED)
            if c.opts.crypto_check == NULL or c.opts.crypto_check(c.opts.crypto_user, c.crypto_answer) != 0:
                c.reject_req_type = REQ_CRYPTO_BAD_ANSWER
                return _connect_failed(c, ERR_REJECTED)
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
        return conn_rendezvous_complete(c, now, False)
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
    c.peer_caps = hs.ext_caps if hs.ext else 0
    memcpy(c.peer_ip, hs.peer_ip, 16)
    if c.hs_req_type == REQ_RENDEZVOUS or hs.req_type == REQ_RENDEZVOUS:
        c.hs_req_type = REQ_CONCLUSION
        c.hs_next_time = now
        return EV_WANT_TRANSMIT
    return conn_rendezvous_complete(c, now, hs.req_type == REQ_CONCLUSION)


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


cdef uint32_t conn_on_handshake(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil:
    cdef Handshake hs
    cdef int role, phase
    cdef HandshakeStep step
    cdef int ext
    if length < HANDSHAKE_SIZE or length > HANDSHAKE_SIZE + HSEXT_MAX_SIZE:
        _invalid(c, INVALID_HANDSHAKE)
        return 0
    ext = hsext_decode(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE, &hs.ext_caps)
    if ext < 0:
        _invalid(c, INVALID_HANDSHAKE)
        return 0
    hs.ext = ext == 1
    if hs.ext and c.state == STATE_CONNECTING:
        c.peer_pmtud_max = <int>hsext_find_max_mss(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE)
    if c.opts.crypto and not c.is_server and c.state == STATE_CONNECTING:
        c.crypto_answer_set = hs.ext and hsext_find_crypto(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE,
                                                           c.crypto_answer)
    handshake_decode(buf + HEADER_SIZE, &hs)
    if hs.req_type == REQ_INDUCTION and get_u32(buf + 4) == HSEXT_MAGIC:
        hs.ext = True                       # a udt listener's mark: its answer is request-sized
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


cdef uint32_t conn_rendezvous_complete(Conn* c, int64_t now, bint answer) noexcept nogil:
    cdef Handshake hs
    cdef int mss = c.peer_mss if c.peer_mss < c.opts.mss else c.opts.mss
    cdef uint32_t ev = _established(c, now, c.peer_isn, c.peer_flight_flag_size, mss)
    _fill_handshake(c, &hs, REQ_RENDEZVOUS_AGREEMENT)
    c.hs_response_len = <int>handshake_encode(c.hs_response, &hs, c.peer_socket_id)
    c.hs_response_valid = True
    if answer:
        c.hs_reply_due = True
    return ev
