# cython: language_level=3
"""Send and receive buffers: rings of packet slots stored in chunks that exist only while used,
with limits that follow the path (autotuning, like Linux TCP's) up to the configured capacity.

The ring geometry is fixed at setup (``capacity`` slots: the option's maximum), so the indexing
of every packet is what it always was; what changes is where a slot lives.  Slots come in chunks
of ``BUFFER_CHUNK_PACKETS``; a chunk is taken (from the spare list, else mapped) when the first
of its slots is used and goes back to the spare list when the last one is released, so memory
follows what is queued, and a steady transfer reuses the same few chunks without allocating.
The directory itself is allocated with the first chunk.  After ``BUFFER_IDLE_RELEASE_US`` with
nothing buffered, ``*_idle_release`` frees the spares and the directory and puts the limit back
to its start (``INITIAL_RECV_PACKETS``, ``INITIAL_SEND_PACKETS``): an idle connection holds no
buffer memory at all.

The limits: ``rcv.limit`` is what ACKs advertise room for; it grows when the reader consumed more
than half of it within one measurement interval (RTT + one ACK period, the time the sender needs
to learn about new room), or when more than half of it lies past a hole, to twice that (Linux's
receive-buffer "dynamic right-sizing"), to three times the rate read while the sender is
window-limited (see ``rcvbuf_autotune``).
``snd.limit`` is what writers may queue; it grows when a writer found it full while the send
window (min(cwnd, flow window)) asks for more, to twice that window (``tcp_sndbuf_expand``).
Neither grows on an idle or application-limited connection.  Both stay <= ``capacity``.

Chunks are mapped (``mmap``) and unmapped on their own, never taken from malloc's heap: a
process that ran scrypt (the key exchange's 16 MiB block, protocol.md §12) has glibc's dynamic
mmap threshold raised past a 4 MiB chunk (64 slots at MSS 64 KiB), so such chunks landed on
the heap and, once freed, stayed in the process as glibc's reserve (~2.6 MiB per encrypted
pair).  A mapping goes back to the kernel when it is unmapped, its pages are touched only as
slots are used, and a chunk costs one system call only when the spare list is empty.

Chunk pointers stay valid while the connection lives (spares are only freed after the idle
time, and ``conn_free`` frees everything), so a zero-copy payload pointer handed to the send
worker never dangles while a burst is on its way to the kernel.

Header-only ``cdef inline`` functions: the engine touches the rings for every packet.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from udt._pages cimport pages_map, pages_unmap
from udt._core cimport (BOUNDARY_FIRST, BOUNDARY_LAST, BOUNDARY_SOLO, ChunkStore, RecvBuffer,
                        RecvSlot, SendBuffer, SendSlot)
from udt.core.seq cimport seq_add, seq_inc, seq_off
from udt.core.packet cimport msg_boundary, msg_number, MSG_BOUNDARY_SHIFT, MSG_INORDER_BIT

cdef enum RecvSlotState:
    RSLOT_EMPTY = 0
    RSLOT_FILLED = 1
    RSLOT_DROPPED = 2       # dropped by a message drop request: skipped by readers
    RSLOT_TAKEN = 3         # an out-of-order message already delivered from here

cdef enum:
    BUFFER_CHUNK_SHIFT = 6
    BUFFER_CHUNK_PACKETS = 64               # slots per chunk (~93 KB of payload at MSS 1500)
    BUFFER_CHUNK_MASK = 63
    INITIAL_RECV_PACKETS = 512              # the receive limit's start (~745 KB at MSS 1500)
    WINDOW_LIMITED_GROWTH = 3               # the receive limit's growth (x consumed) while the
                                            # sender fills the window (2 otherwise)
    INITIAL_SEND_PACKETS = 4096             # what a writer may queue before the path is known
                                            # (~6 MB, half UDT4's fixed buffer: costs only
                                            # what is written, and sendall() of a few MB
                                            # returns at once, as applications expect)
    BUFFER_IDLE_RELEASE_US = 1000000        # nothing buffered this long: release the memory
    SHORT_TUNE_INTERVAL_US = 50000          # a receive interval of a few ACK periods: a check at
                                            # a full ACK can land half an interval late or more


# ---------------------------------------------------------------------------------------------
# Chunk store (shared by both rings)
# ---------------------------------------------------------------------------------------------
cdef inline uint8_t* chunk_map(size_t size) noexcept nogil:
    """A new chunk of size bytes, zero-filled, its own mapping (udt/_pages.pxd); NULL when out
    of memory."""
    return <uint8_t*>pages_map(size)


cdef inline void chunk_unmap(uint8_t* chunk, size_t size) noexcept nogil:
    pages_unmap(chunk, size)


cdef inline size_t chunk_size(ChunkStore* s, int slot_size) noexcept nogil:
    """Bytes of a chunk whose slots are slot_size bytes."""
    return <size_t>s.meta_bytes + <size_t>BUFFER_CHUNK_PACKETS * <size_t>slot_size


cdef inline void chunks_init(ChunkStore* s, int capacity, int meta_size, int slot_size) noexcept nogil:
    memset(s, 0, sizeof(ChunkStore))
    s.nchunks = (capacity + BUFFER_CHUNK_MASK) >> BUFFER_CHUNK_SHIFT
    s.meta_bytes = (BUFFER_CHUNK_PACKETS * meta_size + 63) & ~63
    s.chunk_bytes = <size_t>s.meta_bytes + <size_t>BUFFER_CHUNK_PACKETS * <size_t>slot_size
    s.slot_size = slot_size


cdef inline void chunks_retire(ChunkStore* s, uint8_t* chunk, size_t size) noexcept nogil:
    """A chunk too small for the current slot size: kept (still counted in ``allocated``) until
    the spares are released, since a zero-copy burst may still be sending from it."""
    (<uint8_t**>chunk)[0] = s.retired   # its first metadata words: no burst reads them
    (<size_t*>chunk)[1] = size          # (meta_bytes >= 64) what to unmap
    s.retired = chunk
    s.retired_count += 1


cdef inline void chunks_free_retired(ChunkStore* s) noexcept nogil:
    cdef uint8_t* chunk
    while s.retired != NULL:
        chunk = s.retired
        s.retired = (<uint8_t**>chunk)[0]
        chunk_unmap(chunk, (<size_t*>chunk)[1])
    s.allocated -= s.retired_count
    s.retired_count = 0


cdef inline void chunks_set_slot_size(ChunkStore* s, int slot_size) noexcept nogil:
    """New chunks get slots of slot_size bytes (path-MTU discovery grew the MSS); chunks in use
    keep theirs, spares of the old size are retired (a spare must fit any slot)."""
    cdef int k
    cdef size_t old_bytes = s.chunk_bytes
    if slot_size <= s.slot_size:
        return
    s.slot_size = slot_size
    s.chunk_bytes = chunk_size(s, slot_size)
    if s.chunks != NULL:
        for k in range(s.spare_count):
            chunks_retire(s, s.spare[k], old_bytes)
        s.spare_count = 0


cdef inline int chunks_slot_size(ChunkStore* s, int idx) noexcept nogil:
    """Payload room of slot idx: its chunk's, or what a new chunk would have."""
    if s.chunks == NULL or s.chunks[idx >> BUFFER_CHUNK_SHIFT] == NULL:
        return s.slot_size
    return s.sizes[idx >> BUFFER_CHUNK_SHIFT]


