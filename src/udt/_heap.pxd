# cython: language_level=3
"""Binary min-heaps of connections keyed by MuxConn.heap_key[which]: the send worker's (next
send time) and the receive worker's (next timer deadline).  Callers hold the heap's lock."""
from libc.stdint cimport int64_t

from udt._conntable cimport MuxConn


cdef enum:
    HEAP_SEND = 0       # MuxConn.heap_pos / heap_key index of the send heap
    HEAP_TIMER = 1      # ... of the timer heap


cdef struct ConnHeap:
    MuxConn** items
    int count
    int capacity
    int which                    # HEAP_SEND or HEAP_TIMER


cdef int heap_init(ConnHeap* h, int which, int capacity) noexcept nogil
cdef int heap_push_or_lower(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil
cdef void heap_set_key(ConnHeap* h, MuxConn* mc, int64_t key) noexcept nogil
cdef MuxConn* heap_remove_at(ConnHeap* h, int pos) noexcept nogil
