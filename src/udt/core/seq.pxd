# cython: language_level=3
"""31-bit sequence arithmetic (protocol.md §2): wraps at 2^31, compared with the half-range rule.

Header-only: ``cdef inline`` helpers that the engine and the test shim cimport (still inlined).
"""
from libc.stdint cimport int32_t, int64_t

cdef enum:
    SEQ_MAX = 0x7FFFFFFF
    SEQ_THRESHOLD = 0x40000000      # half of the sequence space: "a < b" when b - a < this
    MSGNO_LIMIT = 0x4000000         # msgno stays below 2^26 (SRT reads the next bits as flags)
    ACKNO_MAX = 0x7FFFFFFF


cdef inline int64_t seq_cmp(int32_t a, int32_t b) noexcept nogil:
    """Signed comparison of a and b: < 0 when a comes before b (UDT4's CSeqNo::seqcmp)."""
    cdef int64_t d = <int64_t>a - <int64_t>b
    if d < SEQ_THRESHOLD and d > -SEQ_THRESHOLD:
        return d
    return -d


cdef inline int64_t seq_off(int32_t a, int32_t b) noexcept nogil:
    """How far b is ahead of a (negative when b is behind a)."""
    cdef int64_t d = <int64_t>b - <int64_t>a
    if d < SEQ_THRESHOLD and d > -SEQ_THRESHOLD:
        return d
    if a < b:
        return d - SEQ_MAX - 1
    return d + SEQ_MAX + 1


cdef inline int32_t seq_add(int32_t a, int64_t n) noexcept nogil:
    """a + n modulo 2^31 (n may be negative)."""
    return <int32_t>((<int64_t>a + n) & SEQ_MAX)


cdef inline int32_t seq_inc(int32_t a) noexcept nogil:
    return <int32_t>((<int64_t>a + 1) & SEQ_MAX)


cdef inline int32_t seq_dec(int32_t a) noexcept nogil:
    return <int32_t>((<int64_t>a - 1) & SEQ_MAX)


cdef inline int32_t msgno_inc(int32_t m) noexcept nogil:
    """Next message number: 1 .. 2^26-1, wrapping to 1."""
    m += 1
    if m >= MSGNO_LIMIT:
        return 1
    return m


cdef inline int32_t ackno_inc(int32_t a) noexcept nogil:
    """Next full-ACK number: 1, 2, 3 … wrapping to 1 after 2^31-1."""
    if a >= ACKNO_MAX or a < 0:
        return 1
    return a + 1
