# cython: language_level=3
"""Test-only shim: drives one engine (Endpoint) or a listener (ListenerShim) with bytes and an
explicit ``now``, plus codec helpers and the engine-only benchmark.

Only tests import it; the socket layer uses the engine's C API (``udt/core/engine.pxd``), which is also
all this module reaches the engine through.  Not a public API.
"""
import socket as _pysocket

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from udt._net cimport htons, sockaddr_storage, sockaddr_in, sockaddr_in6
from udt.core.engine cimport (
    DEFAULT_BUFFER_PACKETS, EV_BROKEN, EV_CLOSED, EV_CONNECT_FAILED, EV_CONNECTED, EV_PEER_ERROR,
    EV_PEER_SHUTDOWN, EV_READABLE, EV_WANT_TRANSMIT, EV_WRITABLE, HANDSHAKE_MAX_OUT, HANDSHAKE_SIZE,
    HEADER_SIZE,
    INVALID_ACK2, INVALID_ACK_RANGE, INVALID_BUFFER_FULL, INVALID_CONTROL_TYPE, INVALID_COOKIE,
    INVALID_DATA_LENGTH, INVALID_DATA_SEQ, INVALID_DROP_REQUEST, INVALID_HANDSHAKE, INVALID_LENGTH,
    INVALID_NAK_RANGE, INVALID_REASON_COUNT, INVALID_STATE, INVALID_TOO_SHORT, INVALID_WRONG_PEER,
    LISTENER_ACCEPT, LISTENER_DROP, LISTENER_REPLY, PKT_HANDSHAKE, SOCK_TYPE_STREAM, STATE_BROKEN,
    STATE_CLOSED, STATE_CLOSING, STATE_CONNECTED, STATE_CONNECTING, STATE_INIT, STATE_LISTENING,
    STATE_NONEXIST, STATE_OPENED, AcceptRequest, Conn, ConnOptions, Listener, LossList,
    PacketInfo, Stats, conn_abort, conn_accept, conn_close, conn_connect, conn_free, conn_init,
    conn_next_datagram, conn_next_datagram_zc, conn_next_send_time, conn_next_timer,
    conn_on_datagram, conn_on_timer, conn_options_default, conn_pending_send_bytes,
    conn_poll_events, conn_read, conn_read_message, conn_readable_bytes, conn_set_max_bandwidth,
    conn_shutdown_write, conn_stats, conn_writable_bytes, conn_write, listener_init, listener_on_handshake,
    listener_reject, packet_peek, python_cc_ops, stats_dict)
from udt.core.ccnames cimport native_cc_by_name
from udt.core.ccapi cimport CCState
from udt.core.buffers cimport sndbuf_alloc, sndbuf_append, sndbuf_free, sndbuf_index, sndbuf_payload, sndbuf_release
from udt._core cimport SendBuffer, SendSlot
from udt.core.losslist cimport (losslist_alloc, losslist_contains, losslist_free, losslist_insert,
                                losslist_pop_first, losslist_remove, losslist_remove_before,
                                losslist_remove_range)
from udt.core.packet cimport (AF_INET6_VALUE, AF_INET_VALUE, CONTROL_FLAG, MSG_INORDER_BIT,
                              MSG_NUMBER_MASK, Handshake, control_word0, get_u32,
                              handshake_decode, handshake_encode, msg_word, put_header)
from udt.core.seq cimport SEQ_MAX, msgno_inc, seq_add, seq_cmp, seq_off
from udt.core.siphash cimport siphash24
from udt.core.hsext cimport (CAP_HALF_CLOSE, CAP_PMTUD, CAP_PMTUD_FRAGMENTS, CAPS_LOCAL, HSEXT_SIZE,
                             hsext_decode, hsext_encode)

from udt._core import INVALID_REASONS

cdef enum:
    SHIM_OUT_SIZE = 65536


cdef int _to_sockaddr(object address, sockaddr_storage* out) except -1:
    cdef sockaddr_in* a4
    cdef sockaddr_in6* a6
    cdef bytes packed
    host, port = address[0], int(address[1])
    memset(out, 0, sizeof(sockaddr_storage))
    if ":" in host:
        packed = _pysocket.inet_pton(_pysocket.AF_INET6, host)
        a6 = <sockaddr_in6*>out
        a6.sin6_family = AF_INET6_VALUE
        a6.sin6_port = htons(port)
        memcpy(&a6.sin6_addr, <const char*>packed, 16)
    else:
        packed = _pysocket.inet_pton(_pysocket.AF_INET, host)
        a4 = <sockaddr_in*>out
        a4.sin_family = AF_INET_VALUE
        a4.sin_port = htons(port)
        memcpy(&a4.sin_addr, <const char*>packed, 4)
    return 0


