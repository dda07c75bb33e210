# cython: language_level=3
"""A multiplexer's connections: the per-connection record (MuxConn, reference counted) and the
open-addressing tables that find one by socket ID or by peer.  The per-datagram helpers are
inline here so the receive worker calls them as cheaply as when they were one unit."""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp

from udt._net cimport AF_INET, AF_INET6, in6_addr, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage
from udt._sync cimport mux_atomic_add, pthread_cond_t, pthread_mutex_t
cimport udt.core.engine as core


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
    uint64_t peer_table_key      # its key in by_peer (the peer address may move: §12 rebinding)
    int queued_for_accept        # sits in a listener's accept queue (listener lock)
    uint32_t socket_id
    int heap_pos[2]              # index in the send / timer heap, -1 when absent (heap lock)
    int64_t heap_key[2]          # next send time / next timer deadline (heap lock)
    MuxConn* rendezvous_next     # rendezvous list link (table_lock)
    int ready_fd[2]              # readiness eventfds (read, write), -1 until polled (under lock)
    int ready_on[2]              # ... whether each is set now
    # owned udt._seal.CryptoState (encrypted connections) or NULL; set before registration
    void* crypto
    void* seal                   # its udt._seal.SealState: what the workers seal and open with
    int64_t crypto_forged        # sealed packets that failed to open (receive worker only)
    int64_t crypto_replayed      # packet numbers opened before, or older than the window
    int64_t crypto_unsealed      # plain non-handshake packets sent to an encrypted connection
    int64_t peer_rebinds         # authenticated packets that moved us to a new peer address
    int rcvbuf_followed          # conn.rcv.limit the port's UDP buffer was last sized for (receive worker)
    # A burst taken from conn is on its way to the kernel (under lock): the send worker or a
    # user thread sending directly (udt._muxcore.burst_take).  Nobody takes another meanwhile,
    # so datagrams (and their seal numbers) reach the wire in the order the engine made them.
    int tx_inflight


cdef struct ConnTable:
    # Open addressing, linear probing, backward-shift deletion (no tombstones).
    MuxConn** slots
    uint64_t* keys
    size_t capacity              # a power of two
    size_t count


cdef inline bint same_address(const sockaddr_storage* a, const sockaddr* b) noexcept nogil:
    """Same family, port and IP (flowinfo and scope ignored)."""
    cdef const sockaddr_in* a4
    cdef const sockaddr_in* b4
    cdef const sockaddr_in6* a6
    cdef const sockaddr_in6* b6
    if a.ss_family != b.sa_family:
        return False
    if a.ss_family == AF_INET:
        a4 = <const sockaddr_in*>a
        b4 = <const sockaddr_in*>b
        return a4.sin_port == b4.sin_port and a4.sin_addr.s_addr == b4.sin_addr.s_addr
    if a.ss_family == AF_INET6:
        a6 = <const sockaddr_in6*>a
        b6 = <const sockaddr_in6*>b
        return (a6.sin6_port == b6.sin6_port
                and memcmp(&a6.sin6_addr, &b6.sin6_addr, sizeof(in6_addr)) == 0)
    return False


cdef uint64_t address_hash(const sockaddr* addr) noexcept nogil


cdef inline uint64_t peer_key(const sockaddr* addr, uint32_t peer_socket_id) noexcept nogil:
    return address_hash(addr) ^ (<uint64_t>peer_socket_id * 0x9E3779B97F4A7C15ULL)


cdef MuxConn* muxconn_new(uint32_t socket_id) noexcept nogil


cdef inline void muxconn_incref(MuxConn* mc) noexcept nogil:
    mux_atomic_add(&mc.refs, 1)


cdef void muxconn_decref(MuxConn* mc) noexcept nogil


cdef inline size_t mix64(uint64_t key) noexcept nogil:
    key ^= key >> 33
    key *= 0xff51afd7ed558ccdULL
    key ^= key >> 33
    return <size_t>key


# the tables (callers hold MuxCore.table_lock)
cdef int table_init(ConnTable* t, size_t capacity) noexcept nogil
cdef void table_free(ConnTable* t) noexcept nogil
cdef int table_insert(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil
cdef MuxConn* table_find_id(ConnTable* t, uint32_t socket_id) noexcept nogil
cdef MuxConn* table_find_peer(ConnTable* t, const sockaddr* addr, uint32_t peer_socket_id) noexcept nogil
cdef void table_remove(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil
