# cython: language_level=3
"""C API of udt/core/lifecycle.pyx: connection setup, handshakes, close (types and
return conventions in udt/_core.pxd)."""
from libc.stdint cimport int64_t, uint8_t, uint32_t
from udt._net cimport sockaddr_storage

from udt._core cimport AcceptRequest, Conn, ConnOptions

# Defaults of protocol.md §9 (MSS 1500, FC 25600, buffers 8192 packets, broken 10 s, linger 3 s, native CC).
cdef void conn_options_default(ConnOptions* opts) noexcept nogil
# Zero the connection and record options, socket ID and the time origin.  State OPENED.
# Returns 0 or -5003 (bad option values).  Allocates nothing yet.
cdef int conn_init(Conn* conn, const ConnOptions* opts, uint32_t socket_id, int64_t now) noexcept nogil
# Release the buffers and loss lists (and the CC via ops.close).  Safe on any state, idempotent.
cdef void conn_free(Conn* conn) noexcept nogil
# Start connecting to `peer` (client/server, or rendezvous when opts.rendezvous).  Allocates the
# buffers; the first handshake is due at once (conn_next_send_time == now).  0 or -error.
cdef int conn_connect(Conn* conn, const sockaddr_storage* peer, int64_t now) noexcept nogil
# Server side: initialise a conn_init'ed Conn from a listener's AcceptRequest, state CONNECTED,
# and write the conclusion response (64 B) into out.  The response is stored: duplicate
# conclusions routed to this Conn are answered with it again.  Returns the response length or
# -error (-3002 no memory, -1002 unacceptable parameters: send listener_reject's answer then).
cdef ssize_t conn_accept(Conn* conn, const AcceptRequest* req, int64_t now,
                         uint8_t* out, size_t cap) noexcept nogil
# Graceful close: keep sending until every byte written is acknowledged, then send SHUTDOWN and
# go CLOSED (EV_CLOSED from a later call), bounded by opts.linger_us (0 = conn_abort).
# Returns event bits (EV_CLOSED at once when nothing is left to drain).
cdef uint32_t conn_close(Conn* conn, int64_t now) noexcept nogil
# Half-close (CAP_HALF_CLOSE negotiated): no more writes; once everything written is acknowledged
# an EOF goes to the peer, repeated until it confirms (conn.eof_acked).  The connection stays
# CONNECTED: we still receive.  0, -5000 when the peer did not negotiate it (close instead),
# -2002 when not connected.
cdef int conn_shutdown_write(Conn* c, int64_t now) noexcept nogil
# Abort: queue SHUTDOWN (if connected) and go CLOSED at once; pending data is discarded.
cdef uint32_t conn_abort(Conn* conn, int64_t now) noexcept nogil
# Change UDT_MAXBW while running (bytes/s, -1 unlimited).
cdef void conn_set_max_bandwidth(Conn* conn, int64_t bytes_per_second) noexcept nogil
# The packet paths' entries (udt/_core.pyx): a handshake datagram for this connection, and the
# rendezvous completion a first data/control packet from the peer implies (answer: send our
# agreement too).  Both return EventBits.
cdef uint32_t conn_on_handshake(Conn* c, const uint8_t* buf, size_t length, int64_t now) noexcept nogil
cdef uint32_t conn_rendezvous_complete(Conn* c, int64_t now, bint answer) noexcept nogil