cdef class AcceptedRequest:
    """A listener's AcceptRequest, handed to Endpoint.accept."""
    cdef AcceptRequest req

    @property
    def peer_socket_id(self):
        return self.req.peer_socket_id

    @property
    def isn(self):
        return self.req.isn

    @property
    def mss(self):
        return self.req.mss

    @property
    def sock_type(self):
        return self.req.sock_type

    @property
    def peer_flight_flag_size(self):
        return self.req.peer_flight_flag_size

    @property
    def self_ip(self):
        return bytes(self.req.self_ip[:16])


cdef class ListenerShim:
    """The stateless listener driven with bytes: handle() -> (verdict, reply, request)."""
    cdef Listener lst
    cdef uint8_t out[HANDSHAKE_MAX_OUT]

    def __cinit__(self, bytes key=b"k" * 16, int sock_type=1, int mss=1500, int ffs=8192,
                  int64_t now=0, int64_t slice_us=0):
        if len(key) != 16:
            raise ValueError("key must be 16 bytes")
        listener_init(&self.lst, <const uint8_t*><const char*>key, sock_type, mss, ffs, now)
        if slice_us > 0:
            self.lst.slice_us = slice_us

    def handle(self, bytes data, object peer, int64_t now):
        cdef sockaddr_storage addr
        cdef size_t out_len = 0
        cdef AcceptedRequest req = AcceptedRequest()
        _to_sockaddr(peer, &addr)
        verdict = listener_on_handshake(&self.lst, <const uint8_t*><const char*>data, len(data),
                                        &addr, now, self.out, HANDSHAKE_MAX_OUT, &out_len, &req.req)
        reply = bytes(self.out[:out_len]) if out_len else None
        return verdict, reply, (req if verdict == LISTENER_ACCEPT else None)

    def reject(self, AcceptedRequest req):
        n = listener_reject(&self.lst, &req.req, self.out, HANDSHAKE_MAX_OUT)
        return bytes(self.out[:n])

    @property
    def invalid(self):
        return {INVALID_REASONS[i]: self.lst.invalid[i] for i in range(INVALID_REASON_COUNT)}

    @property
    def accepted(self):
        return self.lst.accepted

    @property
    def rejected(self):
        return self.lst.rejected

    @property
    def inductions(self):
        return self.lst.inductions


