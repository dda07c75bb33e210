# cython: language_level=3
"""The process-wide worker pool: a few pairs of threads (one receive, one send worker each)
serve every multiplexer of the process, so the thread count follows the cores, not the ports.

* A multiplexer is given to the least loaded of the first ``worker_count()`` pairs when it is
  created and stays there.  A pair's threads start with its first multiplexer and stop (joined)
  when its last one closes, so an idle process has no udt thread.
* receive worker: one epoll set over its ports' channels and their wake eventfds.  It sleeps
  until a datagram arrives or the nearest timer of any of its ports is due (no fixed tick), lets
  each readable port receive and dispatch its batches (``Multiplexer._receive_ready``), then
  runs the due timers (``Multiplexer._run_timers``).  The ports share its timer lock and sleep
  mark, so ``schedule_timer`` (udt/_muxcore.pyx) knows when to interrupt it: through the port's
  eventfd, which is in the set.
* send worker: its ports share one send lock, condition and sleep mark; it sleeps until the
  earliest send time over its ports' send heaps and lets that port send what is due
  (``Multiplexer._send_due``, a bounded number of connections per turn, then the next earliest).

Lock order: the receive worker's list lock comes before every multiplexer lock (it is held
while a port's batch is dispatched, never while waiting), the pair's send and timer locks are the
multiplexers' leaves.  The number of pairs: ``UDT_WORKERS`` in the environment or
``udt.set_worker_count()``, default ``min(os.cpu_count(), MAX_DEFAULT_PAIRS)``.
"""

import os
import threading

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from posix.time cimport nanosleep, timespec

from udt._heap cimport HEAP_SEND, HEAP_TIMER
from udt._mux cimport Multiplexer
from udt._muxcore cimport MuxCore
from udt._sync cimport (cond_init, cond_wait_until, mux_atomic_load, mux_atomic_store, mux_count,
                        mux_errno, mux_read_count, now_us, pthread_cond_broadcast, pthread_cond_signal, pthread_cond_t,
                        pthread_cond_wait, pthread_mutex_init, pthread_mutex_lock, pthread_mutex_t,
                        pthread_mutex_unlock)
from udt._sys cimport EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd, read, write

__all__ = ["attach", "on_worker_thread", "set_worker_count", "worker_count"]


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)


cdef enum:
    MAX_PAIRS = 64              # worker pairs a process may have
    MAX_DEFAULT_PAIRS = 4       # ... by default (at most this many, one per core below that)
    RX_EVENTS = 64              # epoll events taken per wait
    RX_BATCHES = 8              # batches one port receives per turn before the others' turn
    TX_TURNS = 8                # connections one port sends for per turn
    CONTROL_SLOT = 0x7fffffff   # epoll data: the worker's own eventfd


# epoll data: (generation << 32) | slot index, this bit set for the port's wake eventfd (else its
# channel).  Unsigned: as an enum (a C int) it would sign-extend into the generation.
cdef uint32_t WAKE_BIT = 0x80000000u


cdef struct RxSlot:
    void* mux                   # borrowed Multiplexer (the pair's Python set holds it), NULL: free
    uint32_t generation         # bumped when the slot is freed: a stale epoll event is ignored
    int again                   # stopped with batches left: receive before waiting
    int due                     # a timer is due (this round)


cdef struct RxWorker:
    pthread_mutex_t list_lock   # the slots; held while dispatching, never while waiting
    pthread_mutex_t timer_lock  # the ports' timer heaps (their MuxCore.timer_lock)
    int64_t sleep_until         # their MuxCore.rx_sleep_until
    int epfd
    int control_fd
    int stopping
    RxSlot* slots
    int capacity
    int64_t waits               # returns from epoll_wait (atomic adds)


cdef struct TxWorker:
    pthread_mutex_t lock        # the ports' send heaps (their MuxCore.send_lock) and muxes
    pthread_cond_t wake         # their MuxCore.send_wake
    pthread_cond_t left         # a stopping port was dropped (its heap empty)
    int64_t sleep_until         # their MuxCore.send_sleep_until
    int stopping
    void** muxes                # borrowed Multiplexers
    int count
    int capacity
    int64_t waits               # returns from a condition wait (atomic adds)


cdef RxWorker* _rx[MAX_PAIRS]   # never freed: a port may lock its pair's locks late
cdef TxWorker* _tx[MAX_PAIRS]


