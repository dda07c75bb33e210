# cython: language_level=3
"""The connection heaps of a multiplexer (declarations in the .pxd)."""
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from udt._conntable cimport MuxConn, muxconn_incref


cdef int heap_init(ConnHeap* h, int which, int capacity) noexcept nogil:
    h.items = <MuxConn**>calloc(capacity, sizeof(MuxConn*))
    if h.items == NULL:
        return -1
    h.capacity = capacity
    h.count = 0
    h.which = which
    return 0


cdef inline void heap_set(ConnHeap* h, int i, MuxConn* mc) noexcept nogil:
    h.items[i] = mc
    mc.heap_pos[h.which] = i


cdef void heap_up(ConnHeap* h, int i) noexcept nogil:
    cdef MuxConn* mc = h.items[i]
    cdef int parent
    cdef int w = h.which
    while i > 0:
        parent = (i - 1) // 2
        if h.items[parent].heap_key[w] <= mc.heap_key[w]:
            break
        heap_set(h, i, h.items[parent])
        i = parent
    heap_set(h, i, mc)


cdef void heap_down(ConnHeap* h, int i) noexcept nogil:
    cdef MuxConn* mc = h.items[i]
    cdef int child
    cdef int w = h.which
    while True:
        child = 2 * i + 1
        if child >= h.count:
            break
        if child + 1 < h.count and h.items[child + 1].heap_key[w] < h.items[child].heap_key[w]:
            child += 1
        if mc.heap_key[w] <= h.items[child].heap_key[w]:
            break
        heap_set(h, i, h.items[child])
        i = child
    heap_set(h, i, mc)


cdef int heap_push_or_lower(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil:
    """Queue mc at key, or move it earlier if already queued later.  Returns 1 when mc became
    the earliest entry (the worker may have to wake), 0 otherwise, -1 on no memory.  A newly
    queued entry takes a reference."""
    cdef int w = h.which
    cdef MuxConn** grown
    cdef int pos = mc.heap_pos[w]
    if pos >= 0:
        if key >= mc.heap_key[w]:
            return 0
        mc.heap_key[w] = key
        heap_up(h, pos)
        return 1 if mc.heap_pos[w] == 0 else 0
    if h.count == h.capacity:
        grown = <MuxConn**>calloc(h.capacity * 2, sizeof(MuxConn*))
        if grown == NULL:
            return -1
        memcpy(grown, h.items, h.count * sizeof(MuxConn*))
        free(h.items)
        h.items = grown
        h.capacity *= 2
    muxconn_incref(mc)
    mc.heap_key[w] = key
    h.count += 1
    heap_set(h, h.count - 1, mc)
    heap_up(h, h.count - 1)
    return 1 if mc.heap_pos[w] == 0 else 0


cdef void heap_set_key(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil:
    """Re-key a queued entry (earlier or later)."""
    cdef int w = h.which
    cdef int pos = mc.heap_pos[w]
    cdef int64_t old = mc.heap_key[w]
    mc.heap_key[w] = key
    if key < old:
        heap_up(h, pos)
    else:
        heap_down(h, pos)


cdef MuxConn* heap_remove_at(ConnHeap* h, int pos) noexcept nogil:
    """Take the entry at pos out; its reference passes to the caller."""
    cdef int w = h.which
    cdef MuxConn* mc = h.items[pos]
    cdef MuxConn* last
    h.count -= 1
    mc.heap_pos[w] = -1
    if pos < h.count:
        last = h.items[h.count]
        heap_set(h, pos, last)
        if pos > 0 and last.heap_key[w] < h.items[(pos - 1) // 2].heap_key[w]:
            heap_up(h, pos)
        else:
            heap_down(h, pos)
    h.items[h.count] = NULL
    return mc