cdef class Endpoint:
    """One engine connection driven with bytes and an explicit fake clock (µs)."""
    cdef Conn* c
    cdef uint8_t* out
    cdef object _cc

    def __cinit__(self, uint32_t socket_id=1, *, int64_t now=0, int mss=1500, int sock_type=1,
                  bint rendezvous=False, int snd_buf=8192, int rcv_buf=8192, int ffs=25600,
                  int buf_initial=0,
                  int64_t broken_timeout_us=0, int64_t linger_us=3000000,
                  int64_t msg_ttl_us=-1, int64_t max_bandwidth=-1, uint64_t seed=1,
                  object cc=None, int64_t connect_timeout_us=0, int pmtud_max_mss=0):
        cdef ConnOptions opts
        conn_options_default(&opts)
        opts.mss = mss
        opts.sock_type = sock_type
        opts.rendezvous = rendezvous
        opts.snd_buf_packets = snd_buf
        opts.rcv_buf_packets = rcv_buf
        opts.flight_flag_size = ffs
        opts.buf_initial_packets = buf_initial
        if broken_timeout_us > 0:
            opts.broken_timeout_us = broken_timeout_us
        opts.linger_us = linger_us
        opts.msg_ttl_us = msg_ttl_us
        opts.max_bandwidth = max_bandwidth
        opts.random_seed = seed
        opts.connect_timeout_us = connect_timeout_us
        opts.pmtud_max_mss = pmtud_max_mss
        if isinstance(cc, str):
            opts.cc_ops = native_cc_by_name(cc)
            if opts.cc_ops == NULL:
                raise ValueError(f"unknown congestion control {cc!r}")
        elif cc is not None:
            opts.cc_ops = python_cc_ops()
            opts.cc_user = <void*>cc
            self._cc = cc
        self.c = <Conn*>calloc(1, sizeof(Conn))
        self.out = <uint8_t*>malloc(SHIM_OUT_SIZE)
        if self.c == NULL or self.out == NULL:
            raise MemoryError()
        rc = conn_init(self.c, &opts, socket_id, now)
        if rc < 0:
            raise ValueError(f"conn_init failed: {-rc}")

    def __dealloc__(self):
        if self.c != NULL:
            conn_free(self.c)
            free(self.c)
            self.c = NULL
        free(self.out)
        self.out = NULL

    def connect(self, object address, int64_t now, isn=None):
        cdef sockaddr_storage addr
        _to_sockaddr(address, &addr)
        rc = conn_connect(self.c, &addr, now)
        if rc < 0:
            raise OSError(-rc, "conn_connect failed")
        if isn is not None:
            self.c.isn = <int32_t>isn
        return rc

    def accept(self, AcceptedRequest req, int64_t now):
        n = conn_accept(self.c, &req.req, now, self.out, SHIM_OUT_SIZE)
        if n < 0:
            return int(n)
        return bytes(self.out[:n])

    def receive(self, const uint8_t[:] data, int64_t now):
        if data.shape[0] == 0:
            return conn_on_datagram(self.c, self.out, 0, now)
        return conn_on_datagram(self.c, &data[0], data.shape[0], now)

    def next_datagram(self, int64_t now):
        n = conn_next_datagram(self.c, now, self.out, SHIM_OUT_SIZE)
        if n < 0:
            raise OSError(-n, "conn_next_datagram failed")
        return bytes(self.out[:n]) if n > 0 else None

    def next_datagram_zc(self, int64_t now):
        cdef const uint8_t* payload
        cdef size_t plen
        n = conn_next_datagram_zc(self.c, now, self.out, SHIM_OUT_SIZE, &payload, &plen)
        if n <= 0:
            return None
        return bytes(self.out[:n]), (bytes(payload[:plen]) if plen else b"")

    def next_send_time(self, int64_t now):
        return conn_next_send_time(self.c, now)

    def next_timer(self):
        return conn_next_timer(self.c)

    def on_timer(self, int64_t now):
        return conn_on_timer(self.c, now)

    def write(self, const uint8_t[:] data, int64_t now, int64_t ttl_us=-1, bint inorder=True):
        if data.shape[0] == 0:
            return conn_write(self.c, self.out, 0, ttl_us, inorder, now)
        return conn_write(self.c, &data[0], data.shape[0], ttl_us, inorder, now)

    def read(self, size_t n, int64_t now):
        """bytes read, or a negative UDT error code."""
        buf = bytearray(n)
        cdef uint8_t* p = buf
        r = conn_read(self.c, p, n, now)
        if r < 0:
            return int(r)
        return bytes(buf[:r])

    def read_message(self, size_t n, int64_t now):
        """(bytes, full length, truncated) or a negative UDT error code."""
        cdef size_t full = 0
        cdef bint trunc = False
        buf = bytearray(n if n > 0 else 1)
        cdef uint8_t* p = buf
        r = conn_read_message(self.c, p, n, &full, &trunc, now)
        if r < 0:
            return int(r)
        return bytes(buf[:r]), full, bool(trunc)

    def close(self, int64_t now):
        return conn_close(self.c, now)

    def abort(self, int64_t now):
        return conn_abort(self.c, now)

    def shutdown_write(self, int64_t now):
        return conn_shutdown_write(self.c, now)

    def set_max_bandwidth(self, int64_t bps):
        conn_set_max_bandwidth(self.c, bps)

    def stats(self, int64_t now, bint clear=False):
        cdef Stats s
        conn_stats(self.c, &s, clear, now)
        return stats_dict(&s)

    def set_next_msgno(self, int32_t msgno):
        """Test hook: the message number the next write gets (wrap-around tests)."""
        self.c.snd.next_msgno = msgno

    def set_cc(self, double period_us=-1, double cwnd=-1):
        """Test hook: force the CC knobs."""
        if period_us >= 0:
            self.c.cc.period_us = period_us
        if cwnd >= 0:
            self.c.cc.cwnd = cwnd

    @property
    def state(self): return self.c.state
    @property
    def error(self): return self.c.error
    @property
    def reject_req_type(self): return self.c.reject_req_type
    @property
    def readable_bytes(self): return conn_readable_bytes(self.c)
    @property
    def writable_bytes(self): return conn_writable_bytes(self.c)
    @property
    def pending_send_bytes(self): return conn_pending_send_bytes(self.c)
    @property
    def poll_events(self): return conn_poll_events(self.c)
    @property
    def socket_id(self): return self.c.socket_id
    @property
    def peer_socket_id(self): return self.c.peer_socket_id
    @property
    def isn(self): return self.c.isn
    @property
    def peer_isn(self): return self.c.peer_isn
    @property
    def mss(self): return self.c.mss
    @property
    def payload_size(self): return self.c.payload_size

    @property
    def pmtud(self):
        """Path-MTU discovery's state (protocol.md §13)."""
        return {
            "max": self.c.pmtud_max, "base": self.c.pmtud_base_mss, "fail": self.c.pmtud_fail,
            "probe": self.c.pmtud_probe, "done": bool(self.c.pmtud_done),
            "probes_sent": self.c.pmtud_probes_sent, "probes_lost": self.c.pmtud_probes_lost,
            "peer_max": self.c.peer_pmtud_max, "slot_size": self.c.snd.slot_size,
            "confirming": bool(self.c.pmtud_confirming), "raise_time": self.c.pmtud_raise_time,
            "black_holes": self.c.pmtud_black_holes, "fragments": bool(self.c.pmtud_fragments),
            "fragments_sent": self.c.pmtud_fragments_sent,
            "fragments_received": self.c.pmtud_fragments_received,
            "reassembly": self.c.frags != NULL,
        }

    @property
    def rtt_us(self): return self.c.rtt_us
    @property
    def rttvar_us(self): return self.c.rttvar_us
    @property
    def flow_window(self): return self.c.flow_window

    @property
    def buffers(self):
        """The rings' geometry, autotuned limits and memory (udt/core/buffers.pxd), packets and
        chunks; chunk_bytes is one chunk's allocation."""
        return {
            "snd_capacity": self.c.snd.capacity, "snd_limit": self.c.snd.limit,
            "snd_chunks": self.c.snd.store.allocated, "snd_spare": self.c.snd.store.spare_count,
            "snd_chunk_bytes": self.c.snd.store.chunk_bytes,
            "snd_directory": self.c.snd.store.chunks != NULL,
            "rcv_capacity": self.c.rcv.capacity, "rcv_limit": self.c.rcv.limit,
            "rcv_chunks": self.c.rcv.store.allocated, "rcv_spare": self.c.rcv.store.spare_count,
            "rcv_chunk_bytes": self.c.rcv.store.chunk_bytes,
            "rcv_directory": self.c.rcv.store.chunks != NULL,
            "snd_loss_capacity": self.c.snd_loss.total_capacity,
            "rcv_loss_capacity": self.c.rcv_loss.total_capacity,
        }

    @property
    def cwnd(self): return self.c.cc.cwnd
    @property
    def period_us(self): return self.c.cc.period_us
    @property
    def slow_start(self): return bool(self.c.cc.slow_start)
    @property
    def delivery_rate(self): return self.c.delivery_rate
    @property
    def bandwidth(self): return self.c.bandwidth
    @property
    def snd_una(self): return self.c.snd_una
    @property
    def snd_next_seq(self): return self.c.snd_next_seq
    @property
    def rcv_frontier(self): return self.c.rcv.frontier_seq
    @property
    def rcv_largest(self): return self.c.rcv_largest
    @property
    def snd_loss_length(self): return self.c.snd_loss.length
    @property
    def rcv_loss_length(self): return self.c.rcv_loss.length
    @property
    def exp_count(self): return self.c.exp_count
    @property
    def ack_no(self): return self.c.ack_no
    @property
    def peer_shutdown(self): return bool(self.c.peer_shutdown)
    @property
    def peer_reset(self): return bool(self.c.peer_reset)
    @property
    def peer_ip(self): return bytes(self.c.peer_ip[:16])
    @property
    def hs_cookie(self): return self.c.hs_cookie
    @property
    def hs_req_type(self): return self.c.hs_req_type
    @property
    def caps(self): return self.c.caps
    @property
    def peer_caps(self): return self.c.peer_caps
    @property
    def eof_acked(self): return bool(self.c.eof_acked)
    @property
    def peer_eof(self): return bool(self.c.peer_eof)