cdef inline uint8_t* chunks_payload(ChunkStore* s, int idx) noexcept nogil:
    cdef int k = idx >> BUFFER_CHUNK_SHIFT
    return s.chunks[k] + s.meta_bytes + <size_t>(idx & BUFFER_CHUNK_MASK) * <size_t>s.sizes[k]


cdef inline int chunks_upgrade(ChunkStore* s, int idx) noexcept nogil:
    """Move the chunk of slot idx (in use, smaller slots) to one of the current slot size,
    payloads copied slot by slot: a receiver's ring after the MSS grew (no pointer into a
    receive chunk outlives the connection lock).  0, or -1 out of memory (the old one stays)."""
    cdef int k = idx >> BUFFER_CHUNK_SHIFT
    cdef int j
    cdef uint8_t* old = s.chunks[k]
    cdef uint8_t* chunk = chunk_map(s.chunk_bytes)
    if chunk == NULL:
        return -1
    memcpy(chunk, old, <size_t>s.meta_bytes)
    for j in range(BUFFER_CHUNK_PACKETS):
        memcpy(chunk + s.meta_bytes + <size_t>j * <size_t>s.slot_size,
               old + s.meta_bytes + <size_t>j * <size_t>s.sizes[k], <size_t>s.sizes[k])
    chunk_unmap(old, chunk_size(s, s.sizes[k]))
    s.chunks[k] = chunk
    s.sizes[k] = s.slot_size
    return 0