cdef inline int64_t _shorter_nap(int64_t nap, int64_t asked) noexcept nogil:
    """A round naps only if every port it served asked to (-1: none served yet)."""
    return asked if nap < 0 or asked < nap else nap


cdef void _nap(int64_t us, int64_t deadline) noexcept nogil:
    """Sleep `us` µs, never past the nearest timer deadline (udt/_mux.pyx, _rx_nap says why).
    The port stays in the epoll set: what arrives meanwhile is queued in its socket."""
    cdef timespec ts
    cdef int64_t now
    if deadline >= 0:
        now = now_us()
        if deadline - now < us:
            us = deadline - now
    if us <= 0:
        return
    ts.tv_sec = <long>(us // 1000000)
    ts.tv_nsec = <long>((us % 1000000) * 1000)
    nanosleep(&ts, NULL)


cdef void rx_loop(RxWorker* w) noexcept nogil:
    """The receive worker (GIL released): wait on the epoll set until a port is readable or the
    nearest timer is due, dispatch, run timers."""
    cdef epoll_event events[RX_EVENTS]
    cdef int i, n, timeout_ms, index
    cdef bint again
    cdef int64_t now, deadline, top
    cdef uint32_t slot_index, generation
    cdef uint64_t drained
    cdef RxSlot* slot
    cdef MuxCore* m
    cdef int64_t nap = -1       # this round's nap: the shortest its ports' turns asked for
    while not mux_atomic_load(&w.stopping):
        pthread_mutex_lock(&w.list_lock)
        # the batches left from the last round, then the due timers
        again = False
        for i in range(w.capacity):
            slot = &w.slots[i]
            if slot.mux != NULL and slot.again:
                slot.again = (<Multiplexer>slot.mux)._receive_ready(RX_BATCHES)
                again = again or slot.again
                nap = _shorter_nap(nap, (<Multiplexer>slot.mux)._m.rx_nap_us)
        now = now_us()
        pthread_mutex_lock(&w.timer_lock)
        for i in range(w.capacity):
            slot = &w.slots[i]
            if slot.mux != NULL:
                m = (<Multiplexer>slot.mux)._m
                slot.due = m.timer_heap.count > 0 and m.timer_heap.items[0].heap_key[HEAP_TIMER] <= now
        pthread_mutex_unlock(&w.timer_lock)
        for i in range(w.capacity):
            slot = &w.slots[i]
            if slot.mux != NULL and slot.due:
                mux_count(&(<Multiplexer>slot.mux)._m.rx_wakeups, 1)
                (<Multiplexer>slot.mux)._run_timers(now)
        # sleep until a datagram arrives or the nearest timer of any port is due
        deadline = -1
        pthread_mutex_lock(&w.timer_lock)
        for i in range(w.capacity):
            slot = &w.slots[i]
            if slot.mux != NULL:
                m = (<Multiplexer>slot.mux)._m
                if m.timer_heap.count > 0:
                    top = m.timer_heap.items[0].heap_key[HEAP_TIMER]
                    if deadline < 0 or top < deadline:
                        deadline = top
        w.sleep_until = -2 if again else deadline
        pthread_mutex_unlock(&w.timer_lock)
        pthread_mutex_unlock(&w.list_lock)
        if not again and nap > 0:
            _nap(nap, deadline)
        nap = -1
        if again:
            timeout_ms = 0
        elif deadline < 0:
            timeout_ms = -1
        else:
            now = now_us()
            timeout_ms = 0 if deadline <= now else <int>((deadline - now + 999) // 1000)
        n = epoll_wait(w.epfd, events, RX_EVENTS, timeout_ms)
        mux_count(&w.waits, 1)
        pthread_mutex_lock(&w.timer_lock)
        w.sleep_until = -2
        pthread_mutex_unlock(&w.timer_lock)
        if n <= 0:
            continue  # a deadline, or EINTR
        pthread_mutex_lock(&w.list_lock)
        for i in range(n):
            slot_index = <uint32_t>(events[i].data.u64 & 0xffffffffu)
            generation = <uint32_t>(events[i].data.u64 >> 32)
            if slot_index == CONTROL_SLOT:
                read(w.control_fd, &drained, sizeof(drained))
                continue
            index = <int>(slot_index & ~WAKE_BIT)
            if index >= w.capacity:
                continue
            slot = &w.slots[index]
            if slot.mux == NULL or slot.generation != generation:
                continue  # the port left while this event was on its way
            if slot_index & WAKE_BIT:
                # an earlier deadline (schedule_timer): the next round sees it
                read((<Multiplexer>slot.mux).channel.wake_fd, &drained, sizeof(drained))
                continue
            mux_count(&(<Multiplexer>slot.mux)._m.rx_wakeups, 1)
            slot.again = (<Multiplexer>slot.mux)._receive_ready(RX_BATCHES)
            nap = _shorter_nap(nap, (<Multiplexer>slot.mux)._m.rx_nap_us)
        pthread_mutex_unlock(&w.list_lock)


cdef void tx_loop(TxWorker* w) noexcept nogil:
    """The send worker (GIL released): sleep until the earliest send time of its ports, let that
    port send what is due; drop a stopping port once its heap is empty."""
    cdef int i, best
    cdef int64_t now, top, best_top
    cdef bint woke = False
    cdef MuxCore* m
    pthread_mutex_lock(&w.lock)
    while True:
        now = now_us()
        best = -1
        best_top = 0
        i = 0
        while i < w.count:
            m = (<Multiplexer>w.muxes[i])._m
            if m.send_heap.count == 0:
                if mux_atomic_load(&m.stopping):
                    m.tx_attached = 0  # done: what it owed has gone
                    w.count -= 1
                    w.muxes[i] = w.muxes[w.count]
                    pthread_cond_broadcast(&w.left)
                    continue
            else:
                top = m.send_heap.items[0].heap_key[HEAP_SEND]
                if mux_atomic_load(&m.stopping):
                    top = now
                if best < 0 or top < best_top:
                    best = i
                    best_top = top
            i += 1
        if best < 0 or best_top > now:
            if best < 0 and w.stopping:
                break
            w.sleep_until = -1 if best < 0 else best_top
            if best < 0:
                pthread_cond_wait(&w.wake, &w.lock)
            else:
                cond_wait_until(&w.wake, &w.lock, best_top)
            w.sleep_until = -2
            mux_count(&w.waits, 1)
            woke = True
            continue
        m = (<Multiplexer>w.muxes[best])._m
        if woke:
            mux_count(&m.tx_wakeups, 1)
            woke = False
        (<Multiplexer>w.muxes[best])._send_due(TX_TURNS)
    pthread_mutex_unlock(&w.lock)


cdef int init_pair(int index) except -1:
    """The pair's structures (once per process; never freed)."""
    cdef RxWorker* rx
    cdef TxWorker* tx
    if _rx[index] != NULL:
        return 0
    rx = <RxWorker*>calloc(1, sizeof(RxWorker))
    tx = <TxWorker*>calloc(1, sizeof(TxWorker))
    if (rx == NULL or tx == NULL or pthread_mutex_init(&rx.list_lock, NULL) != 0
            or pthread_mutex_init(&rx.timer_lock, NULL) != 0 or pthread_mutex_init(&tx.lock, NULL) != 0
            or cond_init(&tx.wake) != 0 or cond_init(&tx.left) != 0):
        free(rx)
        free(tx)
        raise MemoryError()
    rx.epfd = -1
    rx.control_fd = -1
    rx.sleep_until = -2
    tx.sleep_until = -2
    _rx[index] = rx
    _tx[index] = tx
    return 0


cdef class _Pair:
    """One receive and one send worker and the multiplexers they serve (the pool's lock held
    for start/stop; attach and detach of a port lock the workers' own locks)."""
    cdef int index
    cdef RxWorker* rx
    cdef TxWorker* tx
    cdef readonly object threads
    cdef readonly set muxes

    def __cinit__(self, int index):
        init_pair(index)
        self.index = index
        self.rx = _rx[index]
        self.tx = _tx[index]
        self.threads = None
        self.muxes = set()

    cdef _start(self):
        cdef RxWorker* rx = self.rx
        cdef epoll_event ev
        rx.epfd = epoll_create1(EPOLL_CLOEXEC)
        rx.control_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if rx.epfd < 0 or rx.control_fd < 0:
            self._close_fds()
            raise OSError(mux_errno(), "cannot create the worker pool's epoll set")
        ev.events = EPOLLIN
        ev.data.u64 = CONTROL_SLOT
        if epoll_ctl(rx.epfd, EPOLL_CTL_ADD, rx.control_fd, &ev) != 0:
            self._close_fds()
            raise OSError(mux_errno(), "cannot create the worker pool's epoll set")
        mux_atomic_store(&rx.stopping, 0)
        self.tx.stopping = 0
        receiver = threading.Thread(target=self._rx_main, name=f"udt-pool-{self.index}-recv", daemon=True)
        sender = threading.Thread(target=self._tx_main, name=f"udt-pool-{self.index}-send", daemon=True)
        self.threads = (receiver, sender)
        receiver.start()
        sender.start()

    cdef _close_fds(self):
        if self.rx.epfd >= 0:
            close(self.rx.epfd)
        if self.rx.control_fd >= 0:
            close(self.rx.control_fd)
        self.rx.epfd = -1
        self.rx.control_fd = -1

    cdef _stop(self):
        """Both threads leave and are joined (with the GIL released: they may need it)."""
        cdef uint64_t one = 1
        receiver, sender = self.threads
        self.threads = None
        with nogil:
            pthread_mutex_lock(&self.tx.lock)
            self.tx.stopping = 1
            pthread_cond_signal(&self.tx.wake)
            pthread_mutex_unlock(&self.tx.lock)
            mux_atomic_store(&self.rx.stopping, 1)
            write(self.rx.control_fd, &one, sizeof(one))
        current = threading.current_thread()
        for thread in (receiver, sender):
            if thread is not current:
                thread.join()
        self._close_fds()

    def _rx_main(self):
        with nogil:
            rx_loop(self.rx)

    def _tx_main(self):
        with nogil:
            tx_loop(self.tx)

    cdef _add(self, Multiplexer mux):
        """Serve mux from now on (its MuxCore points at this pair's locks)."""
        cdef MuxCore* m = mux._m
        cdef RxWorker* rx = self.rx
        cdef TxWorker* tx = self.tx
        cdef RxSlot* grown
        cdef void** more
        cdef epoll_event ev
        cdef int index = -1
        cdef int i, capacity, failed = 0
        cdef int fd = mux.channel.fd
        cdef int wake_fd = mux.channel.wake_fd
        if self.threads is None:
            self._start()
        m.send_lock = &tx.lock
        m.send_wake = &tx.wake
        m.send_sleep_until = &tx.sleep_until
        m.timer_lock = &rx.timer_lock
        m.rx_sleep_until = &rx.sleep_until
        with nogil:
            pthread_mutex_lock(&tx.lock)
            if tx.count == tx.capacity:
                capacity = 2 * tx.capacity if tx.capacity > 0 else 16
                more = <void**>realloc(tx.muxes, capacity * sizeof(void*))
                if more != NULL:
                    tx.muxes = more
                    tx.capacity = capacity
            if tx.count < tx.capacity:
                tx.muxes[tx.count] = <void*>mux
                tx.count += 1
                m.tx_attached = 1
            else:
                failed = 1
            pthread_mutex_unlock(&tx.lock)
            if not failed:
                pthread_mutex_lock(&rx.list_lock)
                for i in range(rx.capacity):
                    if rx.slots[i].mux == NULL:
                        index = i
                        break
                if index < 0:
                    capacity = 2 * rx.capacity if rx.capacity > 0 else 16
                    grown = <RxSlot*>realloc(rx.slots, capacity * sizeof(RxSlot))
                    if grown != NULL:
                        for i in range(rx.capacity, capacity):
                            grown[i].mux = NULL
                            grown[i].generation = 0
                            grown[i].again = 0
                            grown[i].due = 0
                        index = rx.capacity
                        rx.slots = grown
                        rx.capacity = capacity
                if index >= 0:
                    rx.slots[index].mux = <void*>mux
                    rx.slots[index].again = 0
                    ev.events = EPOLLIN
                    ev.data.u64 = (<uint64_t>rx.slots[index].generation << 32) | <uint32_t>index
                    failed = epoll_ctl(rx.epfd, EPOLL_CTL_ADD, fd, &ev) != 0
                    ev.data.u64 |= <uint64_t>WAKE_BIT
                    if not failed:
                        failed = epoll_ctl(rx.epfd, EPOLL_CTL_ADD, wake_fd, &ev) != 0
                        if failed:
                            epoll_ctl(rx.epfd, EPOLL_CTL_DEL, fd, NULL)
                    if failed:
                        rx.slots[index].mux = NULL
                else:
                    failed = 1
                pthread_mutex_unlock(&rx.list_lock)
                if failed:
                    pthread_mutex_lock(&tx.lock)
                    for i in range(tx.count):
                        if tx.muxes[i] == <void*>mux:
                            tx.count -= 1
                            tx.muxes[i] = tx.muxes[tx.count]
                            break
                    m.tx_attached = 0
                    pthread_mutex_unlock(&tx.lock)
        if failed:
            raise OSError(mux_errno() or 12, "cannot add the port to the worker pool")
        self.muxes.add(mux)

    def detach_send(self, Multiplexer mux):
        """Stop mux's sending: the send worker sends everything still queued at once, then
        drops it; returns after that (GIL released while waiting)."""
        cdef MuxCore* m = mux._m
        cdef TxWorker* tx = self.tx
        with nogil:
            mux_atomic_store(&m.stopping, 1)
            pthread_mutex_lock(&tx.lock)
            pthread_cond_signal(&tx.wake)
            while m.tx_attached:
                pthread_cond_wait(&tx.left, &tx.lock)
            pthread_mutex_unlock(&tx.lock)

    def detach_receive(self, Multiplexer mux):
        """Take mux's channel out of the receive worker's set; returns when the worker is not
        dispatching for it (its list lock)."""
        cdef RxWorker* rx = self.rx
        cdef int i
        cdef void* target = <void*>mux
        cdef int fd = mux.channel.fd
        cdef int wake_fd = mux.channel.wake_fd
        with nogil:
            pthread_mutex_lock(&rx.list_lock)
            for i in range(rx.capacity):
                if rx.slots[i].mux == target:
                    epoll_ctl(rx.epfd, EPOLL_CTL_DEL, fd, NULL)
                    epoll_ctl(rx.epfd, EPOLL_CTL_DEL, wake_fd, NULL)
                    rx.slots[i].mux = NULL
                    rx.slots[i].generation += 1
                    rx.slots[i].again = 0
                    break
            pthread_mutex_unlock(&rx.list_lock)

    def release(self, Multiplexer mux):
        """After both detaches: forget mux; the last one stops the pair's threads."""
        with _pool_lock:
            self.muxes.discard(mux)
            if not self.muxes and self.threads is not None:
                self._stop()


_pool_lock = threading.Lock()
_pairs = []
_count = None


def _default_count():
    value = os.environ.get("UDT_WORKERS")
    if value:
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"UDT_WORKERS must be a number of worker pairs, not {value!r}") from None
        if not 1 <= count <= MAX_PAIRS:
            raise ValueError(f"UDT_WORKERS must be between 1 and {MAX_PAIRS}, not {count}")
        return count
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_PAIRS))