cdef class LossListShim:
    """A loss list for unit tests."""
    cdef LossList ll

    def __cinit__(self, int capacity=64):
        if losslist_alloc(&self.ll, capacity) < 0:
            raise MemoryError()

    def __dealloc__(self):
        losslist_free(&self.ll)

    def insert(self, int32_t first, int32_t last):
        return losslist_insert(&self.ll, first, last)

    def remove(self, int32_t seq):
        return losslist_remove(&self.ll, seq)

    def remove_range(self, int32_t first, int32_t last):
        return losslist_remove_range(&self.ll, first, last)

    def remove_before(self, int32_t seq):
        losslist_remove_before(&self.ll, seq)

    def pop_first(self):
        return losslist_pop_first(&self.ll)

    def contains(self, int32_t seq):
        return losslist_contains(&self.ll, seq)

    @property
    def length(self):
        return self.ll.length

    def ranges(self):
        return [(self.ll.first[i], self.ll.last[i]) for i in range(self.ll.count)]


# ---- codec helpers ----
def py_seq_cmp(int32_t a, int32_t b):
    return seq_cmp(a, b)


def py_seq_off(int32_t a, int32_t b):
    return seq_off(a, b)


def py_seq_add(int32_t a, int64_t n):
    return seq_add(a, n)


