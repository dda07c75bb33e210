# Send and receive buffers: rings of fixed-size packet slots allocated once per connection.
# Included by udt/_core.pyx.

cdef enum RecvSlotState:
    RSLOT_EMPTY = 0
    RSLOT_FILLED = 1
    RSLOT_DROPPED = 2       # dropped by a message drop request: skipped by readers
    RSLOT_TAKEN = 3         # an out-of-order message already delivered from here

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


# ---------------------------------------------------------------------------------------------
# Send buffer
# ---------------------------------------------------------------------------------------------
cdef int sndbuf_alloc(SendBuffer* b, int capacity, int slot_size) noexcept nogil:
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


cdef void sndbuf_free(SendBuffer* b) noexcept nogil:
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


cdef void sndbuf_release(SendBuffer* b, int64_t n) noexcept nogil:
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
cdef int rcvbuf_alloc(RecvBuffer* b, int capacity, int slot_size, int32_t first_seq) noexcept nogil:
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


cdef void rcvbuf_free(RecvBuffer* b) noexcept nogil:
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


cdef int rcvbuf_advance_frontier(RecvBuffer* b) noexcept nogil:
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


cdef void rcvbuf_consume_head(RecvBuffer* b) noexcept nogil:
    """Forget the head slot (read, dropped or taken) and move read_seq on."""
    cdef int idx = b.head
    if b.slots[idx].state == RSLOT_FILLED:
        b.contiguous_bytes -= b.slots[idx].length - b.read_offset
    b.slots[idx].state = RSLOT_EMPTY
    b.slots[idx].length = 0
    b.read_offset = 0
    b.head = (b.head + 1) % b.capacity
    b.read_seq = seq_inc(b.read_seq)
