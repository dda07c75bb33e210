# cython: language_level=3
"""Waits of user threads and the mapping of their results to exceptions (see the .pxd)."""
import os
import threading

from libc.stdint cimport int64_t

from udt._sync cimport cond_wait_until, now_us, pthread_mutex_lock, pthread_mutex_unlock
cimport udt.core.engine as core

from udt import errors as _errors
from udt.errors import BadSocketError, ErrorCode, error_from_code


cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident() nogil
    int PyErr_CheckSignals()   # no except clause: the caller propagates with propagate_pending()


cdef int propagate_pending() except -1:
    """Raise the exception a signal handler left set (PyErr_CheckSignals returned -1)."""
    return -1


cdef unsigned long _main_thread_ident = threading.main_thread().ident


cdef bint on_main_thread() noexcept nogil:
    """Only the main thread sees Ctrl-C: its waits are sliced to check for it."""
    return PyThread_get_thread_ident() == _main_thread_ident


cdef int wait_changed(pthread_cond_t* cond, pthread_mutex_t* mutex, int* waiters,
                      int64_t deadline, bint main_thread, int64_t* next_signal_check) noexcept nogil:
    """One wait of a user thread on a connection/listener condition (mutex held, GIL released).

    0 after a wake-up (the caller re-checks its condition), RC_TIMEOUT once the deadline passed,
    RC_SIGNAL when the main thread has a pending Python exception (Ctrl-C)."""
    cdef int64_t now = now_us(), until = deadline
    cdef int signalled = 0
    if deadline >= 0 and now >= deadline:
        return RC_TIMEOUT
    if main_thread:
        if next_signal_check[0] == 0:
            next_signal_check[0] = now + MAIN_THREAD_SLICE_US
        if until < 0 or until > next_signal_check[0]:
            until = next_signal_check[0]
    waiters[0] += 1
    cond_wait_until(cond, mutex, until)
    waiters[0] -= 1
    if main_thread and now_us() >= next_signal_check[0]:
        next_signal_check[0] = now_us() + MAIN_THREAD_SLICE_US
        pthread_mutex_unlock(mutex)
        with gil:
            signalled = PyErr_CheckSignals()
        pthread_mutex_lock(mutex)
        if signalled < 0:
            return RC_SIGNAL
    return 0


cdef int64_t deadline_from(object timeout) except? -2:
    """Monotonic deadline for a Python timeout: None -> -1 (forever), 0 -> 0 (non-blocking)."""
    if timeout is None:
        return -1
    seconds = float(timeout)
    if seconds <= 0.0:
        return 0
    return now_us() + <int64_t>(seconds * 1e6)


def _rejection_hint(int req_type):
    """What a refusal's request type means: UDT4 always sends 1002, SRT 1000 + a reason."""
    if req_type == core.REQ_REJECTED:
        return ": version, socket type or MSS not acceptable, or the backlog is full"
    if req_type == 1004:
        return ": SRT's REJ_ROGUE; SRT takes a UDT4 handshake only from SOCK_DGRAM sockets"
    return ""


_CRYPTO_REFUSALS = {  # protocol.md §12
    core.REQ_CRYPTO_UNEXPECTED: "the listener has no passphrase (UDT_PASSPHRASE) but we offered encryption",
    core.REQ_CRYPTO_REQUIRED: "the listener requires a passphrase (UDT_PASSPHRASE) and we set none",
    core.REQ_CRYPTO_MISMATCH: "wrong passphrase: the listener's key confirmation failed",
    core.REQ_CRYPTO_PLAIN_PEER: ("the peer cannot encrypt (a UDT4 or SRT peer without the udt handshake "
                                 "extension): refused rather than falling back to plaintext"),
    core.REQ_CRYPTO_BAD_ANSWER: "wrong passphrase: the listener's answer failed our key confirmation",
}


def _rejection_text(int req_type):
    """The whole message of a refused connect (request type >= 1000)."""
    reason = _CRYPTO_REFUSALS.get(req_type)
    if reason is not None:
        return f"connection refused (request type {req_type}): {reason}"
    return f"connection rejected by the peer (request type {req_type}){_rejection_hint(req_type)}"


cdef object raise_result(ssize_t result, bint sending, int os_error=0, bint peer_reset=False):
    """Raise the Python exception for a negative result of a data or wait call."""
    if result == RC_SIGNAL:
        propagate_pending()  # the exception a signal handler (Ctrl-C) raised while we waited
    if result == RC_CLOSED:
        raise BadSocketError(ErrorCode.BAD_SOCKET, "Bad file descriptor: socket closed")
    if result == RC_OS_ERROR:
        raise OSError(os_error, os.strerror(os_error))
    code = -result
    if code == ErrorCode.NO_SEND_BUFFER or code == ErrorCode.NO_DATA:
        raise error_from_code(code)
    if code == ErrorCode.CONNECTION_BROKEN and peer_reset and not sending:
        raise error_from_code(code, "connection reset by the peer: it closed with data it could "
                                    "not deliver (linger ran out or it aborted)")
    if code == ErrorCode.CONNECTION_BROKEN and sending:
        raise _errors.BrokenPipeUDTError(code, "connection broken")
    raise error_from_code(code)
