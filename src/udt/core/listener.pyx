# cython: language_level=3
"""The stateless listener (SipHash cookie, induction, conclusion, rejection) and the two
Conn-less helpers of the multiplexer: packet_peek and shutdown_packet."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from udt._net cimport sockaddr_storage

from udt._core cimport (ERR_NO_SEND_BUFFER, HANDSHAKE_MAX_OUT, HANDSHAKE_SIZE, HEADER_SIZE, INVALID_CONTROL_TYPE,
                        INVALID_COOKIE, INVALID_DATA_LENGTH, INVALID_HANDSHAKE, INVALID_STATE,
                        INVALID_TOO_SHORT, LISTENER_ACCEPT, LISTENER_DROP, LISTENER_REPLY,
                        MIN_MSS, PKT_DATA, PKT_ERROR_SIGNAL, PKT_HANDSHAKE, PKT_SHUTDOWN,
                        PKT_USER_DEFINED, REQ_CONCLUSION, REQ_INDUCTION, REQ_REJECTED,
                        UDT_VERSION, AcceptRequest, Listener, PacketInfo)
from udt.core.packet cimport (CONTROL_FLAG, Handshake, address_bytes, address_port, get_u32,
                              handshake_decode, handshake_encode, put_control, put_u32)
from udt.core.seq cimport SEQ_MAX
from udt.core.siphash cimport siphash24
from udt.core.hsext cimport HSEXT_MAGIC, HSEXT_MAX_SIZE, hsext_decode, hsext_find_crypto, hsext_find_max_mss


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
    cdef uint32_t caps
    cdef int ext
    cdef bint offered
    if length < HANDSHAKE_SIZE or length > HANDSHAKE_SIZE + HSEXT_MAX_SIZE:
        lst.invalid[INVALID_HANDSHAKE] += 1
        return LISTENER_DROP
    if cap < HANDSHAKE_MAX_OUT:
        return LISTENER_DROP
    ext = hsext_decode(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE, &caps)
    if ext < 0:
        lst.invalid[INVALID_HANDSHAKE] += 1
        return LISTENER_DROP
    handshake_decode(buf + HEADER_SIZE, &hs)
    if hs.socket_id == 0 or hs.isn < 0:
        lst.invalid[INVALID_HANDSHAKE] += 1
        return LISTENER_DROP
    sl = _slice(lst, now)
    if hs.req_type == REQ_INDUCTION:
        lst.inductions += 1
        # a udt client's offer (UDT4 and SRT send cookie 0).  The answer is the request's own
        # size (no amplification for a spoofed source: protocol.md §11), so instead of the
        # trailer it carries the mark in header word 1, which UDT4 and SRT echo as 0
        offered = hs.cookie == HSEXT_MAGIC
        hs.cookie = _cookie(lst, peer, sl)
        out_len[0] = handshake_encode(out, &hs, hs.socket_id)
        if offered:
            put_u32(out + 4, HSEXT_MAGIC)
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
    req.ext = ext == 1
    req.peer_caps = caps
    req.crypto_offered = req.ext and hsext_find_crypto(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE,
                                                       req.crypto_offer)
    if req.ext:
        req.peer_pmtud_max = <int>hsext_find_max_mss(buf + HANDSHAKE_SIZE, length - HANDSHAKE_SIZE)
    lst.accepted += 1
    return LISTENER_ACCEPT


cdef ssize_t listener_reject(Listener* lst, const AcceptRequest* req, uint8_t* out, size_t cap) noexcept nogil:
    return listener_refuse(lst, req, REQ_REJECTED, out, cap)


cdef ssize_t listener_refuse(Listener* lst, const AcceptRequest* req, int req_type, uint8_t* out,
                             size_t cap) noexcept nogil:
    cdef Handshake hs
    if cap < HANDSHAKE_SIZE:
        return -ERR_NO_SEND_BUFFER
    hs.version = UDT_VERSION
    hs.sock_type = req.sock_type
    hs.isn = req.isn
    hs.mss = req.mss
    hs.flight_flag_size = lst.flight_flag_size
    hs.req_type = req_type
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
        if length < HANDSHAKE_SIZE or length > HANDSHAKE_SIZE + HSEXT_MAX_SIZE:
            return -1 - INVALID_HANDSHAKE
        info.hs_sock_type = <int>get_u32(buf + HEADER_SIZE + 4)
        info.hs_req_type = <int32_t>get_u32(buf + HEADER_SIZE + 20)
        info.hs_socket_id = get_u32(buf + HEADER_SIZE + 24)
    return 0


cdef ssize_t shutdown_packet(uint32_t peer_socket_id, uint8_t* out, size_t cap) noexcept nogil:
    if cap < HEADER_SIZE + 4:
        return -ERR_NO_SEND_BUFFER
    return <ssize_t>put_control(out, PKT_SHUTDOWN, 0, peer_socket_id)
