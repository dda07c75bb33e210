# cython: language_level=3
"""SipHash-2-4 (Aumasson & Bernstein), the keyed hash of the listener's SYN cookie, and
splitmix64, the seeded PRNG of ISNs and the CC's random divisor.

Header-only: ``cdef inline`` helpers that the engine and the test shim cimport.  siphash24 runs
once per handshake, so inlining it into its one caller costs nothing on the packet path.
"""
from libc.stdint cimport uint8_t, uint64_t

cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef inline uint64_t siphash24(const uint8_t* key, const uint8_t* data, size_t length) noexcept nogil:
    cdef uint64_t k0 = _le64(key)
    cdef uint64_t k1 = _le64(key + 8)
    cdef uint64_t v0 = k0 ^ 0x736f6d6570736575ULL
    cdef uint64_t v1 = k1 ^ 0x646f72616e646f6dULL
    cdef uint64_t v2 = k0 ^ 0x6c7967656e657261ULL
    cdef uint64_t v3 = k1 ^ 0x7465646279746573ULL
    cdef uint64_t m
    cdef size_t i, blocks = length // 8
    cdef int _round, r, left
    for i in range(blocks):
        m = _le64(data + 8 * i)
        v3 ^= m
        for _round in range(2):
            v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
            v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
            v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
            v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
        v0 ^= m
    m = (<uint64_t>(length & 0xFF)) << 56
    left = <int>(length & 7)
    for r in range(left):
        m |= (<uint64_t>data[8 * blocks + r]) << (8 * r)
    v3 ^= m
    for _round in range(2):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    v0 ^= m
    v2 ^= 0xFF
    for _round in range(4):
        v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2
        v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0
        v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    return v0 ^ v1 ^ v2 ^ v3


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    """Small PRNG for ISNs and the CC's random decrease divisor (seeded by the caller)."""
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)