cdef inline void chunks_free(ChunkStore* s) noexcept nogil:
    cdef int k
    if s.chunks != NULL:
        for k in range(s.nchunks):
            if s.chunks[k] != NULL:
                chunk_unmap(s.chunks[k], chunk_size(s, s.sizes[k]))
        for k in range(s.spare_count):
            chunk_unmap(s.spare[k], s.chunk_bytes)
    chunks_free_retired(s)
    free(s.chunks)          # one block: chunks, spare, used, sizes
    s.chunks = NULL
    s.spare = NULL
    s.used = NULL
    s.sizes = NULL
    s.spare_count = 0
    s.allocated = 0


cdef inline uint8_t* chunks_get(ChunkStore* s, int idx) noexcept nogil:
    """The chunk holding slot idx, or NULL if none is allocated (its slots are unused)."""
    if s.chunks == NULL:
        return NULL
    return s.chunks[idx >> BUFFER_CHUNK_SHIFT]


cdef inline uint8_t* chunks_use(ChunkStore* s, int idx) noexcept nogil:
    """Mark slot idx used, taking its chunk if it has none; NULL when out of memory."""
    cdef int k = idx >> BUFFER_CHUNK_SHIFT
    cdef uint8_t* chunk
    if s.chunks == NULL:
        # one block: directory, spare list, use counts and slot sizes (calloc: all absent, zero)
        s.chunks = <uint8_t**>calloc(<size_t>s.nchunks,
                                     2 * sizeof(uint8_t*) + sizeof(uint32_t) + sizeof(int32_t))
        if s.chunks == NULL:
            return NULL
        s.spare = s.chunks + s.nchunks
        s.used = <uint32_t*>(s.spare + s.nchunks)
        s.sizes = <int32_t*>(s.used + s.nchunks)
    chunk = s.chunks[k]
    if chunk == NULL:
        if s.spare_count > 0:
            s.spare_count -= 1
            chunk = s.spare[s.spare_count]
        else:
            chunk = chunk_map(s.chunk_bytes)
            if chunk == NULL:
                return NULL
            s.allocated += 1
        memset(chunk, 0, <size_t>s.meta_bytes)        # every slot's metadata starts empty
        s.chunks[k] = chunk
        s.sizes[k] = s.slot_size
    s.used[k] += 1
    return chunk


cdef inline void chunks_unuse(ChunkStore* s, int idx) noexcept nogil:
    """Slot idx is no longer used; its chunk goes to the spare list when it was the last."""
    cdef int k = idx >> BUFFER_CHUNK_SHIFT
    if s.chunks == NULL or s.chunks[k] == NULL:
        return
    s.used[k] -= 1
    if s.used[k] == 0:
        if s.sizes[k] == s.slot_size:
            s.spare[s.spare_count] = s.chunks[k]
            s.spare_count += 1
        else:                       # made before the MSS grew: too small to reuse
            chunks_retire(s, s.chunks[k], chunk_size(s, s.sizes[k]))
        s.chunks[k] = NULL


