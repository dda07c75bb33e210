# cython: language_level=3
"""The udt handshake extension (protocol.md §11): a trailer after the 48-byte UDT4 handshake,
offered by a udt client in its conclusion (and by a rendezvous peer in every request), answered
by a udt listener only when offered.  UDT4 and SRT peers read 48 bytes and ignore the rest.

    magic u32 "UDTX" | version u8 | reserved u8 (0) | TLV bytes u16 | TLVs
    TLV: type u16 | length u16 | value (length bytes, padded to 4)

Unknown TLV types are skipped (a later version adds TLVs, never changes one); a trailer
without the magic is not ours and is ignored; a trailer with the magic but inconsistent lengths
is garbage and the handshake is dropped."""
from libc.stdint cimport uint8_t, uint32_t

from udt.core.packet cimport get_u32, put_u32

cdef enum:
    HSEXT_MAGIC = 0x55445458            # "UDTX"
    HSEXT_VERSION = 1
    HSEXT_HEADER_SIZE = 8
    HSEXT_TLV_CAPS = 1                  # value: u32 capability bits
    HSEXT_TLV_CRYPTO = 2                # value: 32 bytes, the key exchange (protocol.md §12)
    HSEXT_CRYPTO_SIZE = 32              # client: nonce 16 | proof 16; server: nonce 16 | proof 16
    HSEXT_CRYPTO_TOTAL = 52             # header + caps TLV + crypto TLV (HSEXT_SIZE + 36)
    HSEXT_TLV_MAX_MSS = 3               # value: u32, the largest MSS we accept (path-MTU discovery)
    HSEXT_SIZE = 16                     # what we send: header + the capabilities TLV
    HSEXT_MSS_TLV_SIZE = 8              # the max-MSS TLV, appended when discovery is on
    HSEXT_MAX_SIZE = 256                # longest trailer accepted (room for later TLVs)
    CAP_HALF_CLOSE = 0x1                # shutdown(SHUT_WR) sends EOF, the peer may still send
    CAP_PMTUD = 0x2                     # path-MTU discovery: probes EXT_PMTU_PROBE / _ACK
    CAP_PMTUD_FRAGMENTS = 0x4           # black-hole fallback: big packets as EXT_PMTU_FRAGMENTs
    CAPS_LOCAL = CAP_HALF_CLOSE | CAP_PMTUD | CAP_PMTUD_FRAGMENTS    # what this implementation offers
    # (CAP_PMTUD counts only when both handshakes carry TLV 3 too)
    # user-defined control subtypes (word 0's extended type) of the half-close; SRT's are 1-8
    EXT_EOF = 0x5501                    # word 1: our next sequence number (all before it acked)
    EXT_EOF_ACK = 0x5502                # word 1: the sequence number of the EOF it confirms
    EXT_PMTU_PROBE = 0x5503             # word 1: probe id; padded to the candidate MSS
    EXT_PMTU_ACK = 0x5504               # word 1: probe id, CIF word: the probe's datagram size
    EXT_PMTU_FRAGMENT = 0x5505          # word 1: data sequence number; CIF: message word,
                                        # index << 16 | count, payload length; then the bytes


cdef inline size_t hsext_encode(uint8_t* p, uint32_t caps) noexcept nogil:
    """Write our trailer at p (HSEXT_SIZE bytes); returns HSEXT_SIZE."""
    put_u32(p, HSEXT_MAGIC)
    put_u32(p + 4, (<uint32_t>HSEXT_VERSION << 24) | (HSEXT_SIZE - HSEXT_HEADER_SIZE))
    put_u32(p + 8, (<uint32_t>HSEXT_TLV_CAPS << 16) | 4)
    put_u32(p + 12, caps)
    return HSEXT_SIZE


