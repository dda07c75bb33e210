# cython: language_level=3
"""Connection records and the connection tables of a multiplexer (declarations in the .pxd)."""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from cpython.ref cimport Py_DECREF

from udt._net cimport AF_INET, AF_INET6, sockaddr, sockaddr_in, sockaddr_in6
from udt._sync cimport (cond_init, mux_atomic_add, pthread_cond_destroy, pthread_mutex_destroy,
                        pthread_mutex_init)
cimport udt.core.engine as core


cdef uint64_t address_hash(const sockaddr* addr) noexcept nogil:
    """FNV-1a over port and IP bytes (only used to spread the peer table)."""
    cdef uint64_t h = 1469598103934665603ULL
    cdef const uint8_t* p
    cdef int n, i
    if addr.sa_family == AF_INET:
        p = <const uint8_t*>&(<const sockaddr_in*>addr).sin_port
        n = 2 + 4  # sin_port and sin_addr are adjacent
    elif addr.sa_family == AF_INET6:
        p = <const uint8_t*>&(<const sockaddr_in6*>addr).sin6_addr
        n = 16
        h ^= (<const sockaddr_in6*>addr).sin6_port
        h *= 1099511628211ULL
    else:
        return 0
    for i in range(n):
        h ^= p[i]
        h *= 1099511628211ULL
    return h


# ---------------------------------------------------------------------------------------------
# connections: allocation and references
# ---------------------------------------------------------------------------------------------

cdef MuxConn* muxconn_new(uint32_t socket_id) noexcept nogil:
    cdef MuxConn* mc = <MuxConn*>calloc(1, sizeof(MuxConn))
    if mc == NULL:
        return NULL
    if pthread_mutex_init(&mc.lock, NULL) != 0:
        free(mc)
        return NULL
    if cond_init(&mc.changed) != 0:
        pthread_mutex_destroy(&mc.lock)
        free(mc)
        return NULL
    mc.refs = 1
    mc.socket_id = socket_id
    mc.heap_pos[0] = -1
    mc.heap_pos[1] = -1
    mc.ready_fd[0] = -1
    mc.ready_fd[1] = -1
    return mc


cdef void muxconn_decref(MuxConn* mc) noexcept nogil:
    """Drop a reference; the last one frees the engine state (conn_free) and the memory."""
    if mc == NULL:
        return
    if mux_atomic_add(&mc.refs, -1) == 0:
        core.conn_free(&mc.conn)
        if mc.crypto != NULL:
            with gil:
                Py_DECREF(<object>mc.crypto)
        pthread_cond_destroy(&mc.changed)
        pthread_mutex_destroy(&mc.lock)
        free(mc)


# ---------------------------------------------------------------------------------------------
# the connection tables (open addressing; callers hold table_lock)
# ---------------------------------------------------------------------------------------------

cdef int table_init(ConnTable* t, size_t capacity) noexcept nogil:
    t.slots = <MuxConn**>calloc(capacity, sizeof(MuxConn*))
    t.keys = <uint64_t*>calloc(capacity, sizeof(uint64_t))
    if t.slots == NULL or t.keys == NULL:
        free(t.slots)
        free(t.keys)
        t.slots = NULL
        t.keys = NULL
        return -1
    t.capacity = capacity
    t.count = 0
    return 0


cdef void table_free(ConnTable* t) noexcept nogil:
    free(t.slots)
    free(t.keys)
    t.slots = NULL
    t.keys = NULL
    t.capacity = 0
    t.count = 0


cdef int table_insert(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil:
    """Add an entry (keys may repeat in the peer table); grows at half load.  -1: no memory."""
    cdef ConnTable bigger
    cdef size_t i, mask
    if (t.count + 1) * 2 > t.capacity:
        if table_init(&bigger, t.capacity * 2) != 0:
            return -1
        for i in range(t.capacity):
            if t.slots[i] != NULL:
                table_insert(&bigger, t.keys[i], t.slots[i])
        table_free(t)
        t[0] = bigger
    mask = t.capacity - 1
    i = mix64(key) & mask
    while t.slots[i] != NULL:
        i = (i + 1) & mask
    t.slots[i] = mc
    t.keys[i] = key
    t.count += 1
    return 0


cdef MuxConn* table_find_id(ConnTable* t, uint32_t socket_id) noexcept nogil:
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(socket_id) & mask
    while t.slots[i] != NULL:
        if t.keys[i] == socket_id:
            return t.slots[i]
        i = (i + 1) & mask
    return NULL


cdef MuxConn* table_find_peer(ConnTable* t, const sockaddr* addr, uint32_t peer_socket_id) noexcept nogil:
    cdef uint64_t key = peer_key(addr, peer_socket_id)
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(key) & mask
    cdef MuxConn* mc
    while t.slots[i] != NULL:
        mc = t.slots[i]
        if (t.keys[i] == key and mc.conn.peer_socket_id == peer_socket_id
                and same_address(&mc.conn.peer_addr, addr)):
            return mc
        i = (i + 1) & mask
    return NULL


cdef void table_remove(ConnTable* t, uint64_t key, MuxConn* mc) noexcept nogil:
    """Remove the entry for mc (backward-shift deletion keeps probe chains intact)."""
    cdef size_t mask = t.capacity - 1
    cdef size_t i = mix64(key) & mask, j, home
    while t.slots[i] != NULL and t.slots[i] != mc:
        i = (i + 1) & mask
    if t.slots[i] == NULL:
        return
    t.slots[i] = NULL
    t.count -= 1
    j = i
    while True:
        j = (j + 1) & mask
        if t.slots[j] == NULL:
            return
        home = mix64(t.keys[j]) & mask
        # move slot j back to the hole at i unless its home lies cyclically in (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            t.slots[i] = t.slots[j]
            t.keys[i] = t.keys[j]
            t.slots[j] = NULL
            i = j