cdef inline void chunks_release_spares(ChunkStore* s) noexcept nogil:
    """Free the spare chunks, and the directory too when no chunk is in use."""
    cdef int k
    if s.chunks == NULL:
        return
    for k in range(s.spare_count):
        chunk_unmap(s.spare[k], s.chunk_bytes)
    s.allocated -= s.spare_count
    s.spare_count = 0
    chunks_free_retired(s)
    if s.allocated == 0:
        free(s.chunks)
        s.chunks = NULL
        s.spare = NULL
        s.used = NULL
        s.sizes = NULL


cdef inline int buffer_grow_limit(int limit, int64_t target, int capacity) noexcept nogil:
    """The limit raised to target (rounded up to whole chunks), never above capacity."""
    if target <= limit:
        return limit
    target = (target + BUFFER_CHUNK_MASK) & ~(<int64_t>BUFFER_CHUNK_MASK)
    return <int>(target if target < capacity else capacity)


cdef inline int _scaled_packets(int packets, int old_slot, int slot, int64_t ceiling) noexcept nogil:
    """packets of old_slot bytes as packets of slot bytes (rounded up, at least 2, at most ceiling)."""
    cdef int64_t n = (<int64_t>packets * old_slot + slot - 1) // slot
    if n < 2:
        n = 2
    return <int>(n if n < ceiling else ceiling)


cdef inline void buffer_scale_limits(int* limit, int* initial_limit, int* max_limit, int capacity,
                                     int base_slot, int old_slot, int slot) noexcept nogil:
    """The MSS changed from old_slot to slot bytes of payload (base_slot: the handshake's): the
    limits in packets change so that the bytes they stand for (UDT_SNDBUF/UDT_RCVBUF are bytes,
    and so is where autotuning starts) stay what they were.  The ceiling never drops below one
    chunk (path-MTU discovery only grows while a ring holds one at the new size).  Capping the
    start instead of scaling it let a connection start at 512 packets of 64 KiB (32 MB) where
    it meant 745 KB."""
    cdef int64_t m = <int64_t>capacity * base_slot // slot
    if m < BUFFER_CHUNK_PACKETS:
        m = BUFFER_CHUNK_PACKETS
    if m > capacity:
        m = capacity
    max_limit[0] = <int>m
    if old_slot <= 0:
        old_slot = slot
    limit[0] = _scaled_packets(limit[0], old_slot, slot, m)
    initial_limit[0] = _scaled_packets(initial_limit[0], old_slot, slot, m)


cdef inline int buffer_initial_limit(int initial, int default, int capacity) noexcept nogil:
    if initial <= 0:
        initial = default
    return initial if initial < capacity else capacity


# ---------------------------------------------------------------------------------------------
# Send buffer
# ---------------------------------------------------------------------------------------------
cdef inline int sndbuf_alloc(SendBuffer* b, int capacity, int initial, int slot_size) noexcept nogil:
    """Set the ring up; no memory is taken until data is written."""
    chunks_init(&b.store, capacity, sizeof(SendSlot), slot_size)
    b.capacity = capacity
    b.max_limit = capacity
    b.initial_limit = buffer_initial_limit(initial, INITIAL_SEND_PACKETS, capacity)
    b.limit = b.initial_limit
    b.slot_size = slot_size
    b.head = 0
    b.count = 0
    b.bytes = 0
    b.next_msgno = 1
    b.tail_open = False
    b.last_active = 0
    return 0


cdef inline void sndbuf_free(SendBuffer* b) noexcept nogil:
    chunks_free(&b.store)
    b.capacity = 0
    b.limit = 0
    b.count = 0
    b.bytes = 0


cdef inline int sndbuf_index(SendBuffer* b, int64_t k) noexcept nogil:
    """Slot index of the k-th packet from the head."""
    return <int>((b.head + k) % b.capacity)


cdef inline SendSlot* sndbuf_slot(SendBuffer* b, int idx) noexcept nogil:
    """Metadata of a slot in use (its chunk exists)."""
    return <SendSlot*>b.store.chunks[idx >> BUFFER_CHUNK_SHIFT] + (idx & BUFFER_CHUNK_MASK)