cdef inline int hsext_decode(const uint8_t* p, size_t length, uint32_t* caps) noexcept nogil:
    """Parse the bytes after the 48-byte handshake.  Returns 1 (a trailer: caps set), 0 (none,
    or not ours: a plain peer) or -1 (ours but malformed)."""
    cdef uint32_t w, tlv_bytes, t, n
    cdef size_t pos
    caps[0] = 0
    if length < 4 or get_u32(p) != HSEXT_MAGIC:
        return 0
    if length < HSEXT_HEADER_SIZE or length > HSEXT_MAX_SIZE:
        return -1
    w = get_u32(p + 4)
    tlv_bytes = w & 0xFFFF
    if (w >> 24) == 0 or ((w >> 16) & 0xFF) != 0 or HSEXT_HEADER_SIZE + tlv_bytes != length:
        return -1
    pos = HSEXT_HEADER_SIZE
    while pos < length:
        if pos + 4 > length:
            return -1
        w = get_u32(p + pos)
        t = w >> 16
        n = w & 0xFFFF
        if pos + 4 + ((n + 3) & ~3u) > length:
            return -1
        if t == HSEXT_TLV_CAPS:
            if n != 4:
                return -1
            caps[0] = get_u32(p + pos + 4)
        pos += 4 + ((n + 3) & ~3u)
    return 1


cdef inline size_t hsext_encode_crypto(uint8_t* p, uint32_t caps, const uint8_t* value) noexcept nogil:
    """Our trailer with the key-exchange TLV after the capabilities (protocol.md §12);
    writes and returns HSEXT_CRYPTO_TOTAL bytes."""
    cdef int i
    put_u32(p, HSEXT_MAGIC)
    put_u32(p + 4, (<uint32_t>HSEXT_VERSION << 24) | (HSEXT_CRYPTO_TOTAL - HSEXT_HEADER_SIZE))
    put_u32(p + 8, (<uint32_t>HSEXT_TLV_CAPS << 16) | 4)
    put_u32(p + 12, caps)
    put_u32(p + 16, (<uint32_t>HSEXT_TLV_CRYPTO << 16) | HSEXT_CRYPTO_SIZE)
    for i in range(HSEXT_CRYPTO_SIZE):
        p[20 + i] = value[i]
    return HSEXT_CRYPTO_TOTAL


cdef inline bint hsext_find_crypto(const uint8_t* p, size_t length, uint8_t* value) noexcept nogil:
    """Copy the key-exchange TLV of a trailer hsext_decode accepted into value (32 bytes);
    False when the trailer has none (or one of the wrong length)."""
    cdef uint32_t w, t, n
    cdef size_t pos = HSEXT_HEADER_SIZE
    cdef int i
    if length < HSEXT_HEADER_SIZE or get_u32(p) != HSEXT_MAGIC:
        return False
    while pos + 4 <= length:
        w = get_u32(p + pos)
        t = w >> 16
        n = w & 0xFFFF
        if pos + 4 + ((n + 3) & ~3u) > length:
            return False
        if t == HSEXT_TLV_CRYPTO and n == HSEXT_CRYPTO_SIZE:
            for i in range(HSEXT_CRYPTO_SIZE):
                value[i] = p[pos + 4 + i]
            return True
        pos += 4 + ((n + 3) & ~3u)
    return False


cdef inline size_t hsext_add_max_mss(uint8_t* p, size_t length, uint32_t max_mss) noexcept nogil:
    """Append TLV 3 (the largest MSS we accept) to the trailer of length bytes at p, when
    max_mss > 0; returns the new length."""
    if max_mss == 0:
        return length
    put_u32(p + length, (<uint32_t>HSEXT_TLV_MAX_MSS << 16) | 4)
    put_u32(p + length + 4, max_mss)
    length += HSEXT_MSS_TLV_SIZE
    put_u32(p + 4, (<uint32_t>HSEXT_VERSION << 24) | <uint32_t>(length - HSEXT_HEADER_SIZE))
    return length


cdef inline uint32_t hsext_find_max_mss(const uint8_t* p, size_t length) noexcept nogil:
    """TLV 3 of a trailer hsext_decode accepted; 0 when absent (no discovery)."""
    cdef uint32_t w, t, n
    cdef size_t pos = HSEXT_HEADER_SIZE
    if length < HSEXT_HEADER_SIZE or get_u32(p) != HSEXT_MAGIC:
        return 0
    while pos + 4 <= length:
        w = get_u32(p + pos)
        t = w >> 16
        n = w & 0xFFFF
        if pos + 4 + ((n + 3) & ~3u) > length:
            return 0
        if t == HSEXT_TLV_MAX_MSS and n == 4:
            return get_u32(p + pos + 4)
        pos += 4 + ((n + 3) & ~3u)
    return 0