def worker_count():
    """The number of worker pairs (one receive and one send thread each) new ports are given to."""
    global _count
    with _pool_lock:
        if _count is None:
            _count = _default_count()
        return _count


def set_worker_count(count=None):
    """Serve the ports created from now on with ``count`` worker pairs (1 to 64; None: the
    default, ``$UDT_WORKERS`` or one per core up to 4).  Running ports keep their workers."""
    global _count
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"the worker count must be an int, not {type(count).__name__}")
        if not 1 <= count <= MAX_PAIRS:
            raise ValueError(f"the worker count must be between 1 and {MAX_PAIRS}, not {count}")
    with _pool_lock:
        _count = count if count is not None else _default_count()


def attach(Multiplexer mux):
    """Give a new multiplexer to the least loaded pair; returns that pair."""
    global _count
    cdef _Pair pair
    with _pool_lock:
        if _count is None:
            _count = _default_count()
        while len(_pairs) < _count:
            _pairs.append(_Pair(len(_pairs)))
        pair = min(_pairs[:_count], key=lambda p: len(p.muxes))
        pair._add(mux)
        return pair


def on_worker_thread():
    """True on one of the pool's threads (they must not stop a port they serve themselves)."""
    current = threading.current_thread()
    return any(p.threads is not None and current in p.threads for p in list(_pairs))


def wakeups():
    """Returns from a wait of every worker so far, receive and send (tests: no spinning)."""
    cdef int i
    cdef int64_t total = 0
    for i in range(MAX_PAIRS):
        if _rx[i] != NULL:
            total += mux_read_count(&_rx[i].waits) + mux_read_count(&_tx[i].waits)
    return total


def threads():
    """The pool's running threads (tests)."""
    with _pool_lock:
        return [t for p in _pairs if p.threads is not None for t in p.threads]
