# cython: language_level=3
"""Packet codec (protocol.md §1-§4): big-endian words, header fields, handshake CIF with the
peer-IP byte-order quirk.

Header-only: ``cdef inline`` helpers that the engine and the test shim cimport (still inlined).
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from udt._net cimport sockaddr_storage, sockaddr_in, sockaddr_in6
from udt._core cimport HEADER_SIZE, HANDSHAKE_SIZE, PKT_HANDSHAKE

cdef enum:
    CONTROL_FLAG = 0x80000000
    LOSS_RANGE_FLAG = 0x80000000
    AF_INET_VALUE = 2
    AF_INET6_VALUE = 10


# Data packet word 1 (protocol.md §3): boundary (2 bits), in-order (1), message number (29).
cdef enum:
    MSG_BOUNDARY_SHIFT = 30
    MSG_INORDER_BIT = 0x20000000
    MSG_NUMBER_MASK = 0x1FFFFFFF    # UDT4's 29-bit field
    MSG_NUMBER_26 = 0x03FFFFFF      # what identifies a message: SRT puts encryption (KK) and
                                    # retransmission (R) flags in the three bits above


cdef inline int msg_boundary(uint32_t word) noexcept nogil:
    return <int>(word >> MSG_BOUNDARY_SHIFT)


cdef inline int32_t msg_number(uint32_t word) noexcept nogil:
    """The message number as udt compares it (26 bits: an SRT retransmission sets bit 26)."""
    return <int32_t>(word & MSG_NUMBER_26)


cdef inline uint32_t msg_word(int boundary, bint inorder, int32_t msgno) noexcept nogil:
    return ((<uint32_t>boundary) << MSG_BOUNDARY_SHIFT) | (MSG_INORDER_BIT if inorder else 0) \
        | (<uint32_t>msgno & MSG_NUMBER_MASK)


cdef inline uint32_t get_u32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline void put_u32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void put_header(uint8_t* p, uint32_t w0, uint32_t w1, uint32_t w2,
                            uint32_t w3) noexcept nogil:
    put_u32(p, w0)
    put_u32(p + 4, w1)
    put_u32(p + 8, w2)
    put_u32(p + 12, w3)


cdef inline uint32_t control_word0(int ctrl_type, int ext_type) noexcept nogil:
    return CONTROL_FLAG | ((<uint32_t>ctrl_type & 0x7FFF) << 16) | (<uint32_t>ext_type & 0xFFFF)


cdef inline size_t put_control(uint8_t* p, int ctrl_type, uint32_t info,
                               uint32_t dst) noexcept nogil:
    """A control packet without CIF: header + the 4 zero bytes UDT4 always sends (20 B)."""
    put_header(p, control_word0(ctrl_type, 0), info, 0, dst)
    put_u32(p + 16, 0)
    return 20


cdef struct Handshake:
    int32_t version
    int32_t sock_type
    int32_t isn
    int32_t mss
    int32_t flight_flag_size
    int32_t req_type
    uint32_t socket_id
    uint32_t cookie
    uint8_t peer_ip[16]          # raw address bytes (network order, as in sockaddr)
    bint ext                     # not in the CIF: the receiver found our extension trailer
    uint32_t ext_caps            # its capability bits (udt/core/hsext.pxd)


cdef inline void handshake_decode(const uint8_t* cif, Handshake* hs) noexcept nogil:
    """Decode a 48-byte CIF; the peer IP comes back as raw address bytes (quirk undone)."""
    cdef int i
    hs.version = <int32_t>get_u32(cif)
    hs.sock_type = <int32_t>get_u32(cif + 4)
    hs.isn = <int32_t>get_u32(cif + 8)
    hs.mss = <int32_t>get_u32(cif + 12)
    hs.flight_flag_size = <int32_t>get_u32(cif + 16)
    hs.req_type = <int32_t>get_u32(cif + 20)
    hs.socket_id = get_u32(cif + 24)
    hs.cookie = get_u32(cif + 28)
    # UDT4 writes each 4-byte group of the address reversed (little-endian int through htonl).
    for i in range(16):
        hs.peer_ip[i] = cif[32 + (i & ~3) + 3 - (i & 3)]


cdef inline size_t handshake_encode(uint8_t* p, const Handshake* hs, uint32_t dst) noexcept nogil:
    """Header (dest ID dst, timestamp 0 like UDT4) + 48-byte CIF; returns 64."""
    cdef int i
    put_header(p, control_word0(PKT_HANDSHAKE, 0), 0, 0, dst)
    cdef uint8_t* cif = p + HEADER_SIZE
    put_u32(cif, <uint32_t>hs.version)
    put_u32(cif + 4, <uint32_t>hs.sock_type)
    put_u32(cif + 8, <uint32_t>hs.isn)
    put_u32(cif + 12, <uint32_t>hs.mss)
    put_u32(cif + 16, <uint32_t>hs.flight_flag_size)
    put_u32(cif + 20, <uint32_t>hs.req_type)
    put_u32(cif + 24, hs.socket_id)
    put_u32(cif + 28, hs.cookie)
    for i in range(16):
        cif[32 + (i & ~3) + 3 - (i & 3)] = hs.peer_ip[i]
    return HANDSHAKE_SIZE


cdef inline void address_bytes(const sockaddr_storage* addr, uint8_t* out16) noexcept nogil:
    """The raw address bytes of addr (IPv4: 4 bytes then zeros) for the handshake's peer IP."""
    cdef const sockaddr_in* a4
    cdef const sockaddr_in6* a6
    memset(out16, 0, 16)
    if addr.ss_family == AF_INET6_VALUE:
        a6 = <const sockaddr_in6*>addr
        memcpy(out16, &a6.sin6_addr, 16)
    elif addr.ss_family == AF_INET_VALUE:
        a4 = <const sockaddr_in*>addr
        memcpy(out16, &a4.sin_addr, 4)


cdef inline uint16_t address_port(const sockaddr_storage* addr) noexcept nogil:
    """Port in network byte order as stored (only used as hash input)."""
    if addr.ss_family == AF_INET6_VALUE:
        return (<const sockaddr_in6*>addr).sin6_port
    return (<const sockaddr_in*>addr).sin_port