cdef inline uint8_t* sndbuf_payload(SendBuffer* b, int idx) noexcept nogil:
    return chunks_payload(&b.store, idx)


cdef inline SendSlot* sndbuf_append(SendBuffer* b) noexcept nogil:
    """Take the slot after the last one (the caller fills it and counts it); NULL: no memory."""
    cdef int idx = sndbuf_index(b, b.count)
    if chunks_use(&b.store, idx) == NULL:
        return NULL
    return sndbuf_slot(b, idx)


cdef inline void sndbuf_release(SendBuffer* b, int64_t n) noexcept nogil:
    """Drop the n oldest packets (acknowledged)."""
    cdef int64_t k
    cdef int idx
    if n > b.count:
        n = b.count
    for k in range(n):
        idx = sndbuf_index(b, k)
        b.bytes -= sndbuf_slot(b, idx).length
        chunks_unuse(&b.store, idx)
    b.head = <int>((b.head + n) % b.capacity)
    b.count -= <int>n


cdef inline void sndbuf_note_window(SendBuffer* b, int64_t window) noexcept nogil:
    """A writer found the buffer full: grow the limit to twice the send window if that asks
    for more (the unacknowledged window plus as much again queued keeps the pipe full)."""
    b.limit = buffer_grow_limit(b.limit, 2 * window + BUFFER_CHUNK_PACKETS, b.max_limit)


cdef inline void sndbuf_idle_release(SendBuffer* b, int64_t now) noexcept nogil:
    if b.count == 0 and now - b.last_active >= BUFFER_IDLE_RELEASE_US:
        b.limit = b.initial_limit
        chunks_release_spares(&b.store)


# ---------------------------------------------------------------------------------------------
# Receive buffer
# ---------------------------------------------------------------------------------------------
cdef inline int rcvbuf_alloc(RecvBuffer* b, int capacity, int initial, int slot_size,
                             int32_t first_seq) noexcept nogil:
    """Set the ring up; no memory is taken until data arrives."""
    chunks_init(&b.store, capacity, sizeof(RecvSlot), slot_size)
    b.capacity = capacity
    b.max_limit = capacity
    b.initial_limit = buffer_initial_limit(initial, INITIAL_RECV_PACKETS, capacity)
    b.limit = b.initial_limit
    b.slot_size = slot_size
    b.head = 0
    b.read_seq = first_seq
    b.frontier_seq = first_seq
    b.read_offset = 0
    b.contiguous_bytes = 0
    b.ooo_messages = 0
    b.last_active = 0
    b.tune_start = 0
    b.tune_consumed = 0
    b.tune_arrived = 0
    b.tune_filled = False
    return 0


cdef inline void rcvbuf_free(RecvBuffer* b) noexcept nogil:
    chunks_free(&b.store)
    b.capacity = 0
    b.limit = 0


cdef inline int rcvbuf_index(RecvBuffer* b, int64_t off) noexcept nogil:
    return <int>((b.head + off) % b.capacity)


cdef inline RecvSlot* rcvbuf_slot(RecvBuffer* b, int idx) noexcept nogil:
    """Metadata of a slot that is not empty (its chunk exists)."""
    return <RecvSlot*>b.store.chunks[idx >> BUFFER_CHUNK_SHIFT] + (idx & BUFFER_CHUNK_MASK)


cdef inline int rcvbuf_state(RecvBuffer* b, int idx) noexcept nogil:
    cdef uint8_t* chunk = chunks_get(&b.store, idx)
    if chunk == NULL:
        return RSLOT_EMPTY
    return (<RecvSlot*>chunk + (idx & BUFFER_CHUNK_MASK)).state


cdef inline RecvSlot* rcvbuf_take(RecvBuffer* b, int idx) noexcept nogil:
    """An empty slot about to be filled or marked: its chunk, taken if needed (the caller sets
    a state other than RSLOT_EMPTY).  NULL when out of memory."""
    if chunks_use(&b.store, idx) == NULL:
        return NULL
    return rcvbuf_slot(b, idx)


