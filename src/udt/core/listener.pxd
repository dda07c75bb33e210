# cython: language_level=3
"""C API of udt/core/listener.pyx: the stateless listener and the multiplexer's Conn-less
helpers (types in udt/_core.pxd)."""
from libc.stdint cimport int64_t, uint8_t, uint32_t
from udt._net cimport sockaddr_storage

from udt._core cimport AcceptRequest, Listener, PacketInfo

# key: 16 random bytes (os.urandom).  The cookie is SipHash-2-4(key, address, port, time slice),
# 32 bits; lst.slice_us (default 60 s) may be changed after init; the current and the previous
# slice are accepted.  Inductions get LISTENER_REPLY (same size as the request), conclusions with
# a bad cookie LISTENER_DROP, version/type/MSS mismatches a 1002 LISTENER_REPLY.
cdef void listener_init(Listener* lst, const uint8_t* key, int sock_type, int mss,
                        int flight_flag_size, int64_t now) noexcept nogil
cdef int listener_on_handshake(Listener* lst, const uint8_t* buf, size_t length,
                               const sockaddr_storage* peer, int64_t now, uint8_t* out,
                               size_t cap, size_t* out_len, AcceptRequest* req) noexcept nogil
# Write the 1002 rejection answering req (full backlog).  Returns its length (64) or -6001.
cdef ssize_t listener_reject(Listener* lst, const AcceptRequest* req, uint8_t* out, size_t cap) noexcept nogil
# The same with another refusal type (>= 1000: the encryption refusals of protocol.md §12).
cdef ssize_t listener_refuse(Listener* lst, const AcceptRequest* req, int req_type, uint8_t* out,
                             size_t cap) noexcept nogil

# Validate a raw datagram's header (and a handshake's CIF) and describe it.  0 or -1 - reason
# (InvalidReason) when it must be dropped before routing.
cdef int packet_peek(const uint8_t* buf, size_t length, PacketInfo* info) noexcept nogil

# The SHUTDOWN a connection that is gone answers its peer with (the multiplexer's memory of
# recently closed connections: the peer never got our SHUTDOWN and still talks to us).
cdef ssize_t shutdown_packet(uint32_t peer_socket_id, uint8_t* out, size_t cap) noexcept nogil
