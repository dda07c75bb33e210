# cython: language_level=3
"""The descriptor half of the UDP channel (:class:`UdpSocket`, the base of ``Channel``) and the
atomics, clock and mutex its GIL-free code needs."""
from libc.stdint cimport int64_t


cdef extern from *:
    """
    #include <pthread.h>
    #include <time.h>
    static inline int udt_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void udt_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int udt_atomic_add(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
    static inline int udt_atomic_claim(int *p) {
        int expected = 0;
        return __atomic_compare_exchange_n(p, &expected, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    static inline long long udt_monotonic_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
    }
    static inline void *udt_mutex_new(void) {
        pthread_mutex_t *m = (pthread_mutex_t *)malloc(sizeof(pthread_mutex_t));
        if (m) pthread_mutex_init(m, NULL);
        return m;
    }
    static inline void udt_mutex_free(void *m) {
        if (m) { pthread_mutex_destroy((pthread_mutex_t *)m); free(m); }
    }
    static inline void udt_mutex_lock(void *m) { pthread_mutex_lock((pthread_mutex_t *)m); }
    static inline void udt_mutex_unlock(void *m) { pthread_mutex_unlock((pthread_mutex_t *)m); }
    """
    int udt_atomic_load(int* p) nogil
    void udt_atomic_store(int* p, int v) nogil
    int udt_atomic_add(int* p, int v) nogil
    int udt_atomic_claim(int* p) nogil
    long long udt_monotonic_us() nogil
    void* udt_mutex_new() nogil
    void udt_mutex_free(void* m) nogil
    void udt_mutex_lock(void* m) nogil
    void udt_mutex_unlock(void* m) nogil


cdef class UdpSocket:
    cdef int fd
    cdef int wake_fd
    cdef readonly int family
    # Lifetime: operations register in _users; close() sets _closed and wakes waiters; whoever
    # sees the count drop to zero after close releases the descriptors exactly once.
    cdef int _users
    cdef int _closed
    cdef int _released
    cdef int _pmtudisc_v4           # IP_MTU_DISCOVER as found (-1: unknown), restored after a probe
    cdef int _pmtudisc_v6
    cdef readonly long long rcvbuf_asked   # the last SO_RCVBUF asked for (0: the kernel's default)
    # Buffers sized in datagrams of MSS 1500 grow with the largest datagram path-MTU discovery
    # lets through (c_size_buffers_for); 0: leave that buffer as it was set.
    cdef int _rcvbuf_base
    cdef int _sndbuf_base
    cdef int _buffers_datagram      # the datagram size they are sized for now
    cdef object __weakref__

    cdef int c_acquire(self) noexcept nogil
    cdef void c_release(self) noexcept nogil
    cdef int c_probe_mode(self, bint probe) noexcept nogil
    cdef int c_grow_rcvbuf(self, long long wanted) noexcept nogil
    cdef int c_size_buffers_for(self, int datagram) noexcept nogil
    cdef int c_wait(self, short events, int64_t timeout_us) noexcept nogil
    cdef int c_interrupt(self) noexcept nogil
    cdef _open(self, int fd, int family)
    cdef void _close_descriptors(self) noexcept nogil
    cdef int _wait(self, short events, long long deadline_us) noexcept nogil
    cdef _sockaddr_call(self, object address, int which)
    cdef _name(self, bint peer)
    cdef int _set_buffer(self, int forced, int plain, object value) except -1
