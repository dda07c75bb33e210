# cython: language_level=3
"""Types, constants and packet paths of the UDT protocol engine (one connection's state machine
plus the stateless listener).

This header holds every struct and enum of the engine, and the functions of udt/_core.pyx (the
per-packet receive, send and timer paths).  The other units declare their own functions:
udt/core/lifecycle.pxd (options, init/free, connect, accept, close), udt/core/app.pxd
(write/read/poll), udt/core/stats.pxd (perfmon), udt/core/listener.pxd (listener, packet_peek,
shutdown_packet).  ``cimport udt.core.engine as core`` gives all of them in one namespace.

Sans-IO (aioquic style): the engine consumes datagrams and time and produces datagrams, timer
deadlines and event bits.  It never touches a socket or a clock; ``now`` is integer microseconds
from any monotonic origin, passed in by the caller.  Everything here is C structs and
``noexcept nogil`` functions: no Python object, no allocation on the packet path (buffers are
allocated by ``conn_accept``/``conn_connect`` completion and freed by ``conn_free``).

Threading contract: the engine has no locks.  The caller (the multiplexer) serialises every call
on one ``Conn`` with that connection's mutex; a ``Listener`` likewise.

Return conventions: functions returning ``ssize_t``/``int`` use ``>= 0`` for success and
``-code`` for failure, where ``code`` is UDT4's error number (protocol.md §8, ``ERR_*`` below), e.g.
``conn_write`` returning ``-5012`` means "message too large".
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from udt._net cimport sockaddr_storage


# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------
cdef enum:
    UDT_VERSION = 4
    HEADER_SIZE = 16                  # UDT header bytes
    HANDSHAKE_CIF_SIZE = 48           # a listener ignores any other CIF length
    HANDSHAKE_SIZE = 64               # header + CIF
    HANDSHAKE_MAX_OUT = 128           # + our extension trailer (HSEXT_CRYPTO_TOTAL, udt/core/hsext.pxd)
    IP_UDP_OVERHEAD = 28              # what UDT4 subtracts from the MSS (IPv4 + UDP)
    IP_UDP_OVERHEAD_V6 = 48           # what udt subtracts when *sending* over IPv6
    MIN_MSS = 76
    DEFAULT_MSS = 1500
    DEFAULT_FLIGHT_FLAG_SIZE = 65536  # caps, not allocations: 1 Gbit/s x 200 ms is ~17,000 packets
    DEFAULT_BUFFER_PACKETS = 65536
    MIN_FLIGHT_FLAG_SIZE = 32
    PMTUD_MAX_MSS = 65535             # largest MSS discovery tries: an IPv4 packet (UDP 65507 + 28)
    PMTUD_MAX_TRIES = 3               # copies of a probe lost before its size counts as too big
    # copies lost before the confirmed MSS counts as a black hole (a false one under 20 %
    # random loss: 0.2^6, 6e-5 per check)
    PMTUD_BLACK_HOLE_TRIES = 6
    PMTUD_MIN_STEP = 512              # the search stops when it brackets the MTU this closely
    PMTUD_RAISE_US = 600000000        # a search that ended below the ceiling runs again (RFC 8899)
    PMTUD_BLACK_HOLE_RAISE_US = 60000000  # ... this soon after a black hole
    PMTUD_BASE_PROBE_ID = 0x40000000  # id bit of a base-size probe sent while confirming
    PMTUD_FRAG_HEADER = 28            # a fragment's header: 16 + message word, index|count, length
    PMTUD_FRAG_MAX = 256              # fragments per packet at most (else no fallback but the MSS)
    PMTUD_FRAG_WORDS = 4              # PMTUD_FRAG_MAX bits in 64-bit words
    PMTUD_FRAG_SLOTS = 16             # packets a receiver joins at once
    MAX_CONTROL_SIZE = 1500           # largest control datagram the engine emits (NAKs are capped)
    ACK_HISTORY_SIZE = 1024           # ACK numbers remembered for ACK2/RTT (UDT4's ACK window)
    ARRIVAL_WINDOW = 16               # receive-rate median window
    PROBE_WINDOW = 64                 # packet-pair median window
    LIGHT_ACK_PACKETS = 64
    PENDING_ACK2 = 32
    PENDING_NAK_RANGES = 64
    PENDING_DROPS = 16

# Socket types carried in the handshake (protocol.md §4: 1 = STREAM, 2 = DGRAM).
cdef enum SocketType:
    SOCK_TYPE_STREAM = 1
    SOCK_TYPE_DGRAM = 2

# UDT_STATE values (UDT4's UDTSTATUS).
cdef enum ConnState:
    STATE_INIT = 1
    STATE_OPENED = 2
    STATE_LISTENING = 3
    STATE_CONNECTING = 4
    STATE_CONNECTED = 5
    STATE_BROKEN = 6
    STATE_CLOSING = 7
    STATE_CLOSED = 8
    STATE_NONEXIST = 9

# Control packet types (protocol.md §3).
cdef enum PacketType:
    PKT_HANDSHAKE = 0
    PKT_KEEPALIVE = 1
    PKT_ACK = 2
    PKT_NAK = 3
    PKT_CONGESTION_WARNING = 4
    PKT_SHUTDOWN = 5
    PKT_ACK2 = 6
    PKT_DROP_REQUEST = 7
    PKT_ERROR_SIGNAL = 8
    PKT_USER_DEFINED = 0x7FFF
    PKT_DATA = -1                     # packet_peek's kind for a data packet

# Handshake request types (protocol.md §4).
cdef enum RequestType:
    REQ_INDUCTION = 1
    REQ_RENDEZVOUS = 0
    REQ_CONCLUSION = -1
    REQ_RENDEZVOUS_AGREEMENT = -2
    REQ_REJECTED = 1002
    REQ_FAILURE_FIRST = 1000    # every request type >= 1000 is a refusal: UDT4 sends 1002,
                                # SRT 1000 + its reason (1004 = a STREAM socket, "rogue")
    # encryption refusals (protocol.md §12); the 11xx range is ours, SRT's reasons end below
    REQ_CRYPTO_UNEXPECTED = 1101   # listener: you offered encryption, I have no passphrase
    REQ_CRYPTO_REQUIRED = 1102     # listener: I require a passphrase, you offered none
    REQ_CRYPTO_MISMATCH = 1103     # listener: your key confirmation failed (wrong passphrase)
    REQ_CRYPTO_PLAIN_PEER = 1110   # local: the peer cannot encrypt (UDT4/SRT or no passphrase)
    REQ_CRYPTO_BAD_ANSWER = 1111   # local: the listener's key confirmation failed

# Message boundary bits (word1 of a data packet, top two bits).
cdef enum Boundary:
    BOUNDARY_MIDDLE = 0
    BOUNDARY_LAST = 1
    BOUNDARY_FIRST = 2
    BOUNDARY_SOLO = 3

# Event bits returned by conn_on_datagram / conn_on_timer / conn_accept and friends.
cdef enum EventBits:
    EV_READABLE = 0x001         # new data (stream) or a complete message became readable
    EV_WRITABLE = 0x002         # send buffer space was released by an ACK
    EV_CONNECTED = 0x004        # handshake completed
    EV_CONNECT_FAILED = 0x008   # connect failed (state CLOSED): conn.error = 1001 timeout, 1002 rejected, 1004 security
    EV_BROKEN = 0x010           # peer silent too long (conn.error = 2001)
    EV_CLOSED = 0x020           # our close completed (drained or linger expired): state CLOSED;
                                # drain conn_next_datagram once more (it holds the SHUTDOWN),
                                # then conn_free
    EV_PEER_SHUTDOWN = 0x040    # the peer sent SHUTDOWN (state BROKEN, peer_shutdown=1, error 0):
                                # readable data stays readable, then reads return 0 (EOF)
    EV_WANT_TRANSMIT = 0x080    # something is due to send: re-check conn_next_send_time
    EV_PEER_ERROR = 0x100       # the peer sent an error signal (conn.error = 7000)

# UDT4 error numbers (protocol.md §8); functions return them negated.  Each name is ERR_ + the
# member of udt.errors.ErrorCode with the same number (tests/test_errors.py pins both ways); the
# comment gives UDT4's CUDTException name.  cpdef: udt._core exports them for that test.
cpdef enum:                         # ErrorCode
    ERR_SUCCESS = 0                 # SUCCESS
    ERR_CONNECTION_SETUP = 1000     # ECONNSETUP
    ERR_NO_SERVER = 1001            # ENOSERVER: connect timed out
    ERR_REJECTED = 1002             # ECONNREJ
    ERR_SOCKET_FAILURE = 1003       # ESOCKFAIL
    ERR_SECURITY_FAILURE = 1004     # ESECFAIL
    ERR_CONNECTION_FAILURE = 2000   # ECONNFAIL
    ERR_CONNECTION_BROKEN = 2001    # ECONNLOST
    ERR_NO_CONNECTION = 2002        # ENOCONN
    ERR_RESOURCES = 3000            # ERESOURCE
    ERR_THREAD_FAILURE = 3001       # ETHREAD
    ERR_NO_MEMORY = 3002            # ENOBUF (memory, not the send buffer: that is 6001)
    ERR_FILE = 4000                 # EFILE
    ERR_FILE_READ_OFFSET = 4001     # EINVRDOFF
    ERR_FILE_READ = 4002            # ERDPERM
    ERR_FILE_WRITE_OFFSET = 4003    # EINVWROFF
    ERR_FILE_WRITE = 4004           # EWRPERM
    ERR_INVALID_OPERATION = 5000    # EINVOP
    ERR_ALREADY_BOUND = 5001        # EBOUNDSOCK
    ERR_ALREADY_CONNECTED = 5002    # ECONNSOCK
    ERR_BAD_PARAMETER = 5003        # EINVPARAM
    ERR_BAD_SOCKET = 5004           # EINVSOCK
    ERR_UNBOUND = 5005              # EUNBOUNDSOCK
    ERR_NOT_LISTENING = 5006        # ENOLISTEN
    ERR_RENDEZVOUS_NO_LISTEN = 5007     # ERDVNOSERV
    ERR_RENDEZVOUS_NEEDS_BIND = 5008    # ERDVUNBOUND
    ERR_NOT_STREAM_MODE = 5009      # ESTREAMILL
    ERR_NOT_MESSAGE_MODE = 5010     # EDGRAMILL
    ERR_PORT_HAS_LISTENER = 5011    # EDUPLISTEN
    ERR_MESSAGE_TOO_LARGE = 5012    # ELARGEMSG
    ERR_BAD_POLL_ID = 5013          # EINVPOLLID
    ERR_WOULD_BLOCK = 6000          # EASYNCFAIL
    ERR_NO_SEND_BUFFER = 6001       # EASYNCSND
    ERR_NO_DATA = 6002              # EASYNCRCV
    ERR_TIMED_OUT = 6003            # ETIMEOUT
    ERR_PEER_ERROR = 7000           # EPEERERR

# Why a datagram was dropped as invalid (index into Stats.invalid[]).
cdef enum:                          # InvalidReason
    INVALID_TOO_SHORT = 0            # shorter than a header (or than the control type needs)
    INVALID_CONTROL_TYPE = 1         # unknown control type
    INVALID_LENGTH = 2               # control CIF of a wrong size
    INVALID_HANDSHAKE = 3            # handshake CIF not 48 bytes, bad version/type/fields
    INVALID_ACK_RANGE = 4            # ACK beyond what was sent, or before ISN window
    INVALID_NAK_RANGE = 5            # NAK entry first > last, beyond last sent, truncated range
    INVALID_ACK2 = 6                 # ACK2 for an unknown/too old ACK number
    INVALID_DATA_SEQ = 7             # data seq outside the receive window
    INVALID_DATA_LENGTH = 8          # data payload larger than the payload size or empty
    INVALID_DROP_REQUEST = 9         # message drop request with a bad range
    INVALID_STATE = 10               # packet meaningless in the current state
    INVALID_WRONG_PEER = 11          # handshake with a wrong ISN/socket ID (security)
    INVALID_COOKIE = 12              # listener: conclusion with a bad cookie
    INVALID_BUFFER_FULL = 13         # data beyond the receive buffer (not a protocol error)
    INVALID_REASON_COUNT = 14


cdef struct AcceptRequest

# ---------------------------------------------------------------------------------------------
# Congestion control: a callback table (CCState, CCOps in udt/core/ccapi.pxd).  The native DAIMD
# (udt/core/cc.pyx) is one implementation; udt/cc.py's Python base class is another, reached
# through a GIL-taking trampoline (udt/core/pycc.pyx):
# ---------------------------------------------------------------------------------------------
from udt.core.ccapi cimport CCOps, CCReport, CCState
# The trampoline into a udt.cc.CongestionControl instance: set ConnOptions.cc_ops to this and
# cc_user to the instance (borrowed; the engine INCREFs it in init and DECREFs it in close).
# Each callback takes the GIL for that connection only (~1 µs per call); on_packet_sent /
# on_packet_received are only called when the subclass overrides them.
from udt.core.pycc cimport python_cc_ops


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
cdef struct ConnOptions:
    int mss                     # whole IP packet (UDT_MSS), >= 76, default 1500
    int sock_type               # SOCK_TYPE_STREAM / SOCK_TYPE_DGRAM
    int flight_flag_size        # UDT_FC, packets, >= 32, default 65536
    int snd_buf_packets         # UDT_SNDBUF converted to packets (bytes // (mss - 28)), default 65536
    int rcv_buf_packets         # UDT_RCVBUF converted to packets, default 65536 (caps: the
                                # rings grow to them with the path, udt/core/buffers.pxd)
    int buf_initial_packets     # where both buffer limits start and return after idle;
                                # 0 = INITIAL_RECV/SEND_PACKETS, = the caps: fixed-size buffers
    bint rendezvous             # UDT_RENDEZVOUS
    int64_t max_bandwidth       # UDT_MAXBW bytes/s, -1 unlimited (may be changed while connected)
    int64_t broken_timeout_us   # silence after which the connection is broken, default 10 s
    int64_t linger_us           # close(): max time to drain; 0 = abort at once
    int64_t msg_ttl_us          # TTL of messages written with ttl_us < 0 (-1 = forever)
    int64_t connect_timeout_us  # 0 = spec default (3 s, rendezvous 30 s)
    const CCOps* cc_ops         # NULL = native DAIMD
    void* cc_user               # passed to the CC as CCState.user
    uint64_t random_seed        # ISN and CC randomness; 0 = derive from socket ID and time (tests)
    # encryption (protocol.md §12): a client offers crypto_offer in its conclusion and hands
    # the listener's answer to crypto_check (0: keys agreed) before the connection exists
    bint crypto
    uint8_t crypto_offer[32]
    int (*crypto_check)(void* user, const uint8_t* answer) noexcept nogil
    void* crypto_user
    # path-MTU discovery (protocol.md §13): the largest MSS we accept (TLV 3 of the handshake
    # extension; the rings' slots are sized for it when both sides offer it); 0 = off
    int pmtud_max_mss


# ---------------------------------------------------------------------------------------------
# Protocol units (their functions: header-only udt/core/*.pxd, cimported by the engine units)
# ---------------------------------------------------------------------------------------------
cdef struct LossList:
    # Sorted, range-compressed set of 31-bit sequence numbers: [first[i], last[i]] inclusive.
    int32_t* first
    int32_t* last
    int count                   # ranges in use
    int capacity                # ranges available from `first` on
    int64_t length              # sequence numbers in the set
    int32_t* first_base         # the allocations: removing at the front just advances
    int32_t* last_base          # first/last (O(1)); they are compacted when space runs out
    int total_capacity          # ranges allocated (grows by doubling up to max_capacity)
    int initial_capacity        # what an idle connection shrinks back to
    int max_capacity            # the bound, from the buffer it describes

cdef struct SendSlot:
    int32_t length              # payload bytes in the slot
    uint32_t msg_word           # word1 as sent: boundary | in-order | msgno
    int64_t origin_time         # when the message was written (TTL)
    int64_t ttl_us              # -1 = forever

cdef struct ChunkStore:
    # A ring's slots in chunks of BUFFER_CHUNK_PACKETS (udt/core/buffers.pxd): a chunk exists
    # while one of its slots is in use; released chunks wait in `spare` for reuse (no malloc in
    # steady state) until the connection has been idle for a while.
    uint8_t** chunks            # directory (NULL while nothing was ever stored); NULL = no chunk
    uint8_t** spare             # released chunks, reused before any malloc
    uint32_t* used              # slots in use per chunk
    int32_t* sizes              # payload bytes per slot of each chunk (what it was made with)
    int slot_size               # the size new chunks get (path-MTU discovery raises it)
    uint8_t* retired            # chunks too small since the MSS grew, linked through their first
                                # word; freed with the spares (a burst may still point into one)
    int retired_count
    int nchunks
    int spare_count
    int meta_bytes              # per-chunk slot metadata, then the payloads
    size_t chunk_bytes
    int64_t allocated           # chunks held (in use + spare): the memory, for stats and tests

cdef struct SendBuffer:
    # Ring of `capacity` packet slots (slot of seq s = (head + seqoff(snd_una, s)) % capacity),
    # stored in chunks of BUFFER_CHUNK_PACKETS slots allocated while a slot in them is in use
    # (udt/core/buffers.pxd): memory follows what is queued, not the configured maximum.
    ChunkStore store
    int capacity                # the configured maximum (UDT_SNDBUF), packets
    int limit                   # what a writer may queue now (autotuned, <= max_limit)
    int max_limit               # capacity, less once the MSS grew: UDT_SNDBUF stays in bytes
    int initial_limit           # where the limit starts and returns to after idle
    int slot_size
    int head                    # slot of the oldest unacknowledged packet
    int count                   # packets held (unacknowledged + unsent)
    int64_t bytes               # payload bytes held
    int32_t next_msgno          # 1 .. 2^26-1, wraps to 1
    bint tail_open              # stream mode: the last slot is unsent and may take more bytes
    int64_t last_active         # when data was last written or acknowledged (idle release)

cdef struct RecvSlot:
    int32_t length
    uint32_t msg_word
    uint8_t state               # RSLOT_EMPTY / RSLOT_FILLED / RSLOT_DROPPED / RSLOT_TAKEN

cdef struct RecvBuffer:
    # Ring indexed by sequence offset from read_seq: out-of-order packets land in place.  Stored
    # in chunks like the send ring; a slot whose chunk is absent is empty.
    ChunkStore store
    int capacity                # the configured maximum (min(UDT_RCVBUF, UDT_FC)), packets
    int limit                   # what we advertise room for now (autotuned, <= max_limit)
    int max_limit               # capacity, less once the MSS grew: UDT_RCVBUF stays in bytes
    int initial_limit
    int slot_size
    int head                    # slot of read_seq
    int32_t read_seq            # first sequence not yet consumed by the application
    int32_t read_offset         # bytes of the head slot already read (stream mode)
    int32_t frontier_seq        # first sequence not yet received in order (the ACK point)
    int64_t contiguous_bytes    # stream: bytes readable from read_seq up to the first hole
    int32_t ooo_messages        # message mode: complete out-of-order messages waiting
    int64_t last_active         # when data last arrived (idle release)
    int64_t tune_start          # autotuning: start of the current measurement interval
    int64_t tune_consumed       # packets the application consumed since tune_start
    int64_t tune_arrived        # packets that arrived since tune_start
    bint tune_filled            # the sender filled the window offered a round trip earlier

cdef struct AckRecord:
    int32_t ack_no              # the ACK sequence number (word1)
    int32_t ack_seq             # the data sequence it acknowledged
    int32_t edge                # the window's right edge it offered (ack_seq + available)
    int64_t sent_time

cdef struct RateEstimator:
    int64_t arrival_gap[ARRIVAL_WINDOW]
    int arrival_pos
    int arrival_count
    int64_t last_arrival
    int64_t probe_gap[PROBE_WINDOW]
    int probe_pos
    int probe_count
    int64_t probe1_time
    int32_t probe1_seq

cdef struct PendingDrop:
    int32_t msgno
    int32_t first
    int32_t last


# ---------------------------------------------------------------------------------------------
# Statistics (UDT4 perfmon, protocol.md §8) — conn_stats fills one
# ---------------------------------------------------------------------------------------------
cdef struct FragEntry:
    # one packet being joined from its fragments (protocol.md §13, udt/core/fragments.pxd)
    int32_t seq
    int32_t length              # its payload bytes (0: the entry is free)
    int32_t count               # fragments it comes in
    int32_t received            # fragments joined so far
    uint32_t msg_word
    uint32_t timestamp
    int64_t started             # FragArea.clock when it was started (the oldest is reused)
    uint64_t have[PMTUD_FRAG_WORDS]  # a bit per fragment joined
    uint8_t* data               # HEADER_SIZE + payload room: the packet is rebuilt in place


cdef struct FragArea:
    FragEntry entries[PMTUD_FRAG_SLOTS]
    int64_t clock
    int data_bytes              # each entry's data allocation


cdef struct Stats:
    int64_t ms_timestamp        # ms since the connection was created
    # totals since start
    int64_t pkt_sent_total
    int64_t pkt_recv_total
    int64_t pkt_snd_loss_total  # packets the peer reported lost (NAK) or EXP re-queued (not probes)
    int64_t pkt_rcv_loss_total  # gaps seen by our receiver
    int64_t pkt_retrans_total
    int64_t pkt_sent_ack_total
    int64_t pkt_recv_ack_total
    int64_t pkt_sent_nak_total
    int64_t pkt_recv_nak_total
    int64_t us_snd_duration_total
    int64_t bytes_sent_total    # data payload bytes, retransmissions included
    int64_t bytes_recv_total
    int64_t pkt_dropped_total   # receiver: packets discarded by message drop requests / TTL
    # the same since the last clear
    int64_t pkt_sent
    int64_t pkt_recv
    int64_t pkt_snd_loss
    int64_t pkt_rcv_loss
    int64_t pkt_retrans
    int64_t pkt_sent_ack
    int64_t pkt_recv_ack
    int64_t pkt_sent_nak
    int64_t pkt_recv_nak
    int64_t us_snd_duration
    double mbps_send_rate
    double mbps_recv_rate
    # instant values
    double us_pkt_snd_period
    int64_t pkt_flow_window
    int64_t pkt_congestion_window
    int64_t pkt_flight_size
    double ms_rtt
    double mbps_bandwidth
    int64_t byte_avail_snd_buf
    int64_t byte_avail_rcv_buf
    # path-MTU discovery (protocol.md §13): instant MSS and ceiling, totals of probes
    int64_t mss                 # of new packets now (the handshake's, or what discovery found)
    int64_t pmtud_max_mss       # negotiated ceiling (0: discovery off)
    int64_t pmtud_probes_sent
    int64_t pmtud_probes_confirmed
    int64_t pmtud_probes_lost
    int64_t pmtud_black_holes   # a confirmed MSS stopped crossing: back to the handshake's
    int64_t pmtud_fragments_sent
    int64_t pmtud_fragments_received
    # invalid datagrams dropped, per InvalidReason
    int64_t invalid[INVALID_REASON_COUNT]
    int64_t duplicate_packets   # data already received (not invalid, but worth seeing)
    int64_t late_packets        # well-formed stragglers (delayed or duplicated by the network)
                                # that came after the step they belong to: not invalid either
    # the congestion controller's model (bbr_* keys), when its ops.report has one
    bint cc_reported
    int64_t cc_payload_size     # bytes per packet, for the model's rates in Mbit/s
    CCReport cc


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------
cdef struct Conn:
    ConnOptions opts
    int state                   # ConnState
    int error                   # UDT error code of a failure (connect/broken/peer), 0 if none
    uint32_t socket_id
    uint32_t peer_socket_id
    sockaddr_storage peer_addr
    bint is_ipv6
    bint rendezvous
    bint peer_shutdown          # peer sent SHUTDOWN
    bint peer_reset             # peer closed with data it never delivered (error signal 2001,
                                # or SHUTDOWN while our receive side still had holes)
    bint closing                # conn_close called, draining
    bint is_server              # created by conn_accept (answers duplicate conclusions)
    bint buffers_ready          # buffers and loss lists allocated
    bint cc_ready               # CC ops.init called (ops.close due in conn_free)
    int mss                     # negotiated
    int payload_size            # what we put in one data packet
    int recv_payload_size       # largest payload we accept (mss - 44, as UDT4 sends)
    int flight_flag_size        # ours, as announced
    int64_t start_time          # conn_init's now: origin of header timestamps
    uint64_t rng
    # --- handshake ---
    int32_t isn                 # our sending ISN
    int32_t peer_isn            # first sequence we expect from the peer
    int hs_req_type             # request type we are sending while connecting
    int32_t reject_req_type     # request type of the peer's refusal (>= 1000), 0 if none
    uint32_t hs_cookie
    int64_t hs_next_time        # next (re)transmission of our request
    int64_t connect_deadline
    int32_t hs_sent             # handshake requests sent by this connect (a failed one reports it)
    bint hs_peer_seen           # rendezvous: a handshake from the peer was received
    int peer_mss                # from the peer's handshake (rendezvous completion)
    int peer_flight_flag_size
    bint hs_reply_due           # answer a handshake with the stored response
    uint8_t hs_response[HANDSHAKE_MAX_OUT]   # stored response (server) / agreement (rendezvous)
    int hs_response_len
    bint hs_response_valid
    bint hs_ext_seen            # client: the listener's induction answer carried our extension
    uint32_t peer_caps          # capability bits of the peer's extension (0: a plain UDT4/SRT peer)
    uint32_t caps               # negotiated: ours & the peer's (CAP_* in udt/core/hsext.pxd)
    uint8_t peer_ip[16]         # address bytes the peer sent to (our address as it sees it)
    bint crypto_answer_set      # server: conn_accept appends crypto_answer (protocol.md §12)
    uint8_t crypto_answer[32]
    # --- buffers and loss lists ---
    SendBuffer snd
    RecvBuffer rcv
    LossList snd_loss
    LossList rcv_loss
    # --- sender ---
    int32_t snd_una             # oldest unacknowledged seq (data ACK)
    int32_t snd_last_ack        # last ACK seen (flow window accounting; light ACKs too)
    int32_t snd_next_seq        # next new sequence number
    int32_t snd_curr_seq        # largest sequence sent (snd_next_seq - 1)
    bint exp_probing            # an EXP probed a udt peer: NAKs up to exp_probe_seq are no news
    int32_t exp_probe_seq       # snd_curr_seq when it did (the CC already had its on_timeout)
    int64_t flow_window
    int64_t peer_avail          # receive buffer the peer's newest full ACK reported free (packets)
    int64_t peer_avail_max      # the most it ever reported: its reader had caught up then
    int64_t snd_empty_time      # when an ACK last released the final unacknowledged packet
    int64_t delivery_rate       # pkts/s, from ACK word 4
    bint rate_sampled           # an ACK carried a receive rate (until then the CC sees rate 0)
    int64_t bandwidth           # pkts/s, from ACK word 5
    int64_t next_send_time      # pacing schedule
    double next_send_exact      # the same with sub-µs precision (period may be < 1 µs apart)
    bint probe_sent             # the last packet opened a packet pair (next goes at once)
    int64_t snd_busy_since      # start of the current "buffer not empty" period (stats)
    int32_t last_ack2_ack_no
    int32_t pending_ack2[PENDING_ACK2]
    int pending_ack2_count
    PendingDrop pending_drop[PENDING_DROPS]
    int pending_drop_count
    CCState cc
    # --- receiver ---
    int32_t rcv_largest         # largest seq received (peer_isn - 1 initially)
    int32_t rcv_last_ack        # ack point of the last full ACK sent
    int32_t rcv_last_ack_ack    # ack point confirmed by the peer's ACK2
    int64_t rcv_last_ack_time   # when the last full ACK was sent
    int64_t rcv_last_6word_time
    int32_t ack_no              # last full ACK number used
    AckRecord ack_history[ACK_HISTORY_SIZE]
    int ack_history_pos
    int ack_history_count
    int64_t rtt_us
    int64_t rttvar_us
    bint rtt_sampled            # the first measurement replaces the 100 ms / 50 ms guesses
    int pkts_since_ack          # data packets since the last full ACK
    int light_ack_count
    bint full_ack_due
    bint light_ack_due
    int64_t next_ack_time
    int64_t next_nak_time
    int32_t pending_nak_first[PENDING_NAK_RANGES]
    int32_t pending_nak_last[PENDING_NAK_RANGES]
    int pending_nak_count
    bint nak_report_due         # send the whole receiver loss list
    int32_t nak_horizon         # losses up to here are older than a NAK period: re-reported
    RateEstimator rate
    # --- liveness ---
    int exp_count
    int64_t last_rsp_time       # EXP reference (reset by peer packets and by each expiry)
    int64_t last_peer_activity  # last packet from the peer (broken detection)
    bint keepalive_due
    int shutdown_due            # SHUTDOWN copies still to send: UDT has no ACK for it, and a
                                # lost one leaves the peer waiting for its broken timer
    int64_t shutdown_next_time  # when the next copy is due (they go SHUTDOWN_SPACING_US apart)
    bint shutdown_burst         # the port closes with this socket: the copies go out at once
    int reset_due               # error signals (2001) still to send before SHUTDOWN: we closed
                                # with data undelivered, and the peer must not read a clean EOF
    int64_t linger_deadline
    # --- half-close (CAP_HALF_CLOSE negotiated) ---
    bint wr_shut                # shutdown(SHUT_WR): no more writes; EOF goes once all is acked
    bint eof_acked              # the peer confirmed our EOF
    int64_t eof_next_time       # next (re)transmission of our EOF
    bint peer_eof               # the peer shut its sending side: reads end with EOF, we may send
    bint eof_ack_due            # answer the peer's EOF (every copy, the answer may be lost)
    int32_t eof_ack_seq         # the sequence number that EOF carried
    # --- path-MTU discovery (CAP_PMTUD and both TLV 3: protocol.md §13, _core.pyx) ---
    int peer_pmtud_max          # the peer's TLV 3 (0: it offered none)
    int pmtud_max               # negotiated ceiling: min of both (0: discovery off)
    int pmtud_base_mss          # the handshake's MSS: the floor, and the fallback
    int pmtud_fail              # smallest size whose probes were lost (0: none yet)
    int pmtud_probe             # size of the probe in flight (0: none)
    uint32_t pmtud_probe_id
    int pmtud_tries             # copies of this size lost so far
    bint pmtud_probe_due        # send the probe now
    bint pmtud_done             # the search is over
    bint pmtud_wait_peer        # server: the first probe waits for the client's first packet
    int64_t pmtud_deadline      # the probe in flight counts as lost at this time
    int pmtud_ack_size          # receiver: datagram size of the probe to confirm (0: none)
    uint32_t pmtud_ack_id
    uint32_t pmtud_base_ack_id  # receiver: a base-size probe to confirm (0: none), kept apart
                                # so that it never hides the big copy sent just before it
    bint pmtud_probe_out        # a probe just left conn_next_datagram_zc: the multiplexer sends
                                # it last in its burst, with DF (Channel.c_probe_mode), and clears this
    int64_t pmtud_probes_sent
    int64_t pmtud_probes_lost
    int64_t pmtud_probes_confirmed
    # black holes (protocol.md §13): a suspicion probes the current MSS; its loss falls back
    bint pmtud_confirming       # the probe in flight checks the current MSS (an EXP with data out)
    bint pmtud_base_due         # ... and a probe of the base MSS follows each copy
    bint pmtud_base_heard       # ... which the peer confirmed: small packets cross, big ones not
    int64_t pmtud_raise_time    # the search starts again from the ceiling (0: not planned)
    int64_t pmtud_ack_progress  # last time the cumulative ACK moved (or the MSS grew): NAKs
                                # while it stalls also make the sender check its MSS
    int64_t pmtud_black_holes
    int64_t pmtud_fragments_sent
    int64_t pmtud_fragments_received
    bint pmtud_fragments        # CAP_PMTUD_FRAGMENTS negotiated: packets above the MSS go cut
    int32_t frag_seq            # sender: the packet whose fragments are leaving
    int frag_next               # ... the next fragment's index (frag_count: none in progress)
    int frag_count
    FragArea* frags             # receiver: reassembly (allocated at the first fragment)
    bint zero_window_paced      # new data spaced to UDT4's zero-window trickle in bytes
    # --- stats ---
    Stats stats
    Stats stats_at_clear        # totals at the last clear (interval = total - this)
    int64_t last_clear_time


# ---------------------------------------------------------------------------------------------
# Network side
# ---------------------------------------------------------------------------------------------
# Feed one datagram addressed to this connection.  Invalid datagrams are counted in
# stats.invalid[reason] and dropped.  Returns EventBits.
cdef uint32_t conn_on_datagram(Conn* conn, const uint8_t* buf, size_t length, int64_t now) noexcept nogil
# Write the next datagram due at `now` into out (control first, then retransmissions, then new
# data within flow window, congestion window and pacing).  Returns its length, 0 if nothing is
# due, -6001 if cap is too small (cap >= mss is always enough).
cdef ssize_t conn_next_datagram(Conn* conn, int64_t now, uint8_t* out, size_t cap) noexcept nogil
# Zero-copy variant: writes the 16-byte header of a data packet into out and points *payload at
# the payload inside the send buffer slot (*payload_len bytes); a control packet is written
# whole into out with *payload_len = 0.  Returns the bytes written into out (0 = nothing due).
# The payload pointer stays valid while the caller holds the connection lock and until the next
# conn_write/conn_free; a slot is only reused after the peer acknowledged its sequence, so a
# stale payload can only reach a peer that already has (and ignores) that packet.
cdef ssize_t conn_next_datagram_zc(Conn* conn, int64_t now, uint8_t* out, size_t cap,
                                   const uint8_t** payload, size_t* payload_len) noexcept nogil
# When the next datagram is due: -1 nothing to send, else a time (<= now means now).
cdef int64_t conn_next_send_time(Conn* conn, int64_t now) noexcept nogil

# ---------------------------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------------------------
# Earliest deadline of ACK/NAK/EXP/broken/handshake-retry/connect/linger timers, -1 if none.
cdef int64_t conn_next_timer(Conn* conn) noexcept nogil
# Run every timer due at `now`.  Returns EventBits (EV_WANT_TRANSMIT when packets got queued).
cdef uint32_t conn_on_timer(Conn* conn, int64_t now) noexcept nogil


# ---------------------------------------------------------------------------------------------
# Listener (stateless: keeps no per-client state for inductions); functions in udt/core/listener.pxd
# ---------------------------------------------------------------------------------------------
cdef struct Listener:
    uint8_t key[16]             # SipHash key of the cookie (random, from the caller)
    int64_t start_time
    int64_t slice_us            # cookie time slice (default 60 s); current and previous accepted
    int sock_type               # only this type is accepted (else rejection 1002)
    int mss                     # our MSS (the answer carries min(client, ours))
    int flight_flag_size        # announced in the conclusion response
    int64_t inductions
    int64_t accepted
    int64_t rejected
    int64_t invalid[INVALID_REASON_COUNT]

cdef struct AcceptRequest:
    uint32_t peer_socket_id     # the client's socket ID (mux key: (peer address, this))
    int32_t isn                 # client's ISN: both directions start here
    int mss                     # negotiated: min(client, listener)
    int peer_flight_flag_size
    int sock_type
    uint32_t cookie
    uint8_t self_ip[16]         # our address as the client sent to (raw address bytes)
    sockaddr_storage peer_addr
    bint ext                    # the conclusion carried our extension: answer with ours
    uint32_t peer_caps          # its capability bits
    bint crypto_offered         # the conclusion carried a key-exchange TLV (protocol.md §12)
    uint8_t crypto_offer[32]
    int peer_pmtud_max          # its TLV 3: the largest MSS it accepts (0: no discovery)

# Listener decision codes.
cdef enum ListenerVerdict:
    LISTENER_DROP = 0           # ignore (invalid / bad cookie); counted
    LISTENER_REPLY = 1          # send out[:*out_len] back to the peer (induction or rejection)
    LISTENER_ACCEPT = 2         # valid conclusion: *req filled; look up (peer, peer_socket_id):
                                # existing -> conn_on_datagram on it; backlog full ->
                                # listener_reject; else conn_init + conn_accept


# ---------------------------------------------------------------------------------------------
# Helpers for the multiplexer (packet_peek, shutdown_packet: udt/core/listener.pxd)
# ---------------------------------------------------------------------------------------------
cdef struct PacketInfo:
    uint32_t dst_id             # destination socket ID (0: listener / connecting socket)
    int kind                    # PKT_DATA or the control type
    int32_t seq                 # data: sequence number
    int hs_req_type             # handshake: request type
    uint32_t hs_socket_id       # handshake: the sender's socket ID
    int hs_sock_type