def py_msgno_inc(int32_t m):
    return msgno_inc(m)


def py_siphash24(bytes key, bytes data):
    return siphash24(<const uint8_t*><const char*>key, <const uint8_t*><const char*>data, len(data))


def peek(const uint8_t[:] data):
    """packet_peek as a dict; raises ValueError(reason name) for invalid datagrams."""
    cdef PacketInfo info
    rc = packet_peek(&data[0] if data.shape[0] else NULL, data.shape[0], &info)
    if rc < 0:
        raise ValueError(INVALID_REASONS[-1 - rc])
    return {"dst_id": info.dst_id, "kind": info.kind, "seq": info.seq,
            "hs_req_type": info.hs_req_type, "hs_socket_id": info.hs_socket_id,
            "hs_sock_type": info.hs_sock_type}


def decode_packet(const uint8_t[:] data):
    """Decode any datagram into a dict of its fields (handshake peer IP quirk undone)."""
    cdef Handshake hs
    cdef size_t n = data.shape[0]
    if n < HEADER_SIZE:
        raise ValueError("too_short")
    cdef const uint8_t* p = &data[0]
    w0 = get_u32(p)
    w1 = get_u32(p + 4)
    d = {"timestamp": get_u32(p + 8), "dst": get_u32(p + 12), "length": n}
    if w0 & CONTROL_FLAG:
        d.update(control=True, type=(w0 >> 16) & 0x7FFF, ext_type=w0 & 0xFFFF, info=w1,
                 cif=[get_u32(p + HEADER_SIZE + 4 * i) for i in range((n - HEADER_SIZE) // 4)])
        if d["type"] == PKT_HANDSHAKE and n >= HANDSHAKE_SIZE:
            handshake_decode(p + HEADER_SIZE, &hs)
            d["handshake"] = {"version": hs.version, "sock_type": hs.sock_type, "isn": hs.isn,
                              "mss": hs.mss, "flight_flag_size": hs.flight_flag_size,
                              "req_type": hs.req_type, "socket_id": hs.socket_id,
                              "cookie": hs.cookie, "peer_ip": bytes(hs.peer_ip[:16]),
                              "ext": decode_hsext(data[HANDSHAKE_SIZE:])}
    else:
        d.update(control=False, seq=w0 & SEQ_MAX, boundary=w1 >> 30, inorder=bool(w1 & MSG_INORDER_BIT),
                 msgno=w1 & MSG_NUMBER_MASK, payload=bytes(data[HEADER_SIZE:]))
    return d


def encode_handshake(*, int version=4, int sock_type=1, int32_t isn=0, int mss=1500, int ffs=8192,
                     int req_type=1, uint32_t socket_id=0, uint32_t cookie=0, bytes peer_ip=b"\0" * 16,
                     uint32_t dst=0):
    cdef Handshake hs
    cdef uint8_t out[HANDSHAKE_SIZE]
    hs.version = version
    hs.sock_type = sock_type
    hs.isn = isn
    hs.mss = mss
    hs.flight_flag_size = ffs
    hs.req_type = req_type
    hs.socket_id = socket_id
    hs.cookie = cookie
    if len(peer_ip) != 16:
        raise ValueError("peer_ip must be 16 raw address bytes")
    memcpy(hs.peer_ip, <const char*>peer_ip, 16)
    handshake_encode(out, &hs, dst)
    return bytes(out[:HANDSHAKE_SIZE])


def encode_hsext(uint32_t caps):
    """Our handshake extension trailer (what follows the 48-byte CIF) carrying caps."""
    cdef uint8_t out[HSEXT_SIZE]
    n = hsext_encode(out, caps)
    return bytes(out[:n])


def decode_hsext(const uint8_t[:] data):
    """(1 ours, 0 none/not ours, -1 malformed; caps) of the bytes after a 48-byte CIF."""
    cdef uint32_t caps = 0
    cdef int rc = hsext_decode(&data[0] if data.shape[0] > 0 else NULL, data.shape[0], &caps)
    return rc, caps


def encode_control(int ctrl_type, uint32_t info=0, uint32_t dst=0, cif=(0,), uint32_t timestamp=0):
    """A control packet with the given CIF words."""
    cdef uint8_t hdr[HEADER_SIZE]
    put_header(hdr, control_word0(ctrl_type, 0), info, timestamp, dst)
    body = bytearray(4 * len(cif))
    for i, w in enumerate(cif):
        body[4 * i:4 * i + 4] = (int(w) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(hdr[:HEADER_SIZE]) + bytes(body)


def encode_data(int32_t seq, int boundary, bint inorder, int32_t msgno, uint32_t timestamp,
                uint32_t dst, bytes payload):
    cdef uint8_t hdr[HEADER_SIZE]
    put_header(hdr, <uint32_t>seq & SEQ_MAX, msg_word(boundary, inorder, msgno), timestamp, dst)
    return bytes(hdr[:HEADER_SIZE]) + payload


# event / state constants for Python tests
EVENTS = {"READABLE": EV_READABLE, "WRITABLE": EV_WRITABLE, "CONNECTED": EV_CONNECTED,
          "CONNECT_FAILED": EV_CONNECT_FAILED, "BROKEN": EV_BROKEN, "CLOSED": EV_CLOSED,
          "PEER_SHUTDOWN": EV_PEER_SHUTDOWN, "WANT_TRANSMIT": EV_WANT_TRANSMIT,
          "PEER_ERROR": EV_PEER_ERROR}
STATES = {"INIT": STATE_INIT, "OPENED": STATE_OPENED, "LISTENING": STATE_LISTENING,
          "CONNECTING": STATE_CONNECTING, "CONNECTED": STATE_CONNECTED, "BROKEN": STATE_BROKEN,
          "CLOSING": STATE_CLOSING, "CLOSED": STATE_CLOSED, "NONEXIST": STATE_NONEXIST}
LISTENER_VERDICTS = {"DROP": LISTENER_DROP, "REPLY": LISTENER_REPLY, "ACCEPT": LISTENER_ACCEPT}
CAPS = {"HALF_CLOSE": CAP_HALF_CLOSE, "PMTUD": CAP_PMTUD, "PMTUD_FRAGMENTS": CAP_PMTUD_FRAGMENTS,
        "LOCAL": CAPS_LOCAL}
# The C enum of invalid reasons by its C names: tests pin it to udt._core.INVALID_REASONS.
INVALID_ENUM = {
    "INVALID_TOO_SHORT": INVALID_TOO_SHORT, "INVALID_CONTROL_TYPE": INVALID_CONTROL_TYPE,
    "INVALID_LENGTH": INVALID_LENGTH, "INVALID_HANDSHAKE": INVALID_HANDSHAKE,
    "INVALID_ACK_RANGE": INVALID_ACK_RANGE, "INVALID_NAK_RANGE": INVALID_NAK_RANGE,
    "INVALID_ACK2": INVALID_ACK2, "INVALID_DATA_SEQ": INVALID_DATA_SEQ,
    "INVALID_DATA_LENGTH": INVALID_DATA_LENGTH, "INVALID_DROP_REQUEST": INVALID_DROP_REQUEST,
    "INVALID_STATE": INVALID_STATE, "INVALID_WRONG_PEER": INVALID_WRONG_PEER,
    "INVALID_COOKIE": INVALID_COOKIE, "INVALID_BUFFER_FULL": INVALID_BUFFER_FULL,
}
INVALID_REASON_TOTAL = INVALID_REASON_COUNT


def request_from_conclusion(const uint8_t[:] data, object peer, int listener_mss=1500):
    """Test hook: the AcceptRequest a listener would produce for this conclusion, without the
    cookie check (to replay captured handshakes whose cookie came from another listener)."""
    cdef Handshake hs
    cdef AcceptedRequest r = AcceptedRequest()
    if data.shape[0] != HANDSHAKE_SIZE:
        raise ValueError("not a handshake")
    handshake_decode(&data[HEADER_SIZE], &hs)
    r.req.peer_socket_id = hs.socket_id
    r.req.isn = hs.isn
    r.req.mss = hs.mss if hs.mss < listener_mss else listener_mss
    r.req.peer_flight_flag_size = hs.flight_flag_size
    r.req.sock_type = hs.sock_type
    r.req.cookie = hs.cookie
    memcpy(r.req.self_ip, hs.peer_ip, 16)
    _to_sockaddr(peer, &r.req.peer_addr)
    return r


cdef inline int64_t _wall_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


def engine_benchmark(int64_t total_bytes=200_000_000, int mss=1500):
    """CPU cost of the engine alone: two connections back to back in C (no GIL, no sockets,
    no loss), a fake clock advancing 5 µs per round.  Returns a dict with the wall time, data
    packets and the payload rate the engine pair could sustain on one core."""
    cdef Conn* a = <Conn*>calloc(1, sizeof(Conn))
    cdef Conn* b = <Conn*>calloc(1, sizeof(Conn))
    cdef uint8_t* buf = <uint8_t*>malloc(65536)
    cdef uint8_t* src = <uint8_t*>calloc(1, 1 << 16)
    cdef uint8_t* dst = <uint8_t*>malloc(1 << 20)
    cdef ConnOptions opts
    cdef Listener lst
    cdef AcceptRequest req
    cdef sockaddr_storage addr_a, addr_b
    cdef size_t out_len
    cdef ssize_t n
    cdef int64_t now = 1, received = 0, t0, t1, packets = 0, rounds = 0
    cdef uint8_t key[16]
    memset(key, 7, 16)
    _to_sockaddr(("10.0.0.1", 5000), &addr_a)
    _to_sockaddr(("10.0.0.2", 9000), &addr_b)
    conn_options_default(&opts)
    opts.mss = mss
    opts.random_seed = 42
    conn_init(a, &opts, 1, now)
    conn_init(b, &opts, 2, now)
    listener_init(&lst, key, SOCK_TYPE_STREAM, mss, DEFAULT_BUFFER_PACKETS, now)
    conn_connect(a, &addr_b, now)
    try:
        with nogil:
            while a.state == STATE_CONNECTING and now < 1000000:
                n = conn_next_datagram(a, now, buf, 65536)
                if n > 0:
                    if get_u32(buf + 12) == 0:
                        v = listener_on_handshake(&lst, buf, n, &addr_a, now, buf, 65536, &out_len, &req)
                        if v == LISTENER_REPLY:
                            conn_on_datagram(a, buf, out_len, now)
                        elif v == LISTENER_ACCEPT:
                            n = conn_accept(b, &req, now, buf, 65536)
                            conn_on_datagram(a, buf, n, now)
                now += 1000
            t0 = _wall_us()
            while received < total_bytes:
                conn_write(a, src, 1 << 16, -1, False, now)
                while True:
                    n = conn_next_datagram(a, now, buf, 65536)
                    if n <= 0:
                        break
                    if n > HEADER_SIZE + 64:
                        packets += 1
                    conn_on_datagram(b, buf, n, now)
                while True:
                    n = conn_next_datagram(b, now, buf, 65536)
                    if n <= 0:
                        break
                    conn_on_datagram(a, buf, n, now)
                if 0 <= conn_next_timer(a) <= now:
                    conn_on_timer(a, now)
                if 0 <= conn_next_timer(b) <= now:
                    conn_on_timer(b, now)
                while True:
                    n = conn_read(b, dst, 1 << 20, now)
                    if n <= 0:
                        break
                    received += n
                now += 5
                rounds += 1
            t1 = _wall_us()
    finally:
        conn_free(a)
        conn_free(b)
        free(a)
        free(b)
        free(buf)
        free(src)
        free(dst)
    seconds = (t1 - t0) / 1e6
    return {"seconds": seconds, "bytes": received, "data_packets": packets,
            "ns_per_packet": seconds * 1e9 / max(packets, 1),
            "gbit_per_s": received * 8 / seconds / 1e9 if seconds > 0 else 0.0}


# ---------------------------------------------------------------------------------------------
# Unit loops for bench/test_bench_units.py (pytest-benchmark): each runs `rounds` iterations of
# one hot unit in C without the GIL, so a timing measures the unit, not the Python call.
# ---------------------------------------------------------------------------------------------

cdef int64_t _loop_codec(int64_t rounds) noexcept nogil:
    """Encode a data header and a handshake, decode both (what every packet costs)."""
    cdef uint8_t buf[HANDSHAKE_MAX_OUT]
    cdef Handshake hs, back
    cdef int64_t i, acc = 0
    memset(&hs, 0, sizeof(hs))
    memset(buf, 0, sizeof(buf))
    hs.version = 4
    hs.sock_type = SOCK_TYPE_STREAM
    hs.mss = 1500
    hs.flight_flag_size = 8192
    for i in range(rounds):
        put_header(buf, <uint32_t>(i & 0x7FFFFFFF), msg_word(3, True, <int32_t>(i & MSG_NUMBER_MASK)),
                   <uint32_t>i, 7)
        acc += get_u32(buf) + (get_u32(buf + 4) & MSG_NUMBER_MASK) + get_u32(buf + 8) + get_u32(buf + 12)
        hs.isn = <int32_t>(i & 0x7FFFFFFF)
        handshake_encode(buf, &hs, 9)
        handshake_decode(buf + HEADER_SIZE, &back)
        acc += back.isn
    return acc


cdef int64_t _loop_losslist(int64_t rounds) noexcept nogil:
    """A NAK's worth of ranges inserted, some retransmitted (popped), the rest acknowledged."""
    cdef LossList ll
    cdef int64_t _i, acc = 0
    cdef int32_t base = 0
    cdef int k
    losslist_alloc(&ll, 1 << 16)
    for _i in range(rounds):
        for k in range(8):
            losslist_insert(&ll, seq_add(base, 10 * k), seq_add(base, 10 * k + 3))
        acc += losslist_pop_first(&ll)
        acc += losslist_remove(&ll, seq_add(base, 21))
        acc += losslist_contains(&ll, seq_add(base, 52))
        losslist_remove_before(&ll, seq_add(base, 80))
        base = seq_add(base, 80)
    losslist_free(&ll)
    return acc


cdef int64_t _loop_sndbuf(int64_t rounds) noexcept nogil:
    """Append 64 packets of 1456 bytes to a send buffer (copy in), release them (ACK)."""
    cdef SendBuffer b
    cdef SendSlot* slot
    cdef uint8_t src[1456]
    cdef int64_t _i, acc = 0
    cdef int _k
    memset(src, 5, sizeof(src))
    sndbuf_alloc(&b, 8192, 8192, 1456)
    for _i in range(rounds):
        for _k in range(64):
            slot = sndbuf_append(&b)
            if slot == NULL:
                sndbuf_free(&b)
                return -1
            memcpy(sndbuf_payload(&b, sndbuf_index(&b, b.count)), src, 1456)
            slot.length = 1456
            b.count += 1
            b.bytes += 1456
        acc += b.bytes
        sndbuf_release(&b, 64)
    sndbuf_free(&b)
    return acc


cdef int64_t _loop_cc(int64_t rounds) noexcept nogil:
    """The native DAIMD's reaction to a full ACK every round and a NAK every 16th."""
    cdef CCState* cc = &_bench_cc
    cdef int32_t loss[2]
    cdef int64_t i, now = 1
    for i in range(rounds):
        now += 100
        cc.snd_curr_seq = seq_add(cc.snd_curr_seq, 64)
        cc.ops.on_ack(cc, cc.snd_curr_seq, now)
        if i % 16 == 15:
            loss[0] = <int32_t>(<uint32_t>seq_add(cc.snd_curr_seq, -20) | 0x80000000u)
            loss[1] = seq_add(cc.snd_curr_seq, -10)
            cc.ops.on_loss(cc, loss, 2, now)
    return <int64_t>cc.cwnd


cdef CCState _bench_cc


def unit_benchmark(str unit, int64_t rounds=10000):
    """Run `rounds` iterations of one hot unit in C ("codec", "losslist", "sndbuf", "cc");
    returns a checksum of the work (so it cannot be optimised away; -1: out of memory)."""
    cdef int64_t result
    if rounds < 0:
        raise ValueError("rounds must be >= 0")
    if unit == "codec":
        with nogil:
            result = _loop_codec(rounds)
    elif unit == "losslist":
        with nogil:
            result = _loop_losslist(rounds)
    elif unit == "sndbuf":
        with nogil:
            result = _loop_sndbuf(rounds)
    elif unit == "cc":
        memset(&_bench_cc, 0, sizeof(CCState))
        _bench_cc.ops = native_cc_by_name("udt4")
        _bench_cc.mss = 1500
        _bench_cc.max_cwnd = 8192
        _bench_cc.rtt_us = 1000
        _bench_cc.rcv_rate = 100000
        _bench_cc.bandwidth = 100000
        _bench_cc.ops.init(&_bench_cc, 1)
        with nogil:
            result = _loop_cc(rounds)
    else:
        raise ValueError(f"unknown unit {unit!r} (codec, losslist, sndbuf, cc)")
    if result == -1:
        raise MemoryError(unit)
    return result
