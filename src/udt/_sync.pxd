# cython: language_level=3
"""Threads and time for the multiplexer units: pthread mutexes and condition variables, atomics,
CLOCK_MONOTONIC in microseconds.  All inline (no .pyx): the worker loops pay no call for them."""
from libc.stdint cimport int64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport clockid_t


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* mutex, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* mutex)
    int pthread_mutex_lock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)
    int pthread_condattr_init(pthread_condattr_t* attr)
    int pthread_condattr_setclock(pthread_condattr_t* attr, clockid_t clock)
    int pthread_condattr_destroy(pthread_condattr_t* attr)
    int pthread_cond_init(pthread_cond_t* cond, const pthread_condattr_t* attr)
    int pthread_cond_destroy(pthread_cond_t* cond)
    int pthread_cond_wait(pthread_cond_t* cond, pthread_mutex_t* mutex)
    int pthread_cond_timedwait(pthread_cond_t* cond, pthread_mutex_t* mutex, const timespec* abstime)
    int pthread_cond_signal(pthread_cond_t* cond)
    int pthread_cond_broadcast(pthread_cond_t* cond)


cdef extern from *:
    """
    static inline int mux_atomic_add(int *p, int v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline int mux_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void mux_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    #include <stdint.h>
    static inline void mux_count(int64_t *p, int64_t v) { __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
    static inline int64_t mux_read_count(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    #include <errno.h>
    static inline int mux_errno(void) { return errno; }
    """
    int mux_atomic_add(int* p, int v) nogil
    int mux_atomic_load(int* p) nogil
    void mux_atomic_store(int* p, int v) nogil
    void mux_count(int64_t* p, int64_t v) nogil
    int64_t mux_read_count(int64_t* p) nogil
    int mux_errno() nogil


cdef inline int64_t now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef inline int cond_init(pthread_cond_t* cond) noexcept nogil:
    """A condition variable whose timed waits use CLOCK_MONOTONIC (immune to clock jumps)."""
    cdef pthread_condattr_t attr
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    cdef int result = pthread_cond_init(cond, &attr)
    pthread_condattr_destroy(&attr)
    return result


cdef inline void cond_wait_until(pthread_cond_t* cond, pthread_mutex_t* mutex,
                                 int64_t deadline) noexcept nogil:
    """Wait until signalled or the monotonic deadline (µs; -1 = no deadline)."""
    cdef timespec ts
    if deadline < 0:
        pthread_cond_wait(cond, mutex)
        return
    ts.tv_sec = deadline // 1000000
    ts.tv_nsec = (deadline % 1000000) * 1000
    pthread_cond_timedwait(cond, mutex, &ts)
