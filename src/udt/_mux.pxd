# cython: language_level=3
"""C declarations of the multiplexer: one UDP channel, its connections and two worker threads.

Lock order (never reversed, never a Python call while one is held):
    MuxCore.table_lock -> MuxListener.lock -> MuxConn.lock -> MuxCore.send_lock / MuxCore.timer_lock
The two heap locks are leaves: nothing is locked while holding one of them.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from posix.time cimport timespec

from udt._net cimport Channel, CRecvBatch, CSendBatch, sockaddr, sockaddr_storage, socklen_t
cimport udt._core as core


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass


cdef enum:
    HEAP_SEND = 0       # MuxConn.heap_pos / heap_key index of the send heap
    HEAP_TIMER = 1      # ... of the timer heap
    SEND_BURST = 64     # datagrams taken from one connection per send-worker turn (GSO limit)
    MUX_INVALID_UNKNOWN_DESTINATION = 0   # datagram for a socket ID we do not have
    MUX_INVALID_NO_LISTENER = 1           # dest 0 handshake and nobody listens or rendezvous
    MUX_INVALID_WRONG_SOURCE = 2          # datagram for a socket ID from another address
    MUX_INVALID_HEADER = 3                # packet_peek rejected it (reasons in invalid_reason)
    MUX_INVALID_COUNT = 4
    CLOSED_MEMORY = 64                    # recently closed connections remembered per port
    CLOSED_MEMORY_US = 30000000           # ... for this long (µs)
    CLOSED_REPLY_GAP_US = 100000          # at most one SHUTDOWN answer per peer in this time


cdef struct MuxConn:
    core.Conn conn               # the engine state (guarded by lock)
    pthread_mutex_t lock
    pthread_cond_t changed       # user threads wait here: data, room, state changes
    int refs                     # atomic: Connection object, tables, heaps, queues, workers
    int waiters                  # threads waiting on `changed` (under lock)
    int local_closed             # close() called: waiters leave with EBADF (under lock)
    int mux_dead                 # the multiplexer stopped: every call fails (under lock)
    int in_tables                # registered in by_id (and by_peer / rendezvous list) (table_lock)
    int in_peer_table
    int queued_for_accept        # sits in a listener's accept queue (listener lock)
    uint32_t socket_id
    int heap_pos[2]              # index in the send / timer heap, -1 when absent (heap lock)
    int64_t heap_key[2]          # next send time / next timer deadline (heap lock)
    MuxConn* rendezvous_next     # rendezvous list link (table_lock)


cdef struct ConnTable:
    # Open addressing, linear probing, backward-shift deletion (no tombstones).
    MuxConn** slots
    uint64_t* keys
    size_t capacity              # a power of two
    size_t count


cdef struct ConnHeap:
    MuxConn** items
    int count
    int capacity
    int which                    # HEAP_SEND or HEAP_TIMER


cdef struct ClosedConn:
    # A connection we closed: if its peer still talks to it, our SHUTDOWN was lost (UDT has no
    # ACK for it) and the peer would only find out by its broken timer, seconds later.
    uint32_t socket_id           # 0: free entry
    uint32_t peer_socket_id
    sockaddr_storage peer_addr
    int64_t until
    int64_t last_reply


cdef struct MuxListener:
    core.Listener engine
    core.ConnOptions opts        # options every accepted connection starts with
    pthread_mutex_t lock
    pthread_cond_t changed
    MuxConn** queue              # ring of accepted, not yet accept()ed connections
    int queue_head
    int queue_count
    int backlog
    int capacity
    int closed
    int waiters
    void* cc_class               # borrowed PyObject*: Python CC class for accepted sockets, or NULL


cdef struct MuxCore:
    pthread_mutex_t table_lock
    ConnTable by_id              # local socket ID -> connection
    ConnTable by_peer            # (peer address, peer socket ID) -> accepted connection
    MuxConn* rendezvous          # connecting/connected rendezvous sockets (matched by address)
    MuxListener* listener
    ClosedConn closed[CLOSED_MEMORY]   # ring of recently closed connections (table_lock)
    int closed_next
    uint32_t next_socket_id
    int family
    pthread_mutex_t send_lock
    pthread_cond_t send_wake
    ConnHeap send_heap
    int64_t send_sleep_until     # -1: waiting without deadline, -2: busy (send_lock)
    pthread_mutex_t timer_lock
    ConnHeap timer_heap
    int64_t rx_sleep_until       # -1: waiting without deadline, -2: busy (timer_lock)
    int stopping                 # atomic: the workers finish their round and leave
    CSendBatch* tx_batch         # send worker only
    uint8_t* tx_headers          # [SEND_BURST * core.MAX_CONTROL_SIZE] headers / control packets
    CRecvBatch* rx_batch         # receive worker only
    CSendBatch* reply_batch      # receive worker only: handshake answers
    uint8_t* reply_area          # [core.MAX_CONTROL_SIZE]
    # counters (atomic adds; read for perfmon)
    int64_t invalid[MUX_INVALID_COUNT]
    int64_t invalid_reason[core.INVALID_REASON_COUNT]
    int64_t rx_wakeups           # receive worker returns from a wait
    int64_t tx_wakeups           # send worker returns from a wait
    int64_t send_errors
    int64_t datagrams_in
    int64_t datagrams_out
    int64_t closed_replies       # SHUTDOWNs re-sent to peers of closed connections


cdef class Multiplexer:
    cdef MuxCore* _m
    cdef Channel channel
    cdef object _key
    cdef int _refs
    cdef object _threads
    cdef bint _stopped
    cdef object _local_address
    cdef object __weakref__
    cdef _setup(self, Channel channel)
    cdef _free_core(self)
    cdef void _receive_loop(self) noexcept nogil
    cdef void _send_loop(self) noexcept nogil
    cdef void _run_timers(self, int64_t now) noexcept nogil
    cdef MuxConn* _route_handshake(self, const uint8_t* data, size_t length, const sockaddr* source,
                                   core.PacketInfo* info, int64_t now) noexcept nogil
    cdef void _reply(self, const sockaddr* destination, ssize_t length) noexcept nogil


cdef class Connection:
    cdef MuxConn* c
    cdef MuxConn* _conn(self) except NULL
    cdef Multiplexer mux
    cdef object _peer_address
    cdef object _cc
    cdef bint _closed


cdef class Listener:
    cdef MuxListener* l
    cdef Multiplexer mux
    cdef object _cc_class        # keeps MuxListener.cc_class alive
