# cython: language_level=3
"""Send and receive buffers: rings of fixed-size packet slots allocated once per connection.

Header-only ``cdef inline`` functions: the engine touches the rings for every packet.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset
from udt._core cimport (BOUNDARY_FIRST, BOUNDARY_LAST, BOUNDARY_SOLO, RecvBuffer, RecvSlot, SendBuffer,
                        SendSlot)
from udt.core.seq cimport seq_add, seq_inc, seq_off
from udt.core.packet cimport msg_boundary, msg_number, MSG_BOUNDARY_SHIFT, MSG_INORDER_BIT

cdef enum RecvSlotState:
    RSLOT_EMPTY = 0
    RSLOT_FILLED = 1
    RSLOT_DROPPED = 2       # dropped by a message drop request: skipped by readers
    RSLOT_TAKEN = 3         # an out-of-order message already delivered from here

# ---------------------------------------------------------------------------------------------
# Send buffer
# ---------------------------------------------------------------------------------------------
cdef inline int sndbuf_alloc(SendBuffer* b, int capacity, int slot_size) noexcept nogil:
    b.data = <uint8_t*>malloc(<size_t>capacity * <size_t>slot_size)
    b.slots = <SendSlot*>calloc(capacity, sizeof(SendSlot))
    b.capacity = capacity
    b.slot_size = slot_size
    b.head = 0
    b.count = 0
    b.bytes = 0
    b.next_msgno = 1
    b.tail_open = False
    if b.data == NULL or b.slots == NULL:
        sndbuf_free(b)
        return -1
    return 0


cdef inline void sndbuf_free(SendBuffer* b) noexcept nogil:
    free(b.data)
    free(b.slots)
    b.data = NULL
    b.slots = NULL
    b.capacity = 0
    b.count = 0
    b.bytes = 0


cdef inline int sndbuf_index(SendBuffer* b, int64_t k) noexcept nogil:
    """Slot index of the k-th packet from the head."""
    return <int>((b.head + k) % b.capacity)


cdef inline uint8_t* sndbuf_payload(SendBuffer* b, int idx) noexcept nogil:
    return b.data + <size_t>idx * <size_t>b.slot_size


cdef inline void sndbuf_release(SendBuffer* b, int64_t n) noexcept nogil:
    """Drop the n oldest packets (acknowledged)."""
    cdef int64_t k
    cdef int idx
    if n > b.count:
        n = b.count
    for k in range(n):
        idx = sndbuf_index(b, k)
        b.bytes -= b.slots[idx].length
    b.head = <int>((b.head + n) % b.capacity)
    b.count -= <int>n


# ---------------------------------------------------------------------------------------------
# Receive buffer
# ---------------------------------------------------------------------------------------------
cdef inline int rcvbuf_alloc(RecvBuffer* b, int capacity, int slot_size, int32_t first_seq) noexcept nogil:
    b.data = <uint8_t*>malloc(<size_t>capacity * <size_t>slot_size)
    b.slots = <RecvSlot*>calloc(capacity, sizeof(RecvSlot))
    b.capacity = capacity
    b.slot_size = slot_size
    b.head = 0
    b.read_seq = first_seq
    b.frontier_seq = first_seq
    b.read_offset = 0
    b.contiguous_bytes = 0
    b.ooo_messages = 0
    if b.data == NULL or b.slots == NULL:
        rcvbuf_free(b)
        return -1
    return 0


cdef inline void rcvbuf_free(RecvBuffer* b) noexcept nogil:
    free(b.data)
    free(b.slots)
    b.data = NULL
    b.slots = NULL
    b.capacity = 0


cdef inline int rcvbuf_index(RecvBuffer* b, int64_t off) noexcept nogil:
    return <int>((b.head + off) % b.capacity)


cdef inline uint8_t* rcvbuf_payload(RecvBuffer* b, int idx) noexcept nogil:
    return b.data + <size_t>idx * <size_t>b.slot_size


cdef enum:
    FRONTIER_MOVED = 1
    FRONTIER_PASSED_MESSAGE_END = 2


cdef inline int rcvbuf_advance_frontier(RecvBuffer* b) noexcept nogil:
    """Move the in-order frontier over every present slot.  Returns FRONTIER_MOVED if it moved,
    plus FRONTIER_PASSED_MESSAGE_END if it went past the last packet of a message (message
    mode readers only need to look when that happens)."""
    cdef int64_t off = seq_off(b.read_seq, b.frontier_seq)
    cdef int idx, bnd
    cdef int result = 0
    while off < b.capacity:
        idx = rcvbuf_index(b, off)
        if b.slots[idx].state == RSLOT_EMPTY:
            break
        if b.slots[idx].state == RSLOT_FILLED:
            b.contiguous_bytes += b.slots[idx].length
            bnd = msg_boundary(b.slots[idx].msg_word)
            if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
                result |= FRONTIER_PASSED_MESSAGE_END
        off += 1
        b.frontier_seq = seq_inc(b.frontier_seq)
        result |= FRONTIER_MOVED
    return result


cdef inline void rcvbuf_consume_head(RecvBuffer* b) noexcept nogil:
    """Forget the head slot (read, dropped or taken) and move read_seq on."""
    cdef int idx = b.head
    if b.slots[idx].state == RSLOT_FILLED:
        b.contiguous_bytes -= b.slots[idx].length - b.read_offset
    b.slots[idx].state = RSLOT_EMPTY
    b.slots[idx].length = 0
    b.read_offset = 0
    b.head = (b.head + 1) % b.capacity
    b.read_seq = seq_inc(b.read_seq)


cdef inline bint rcvbuf_message_complete(RecvBuffer* b, int64_t off) noexcept nogil:
    """Is the packet at receive offset off part of a complete out-of-order (o=0) message?"""
    cdef int idx = rcvbuf_index(b, off)
    cdef uint32_t word = b.slots[idx].msg_word
    cdef int32_t msgno = msg_number(word)
    cdef int64_t k
    cdef int bnd
    if word & MSG_INORDER_BIT:
        return False
    k = off
    while True:                                 # back to the first packet
        idx = rcvbuf_index(b, k)
        if b.slots[idx].state != RSLOT_FILLED or msg_number(b.slots[idx].msg_word) != msgno:
            return False
        bnd = msg_boundary(b.slots[idx].msg_word)
        if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
            break
        k -= 1
        if k < 0:
            return False
    k = off
    while True:                                 # forward to the last packet
        idx = rcvbuf_index(b, k)
        if b.slots[idx].state != RSLOT_FILLED or msg_number(b.slots[idx].msg_word) != msgno:
            return False
        bnd = msg_boundary(b.slots[idx].msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            return True
        k += 1
        if k >= b.capacity:
            return False