cdef inline uint8_t* rcvbuf_payload(RecvBuffer* b, int idx) noexcept nogil:
    return chunks_payload(&b.store, idx)


cdef inline int64_t rcvbuf_available(RecvBuffer* b) noexcept nogil:
    """Room to advertise: the limit less what is held up to the ACK point."""
    return b.limit - seq_off(b.read_seq, b.frontier_seq) - 1


cdef inline void rcvbuf_note_arrival(RecvBuffer* b, int64_t now) noexcept nogil:
    b.last_active = now
    b.tune_arrived += 1


cdef inline void rcvbuf_autotune(RecvBuffer* b, int64_t now, int64_t interval,
                                 int32_t next_expected, bint filled) noexcept nogil:
    """At each full ACK.  UDT's window counts from the ACK point, so the room the peer needs is
    what the application consumes in an interval (RTT + ACK period: how late the peer learns of
    room; Linux's "dynamic right-sizing" counts what the reader copied per RTT too) plus
    whatever lies past a hole (next_expected: the sequence after the largest received).  Grow
    the limit to twice that when it asks for more; what sits unread does not count, so a slow
    or absent reader never makes it grow, and neither does what did not arrive in the interval
    (a reader catching up with a repaired hole reads a burst that says nothing of the rate).

    filled: the data reached the edge our ACK of a round trip ago offered, so the sender is
    window-limited.  A sender in startup doubles its window every round (BBR's asks for 2.89
    times what it delivered): twice what was read trailed it for the whole ramp, the room
    reaching it an RTT late.  While it is so limited (and nothing is missing: a hole means the
    path drops) the limit grows to WINDOW_LIMITED_GROWTH times the rate read, from half an
    interval on; still a multiple of what the reader consumed, that stops as soon as the sender
    is no longer window-limited.

    A check that comes half an interval late or more grows it from the rate read (consumed per
    elapsed time, times the interval), not from all that was read since the last one: checks
    run at full ACKs, 10 ms apart, so on a short path (interval ~10 ms) one came at twice the
    interval and the limit grew to 4 times what the path needs, and across a stall to the cap.
    Not while window-limited (the sender ramps: its last part, not the average, is what it asks
    for) nor with a hole (the repair's burst is what the room is for), and only on a short path
    (interval under SHORT_TUNE_INTERVAL_US): on a long one a check is late only after a repair
    held the ACKs, and normalising that reading changed the 200 ms path's start-up (1,979 queue
    drops instead of 1,265 in test_a_startup_that_left_on_loss_is_not_resumed_at_the_link_rate)."""
    cdef int64_t beyond = seq_off(b.frontier_seq, next_expected)
    cdef int64_t elapsed = now - b.tune_start
    cdef int64_t consumed = b.tune_consumed if b.tune_consumed < b.tune_arrived else b.tune_arrived
    cdef int64_t factor = 2
    if beyond < 0:
        beyond = 0
    if filled and beyond == 0:
        b.tune_filled = True
        if 2 * elapsed >= interval and elapsed < interval:
            b.limit = buffer_grow_limit(
                b.limit, WINDOW_LIMITED_GROWTH * (consumed * interval // elapsed)
                + BUFFER_CHUNK_PACKETS, b.max_limit)
    if elapsed >= interval:
        if b.tune_filled:
            factor = WINDOW_LIMITED_GROWTH
        elif beyond == 0 and interval < SHORT_TUNE_INTERVAL_US and 2 * elapsed >= 3 * interval:
            consumed = consumed * interval // elapsed
        b.limit = buffer_grow_limit(b.limit, factor * consumed + 2 * beyond + BUFFER_CHUNK_PACKETS,
                                    b.max_limit)
        b.tune_start = now
        b.tune_consumed = 0
        b.tune_arrived = 0
        b.tune_filled = False
    elif 2 * beyond > b.limit:
        b.limit = buffer_grow_limit(b.limit, 2 * beyond + BUFFER_CHUNK_PACKETS, b.max_limit)


cdef inline void rcvbuf_idle_release(RecvBuffer* b, int64_t now, int32_t next_expected) noexcept nogil:
    """Nothing unread, nothing missing (next_expected: the sequence after the largest received)
    and no arrival for a while: back to the initial limit and no memory."""
    if (b.read_seq == b.frontier_seq and b.frontier_seq == next_expected
            and now - b.last_active >= BUFFER_IDLE_RELEASE_US):
        b.limit = b.initial_limit
        b.tune_start = now
        b.tune_consumed = 0
        b.tune_arrived = 0
        b.tune_filled = False
        chunks_release_spares(&b.store)


cdef enum:
    FRONTIER_MOVED = 1
    FRONTIER_PASSED_MESSAGE_END = 2


cdef inline int rcvbuf_advance_frontier(RecvBuffer* b) noexcept nogil:
    """Move the in-order frontier over every present slot.  Returns FRONTIER_MOVED if it moved,
    plus FRONTIER_PASSED_MESSAGE_END if it went past the last packet of a message (message
    mode readers only need to look when that happens)."""
    cdef int64_t off = seq_off(b.read_seq, b.frontier_seq)
    cdef int idx, bnd, state
    cdef RecvSlot* slot
    cdef int result = 0
    while off < b.capacity:
        idx = rcvbuf_index(b, off)
        state = rcvbuf_state(b, idx)
        if state == RSLOT_EMPTY:
            break
        if state == RSLOT_FILLED:
            slot = rcvbuf_slot(b, idx)
            b.contiguous_bytes += slot.length
            bnd = msg_boundary(slot.msg_word)
            if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
                result |= FRONTIER_PASSED_MESSAGE_END
        off += 1
        b.frontier_seq = seq_inc(b.frontier_seq)
        result |= FRONTIER_MOVED
    return result


cdef inline void rcvbuf_consume_head(RecvBuffer* b) noexcept nogil:
    """Forget the head slot (read, dropped or taken) and move read_seq on."""
    cdef int idx = b.head
    cdef RecvSlot* slot
    cdef int state = rcvbuf_state(b, idx)
    if state != RSLOT_EMPTY:
        slot = rcvbuf_slot(b, idx)
        if state == RSLOT_FILLED:
            b.contiguous_bytes -= slot.length - b.read_offset
        slot.state = RSLOT_EMPTY
        slot.length = 0
        chunks_unuse(&b.store, idx)
    b.tune_consumed += 1
    b.read_offset = 0
    b.head = (b.head + 1) % b.capacity
    b.read_seq = seq_inc(b.read_seq)


cdef inline bint rcvbuf_message_complete(RecvBuffer* b, int64_t off) noexcept nogil:
    """Is the packet at receive offset off part of a complete out-of-order (o=0) message?"""
    cdef int idx = rcvbuf_index(b, off)
    cdef uint32_t word = rcvbuf_slot(b, idx).msg_word
    cdef int32_t msgno = msg_number(word)
    cdef RecvSlot* slot
    cdef int64_t k
    cdef int bnd
    if word & MSG_INORDER_BIT:
        return False
    k = off
    while True:                                 # back to the first packet
        idx = rcvbuf_index(b, k)
        if rcvbuf_state(b, idx) != RSLOT_FILLED:
            return False
        slot = rcvbuf_slot(b, idx)
        if msg_number(slot.msg_word) != msgno:
            return False
        bnd = msg_boundary(slot.msg_word)
        if bnd == BOUNDARY_FIRST or bnd == BOUNDARY_SOLO:
            break
        k -= 1
        if k < 0:
            return False
    k = off
    while True:                                 # forward to the last packet
        idx = rcvbuf_index(b, k)
        if rcvbuf_state(b, idx) != RSLOT_FILLED:
            return False
        slot = rcvbuf_slot(b, idx)
        if msg_number(slot.msg_word) != msgno:
            return False
        bnd = msg_boundary(slot.msg_word)
        if bnd == BOUNDARY_LAST or bnd == BOUNDARY_SOLO:
            return True
        k += 1
        if k >= b.capacity:
            return False
