# cython: language_level=3
"""The state one multiplexer shares between its worker threads and the user threads, and the
operations on it under its locks: scheduling, registration, the closed-connection memory, close.

Lock order (never reversed, never a Python call while one is held):
    the pool's receive-worker list lock (udt/_pool.pyx) -> MuxCore.table_lock -> MuxListener.lock
    -> MuxConn.lock -> MuxCore.send_lock / MuxCore.timer_lock
The two heap locks are leaves: nothing is locked while holding one of them.  They are shared by
the multiplexers one worker pair serves (MuxCore holds pointers to the pair's), which changes
nothing in the order: a thread holding one still locks nothing else.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t

from udt._conntable cimport ConnTable, MuxConn
from udt._epoll cimport ready_flag
from udt._heap cimport ConnHeap
from udt._net cimport Channel, CRecvBatch, CSendBatch, sockaddr, sockaddr_storage
from udt._sync cimport pthread_cond_t, pthread_mutex_t
cimport udt.core.engine as core


cdef enum:
    SEND_BURST = 64     # datagrams taken from one connection per send-worker turn (GSO limit)
    DIRECT_BURST = 8    # datagrams per burst a user thread or the receive worker sends itself
    # An encrypted burst is copied out to be sealed: its bytes, not its datagram count, bound
    # the two areas (64 datagrams of 64 KiB took 8 MiB per port and 1 MiB per connection).
    SEAL_AREA_BYTES = 262144
    SEAL_ROOM = 64      # reserved past each packet in the areas: its seal (SEAL_OVERHEAD) fits
    DIRECT_ROUNDS = 2   # ... bursts in a row, at most (then the send worker takes over)
    # A paced connection's send-worker wake-up may come late by this many packets' schedule (the
    # engine then sends all that is due in one burst), at most PACING_SLACK_MAX_US, and only when
    # that batches at least PACING_SLACK_MIN_PACKETS (a slow flow keeps its exact times).
    PACING_SLACK_PACKETS = 32
    PACING_SLACK_MIN_PACKETS = 4
    PACING_SLACK_MAX_US = 500
    # After a receive turn that dispatched a stream of data on a long path, the receive worker naps
    # before it waits again, so that its next turn finds a batch, not the one or two datagrams a
    # link delivers per tick (udt/_mux.pyx, Multiplexer._receive_ready; udt/_pool.pyx, rx_loop):
    RX_NAP_MIN_DATAGRAMS = 8     # ... only after a turn of at least this many datagrams
    RX_NAP_RTT_SHARE = 64        # ... for 1/64 of the smallest RTT among the connections served
    RX_NAP_MIN_US = 50           # ... when that is at least this long (loopback, a LAN: no nap)
    RX_NAP_MAX_US = 500          # ... and at most this long
    MUX_INVALID_UNKNOWN_DESTINATION = 0   # datagram for a socket ID we do not have
    MUX_INVALID_NO_LISTENER = 1           # dest 0 handshake and nobody listens or rendezvous
    MUX_INVALID_WRONG_SOURCE = 2          # datagram for a socket ID from another address
    MUX_INVALID_HEADER = 3                # packet_peek rejected it (reasons in invalid_reason)
    MUX_INVALID_COUNT = 4
    RX_PLAIN = 0                          # opening pass: not for an encrypted connection
    RX_OPENED = 1                         # opened and authentic (may move the peer address)
    RX_DROP = 2                           # forged, replayed or unsealed: counted, dropped
    CLOSED_MEMORY = 64                    # recently closed connections remembered per port
    CLOSED_MEMORY_US = 30000000           # ... for this long (µs)
    CLOSED_REPLY_GAP_US = 100000          # at most one SHUTDOWN answer per peer in this time
    # engine events a user thread waiting on a connection wakes for
    WAKE_EVENTS = (core.EV_READABLE | core.EV_WRITABLE | core.EV_CONNECTED
                   | core.EV_CONNECT_FAILED | core.EV_BROKEN | core.EV_CLOSED
                   | core.EV_PEER_SHUTDOWN | core.EV_PEER_ERROR)


cdef struct BurstArea:
    # Where one sender builds a burst taken from a connection: the send worker's (MuxCore.tx)
    # and each Connection's for a user thread's direct sends (udt._connection).  Allocated
    # once; the seal buffers grow to the largest packet seen (never per packet).
    CSendBatch* batch
    uint8_t* headers             # [limit * core.MAX_CONTROL_SIZE] headers / control packets
    int limit                    # datagrams per burst (<= SEND_BURST)
    int sealing                  # this burst: 0 in clear, n + 1 with n packets to seal, -1 no memory
    size_t seal_bytes            # size of seal_in and of seal_out (SEAL_AREA_BYTES, or one packet)
    uint8_t* seal_in             # [seal_bytes] a burst in clear, packets contiguous
    uint8_t* seal_out            # [seal_bytes] ... sealed, each at its packet's offset
    size_t seal_off[SEND_BURST]
    size_t seal_len[SEND_BURST]
    bint probe                   # this burst ends with a path-MTU probe (protocol.md §13): sent with DF
    int grow_buffers             # datagram size a probe (or our answer to one) lets through:
    #                              the channel's kernel buffers are sized for it before it leaves


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
    # With a Python CC class the receive worker does not accept: it queues the handshake here
    # and the listener's accepting thread creates the connection, its CC instance and runs the
    # CC's init() with no lock held (a slow class must not stop the port).
    core.AcceptRequest* pending  # ring [capacity] of handshakes to accept, the head in progress
    int pending_head
    int pending_count
    pthread_cond_t pending_wake  # the accepting thread waits here (with lock)
    int ready_fd                 # readiness eventfd (udt._epoll), -1 until polled (lock)
    int ready_on
    # owned udt._crypto.ListenerKeys (a passphrase) or NULL; with one the accepting thread
    # runs every accept (the KDF needs Python)
    void* crypto
    int64_t crypto_refused[3]    # refusals: offered without our passphrase / none offered / mismatch


cdef inline void listener_ready_note(MuxListener* lst) noexcept nogil:
    """After the accept queue or `closed` changed (lst.lock held): readable while accept()
    would not wait."""
    if lst.ready_fd >= 0:
        ready_flag(lst.ready_fd, &lst.ready_on, lst.queue_count > 0 or lst.closed != 0)


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
    # The locks, condition and sleep marks below belong to the worker pair that serves this
    # port (udt/_pool.pyx): every multiplexer of one pair shares them, so a worker sleeps on one
    # condition (send) or one epoll set (receive) for all its ports.  Set before any use, and
    # never freed (a pair's structure outlives its threads).
    pthread_mutex_t* send_lock
    pthread_cond_t* send_wake
    ConnHeap send_heap
    int64_t* send_sleep_until    # -1: waiting without deadline, -2: busy (send_lock)
    pthread_mutex_t* timer_lock
    ConnHeap timer_heap
    int64_t* rx_sleep_until      # -1: waiting without deadline, -2: busy (timer_lock)
    int stopping                 # atomic: the workers finish their round and leave
    int tx_attached              # served by its pair's send worker (send_lock)
    BurstArea tx                 # send worker only
    BurstArea rx_tx              # receive worker only: what it sends itself (send_now)
    CRecvBatch* rx_batch         # receive worker only
    CSendBatch* reply_batch      # receive worker only: handshake answers
    uint8_t* reply_area          # [core.MAX_CONTROL_SIZE]
    int hs_reply_budget          # receive worker only: induction answers left this batch (-1: any)
    int64_t rx_nap_us            # receive worker only: the nap its last turn asks for (0: none)
    # counters (atomic adds; read for perfmon)
    int64_t invalid[MUX_INVALID_COUNT]
    int64_t invalid_reason[core.INVALID_REASON_COUNT]
    int64_t rx_wakeups           # receive worker returns from a wait
    int64_t tx_wakeups           # send worker returns from a wait
    int64_t send_errors
    int64_t datagrams_in
    int64_t datagrams_out
    int64_t closed_replies       # SHUTDOWNs re-sent to peers of closed connections
    int64_t hs_requests          # handshakes that reached the listener, and their bytes
    int64_t hs_request_bytes
    int64_t hs_replies           # the listener's answers (never larger than each request)
    int64_t hs_reply_bytes
    int64_t hs_shed              # inductions left unanswered while the worker was behind
    # encryption (udt/_seal.pyx): only touched while crypto_conns > 0
    int crypto_conns             # registered encrypted connections (table_lock; read atomically)
    MuxConn** rx_owner           # [rx max_datagrams] receive worker: the encrypted connection
    uint8_t* rx_mark             # [rx max_datagrams] RX_* verdict of the opening pass


# scheduling (called with the connection lock held)
cdef int64_t send_heap_key(core.Conn* c, int64_t when, int64_t now) noexcept nogil
cdef void schedule_send(MuxCore* m, MuxConn* mc, int64_t now) noexcept nogil
cdef void schedule_timer(MuxCore* m, Channel channel, MuxConn* mc, int64_t now,
                         bint from_receive_worker) noexcept nogil
cdef void after_engine_call(MuxCore* m, Channel channel, MuxConn* mc, uint32_t events, int64_t now,
                            bint from_receive_worker) noexcept nogil
cdef void unschedule(MuxCore* m, MuxConn* mc) noexcept nogil

# bursts: taking datagrams from a connection and sending them, for the send worker and for a
# user thread sending directly (burst_take with mc.lock held and mc.tx_inflight clear; then
# burst_send with no lock; then mc.tx_inflight = 0 under the lock again)
cdef int burst_area_init(BurstArea* a, int limit) noexcept nogil
cdef void burst_area_free(BurstArea* a) noexcept nogil
cdef int burst_take(BurstArea* a, MuxConn* mc, int64_t now) noexcept nogil
cdef int burst_send(MuxCore* m, Channel channel, BurstArea* a, MuxConn* mc,
                    int64_t wait_us) noexcept nogil
# what is due now leaves from this thread (mc.lock held, released while sending, held again)
cdef void send_now(MuxCore* m, Channel channel, MuxConn* mc, BurstArea* area, int64_t now,
                   int64_t wait_us, bint from_receive_worker) noexcept nogil

# registration and the closed-connection memory (table_lock held)
cdef uint32_t allocate_socket_id(MuxCore* m) noexcept nogil
cdef int register_conn(MuxCore* m, MuxConn* mc, bint by_peer) noexcept nogil
cdef void remember_closed(MuxCore* m, uint32_t socket_id, uint32_t peer_socket_id,
                          const sockaddr_storage* peer, int64_t now) noexcept nogil
cdef uint32_t closed_peer_to_answer(MuxCore* m, uint32_t socket_id, const sockaddr* source,
                                    int kind, int64_t now) noexcept nogil
cdef void unregister_conn(MuxCore* m, MuxConn* mc) noexcept nogil

# closing (no lock held)
cdef enum CloseWait:
    CLOSE_NO_WAIT = 0           # return at once (abort paths: the listener, a failed connect)
    CLOSE_WAIT = 1              # wait for the drain (linger); the port's send worker sends the
                                # SHUTDOWN copies, spaced, after close returns
    CLOSE_WAIT_PORT_ENDS = 2    # also the port goes with this socket: send the copies in one
                                # burst and see them out before the port closes
cdef int close_conn(MuxCore* m, Channel channel, MuxConn* mc, int64_t linger_us,
                    int wait) noexcept nogil
