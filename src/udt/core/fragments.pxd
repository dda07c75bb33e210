# cython: language_level=3
"""The black-hole fallback's fragments (protocol.md §13): how a data packet longer than the
path now carries is cut, and the receiver's reassembly.  After a black hole the packets already
in the send ring keep their sequence numbers and lengths (a UDT4 sequence number cannot be
split), so each leaves as a few EXT_PMTU_FRAGMENT controls of the base MSS; the receiver joins
them in place, rebuilds the data header in front and hands the packet to the normal data path.

The reassembly area exists only after the first fragment (a connection that never fell back
pays one pointer) and goes with the idle release or conn_free.  Header-only ``cdef inline``:
the engine's receive path and lifecycle's conn_free share it."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from udt._pages cimport pages_map, pages_unmap
from udt._core cimport FragArea, FragEntry, PMTUD_FRAG_MAX, PMTUD_FRAG_SLOTS, PMTUD_FRAG_WORDS


cdef inline int frag_count(int length, int room) noexcept nogil:
    """The fewest fragments of at most room bytes that carry length bytes (at least 2), or 0
    when that takes more than PMTUD_FRAG_MAX."""
    cdef int n
    if room <= 0:
        return 0
    n = (length + room - 1) // room
    if n < 2:
        n = 2
    return n if n <= PMTUD_FRAG_MAX else 0


cdef inline int frag_stride(int length, int count) noexcept nogil:
    """Bytes in every fragment but the last: ceil(length / count)."""
    return (length + count - 1) // count


cdef inline int frag_size(int length, int count, int index) noexcept nogil:
    """Bytes of fragment index (<= 0: no such fragment; a count the sender would not choose)."""
    cdef int stride = frag_stride(length, count)
    cdef int rest = length - index * stride
    return rest if rest < stride else stride


cdef inline void frags_free(FragArea** area) noexcept nogil:
    cdef int k
    if area[0] == NULL:
        return
    for k in range(PMTUD_FRAG_SLOTS):
        pages_unmap(area[0].entries[k].data, <size_t>area[0].data_bytes)
    free(area[0])
    area[0] = NULL


cdef inline FragEntry* frags_entry(FragArea** area, int data_bytes, int32_t seq, int length,
                                   int count, uint32_t msg_word, uint32_t timestamp) noexcept nogil:
    """The entry joining seq: the one already started, else a free one, else the oldest (its
    packet comes again whole after the NAK).  NULL when out of memory."""
    cdef FragArea* a = area[0]
    cdef FragEntry* e = NULL
    cdef FragEntry* x
    cdef int k
    if a == NULL:
        a = <FragArea*>calloc(1, sizeof(FragArea))
        if a == NULL:
            return NULL
        a.data_bytes = data_bytes
        area[0] = a
    for k in range(PMTUD_FRAG_SLOTS):
        x = &a.entries[k]
        if x.length > 0 and x.seq == seq:
            return x
        if e == NULL or (e.length > 0 and (x.length == 0 or x.started < e.started)):
            e = x
    if e.data == NULL:
        e.data = <uint8_t*>pages_map(<size_t>a.data_bytes)    # 64 KiB: udt/_pages.pxd says why
        if e.data == NULL:
            return NULL
    e.seq = seq
    e.length = length
    e.count = count
    e.received = 0
    e.msg_word = msg_word
    e.timestamp = timestamp
    e.started = a.clock
    a.clock += 1
    for k in range(PMTUD_FRAG_WORDS):
        e.have[k] = 0
    return e


cdef inline bint frag_take(FragEntry* e, int index) noexcept nogil:
    """Note fragment index as joined; False when it already was (a duplicate)."""
    cdef uint64_t bit = (<uint64_t>1) << (index & 63)
    if e.have[index >> 6] & bit:
        return False
    e.have[index >> 6] |= bit
    e.received += 1
    return True
