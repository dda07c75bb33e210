# cython: language_level=3
"""How a user thread waits on a connection or listener (GIL released, Ctrl-C still noticed)
and how the result of a wait or data call becomes a Python exception."""
from libc.stdint cimport int64_t

from udt._sync cimport pthread_cond_t, pthread_mutex_t
cimport udt.core.engine as core


# Internal return codes of the waiting calls (UDT codes are returned negated, 1000..7000).
cdef enum:
    RC_CLOSED = -90001          # closed locally (this socket or its multiplexer)
    RC_SIGNAL = -90002          # a Python exception (KeyboardInterrupt …) is set
    RC_TIMEOUT = -core.ERR_TIMED_OUT
    RC_NO_BUFFER = -core.ERR_NO_SEND_BUFFER
    RC_NO_DATA = -core.ERR_NO_DATA
    RC_OS_ERROR = -90003        # errno of a file operation in *os_error

cdef enum:
    MAIN_THREAD_SLICE_US = 200000   # the main thread checks for Ctrl-C this often while waiting


cdef bint on_main_thread() noexcept nogil
cdef int wait_changed(pthread_cond_t* cond, pthread_mutex_t* mutex, int* waiters,
                      int64_t deadline, bint main_thread, int64_t* next_signal_check) noexcept nogil
cdef int64_t deadline_from(object timeout) except? -2
cdef object raise_result(ssize_t result, bint sending, int os_error=*, bint peer_reset=*)
