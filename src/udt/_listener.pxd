# cython: language_level=3
"""The port's listening endpoint as the socket layer sees it."""
from libc.stdint cimport uint8_t

from udt._muxcore cimport MuxCore, MuxListener
from udt._net cimport Channel, CSendBatch
cimport udt.core.engine as core


cdef class Listener:
    cdef MuxListener* lst
    cdef MuxCore* m              # the multiplexer's state, alive as long as `mux` is
    cdef Channel channel
    cdef object mux              # the Multiplexer (a Python reference: it is in a later unit)
    cdef object _cc_class        # keeps MuxListener.cc_class alive
    cdef object _acceptor        # the accepting thread (Python CC class only), or None
    cdef CSendBatch* _reply_batch    # ... its handshake answers
    cdef uint8_t* _reply_area
    cdef _start_acceptor(self)


# Receive worker, lst.lock held: queue a handshake for the accepting thread (a repeat of one
# already queued is dropped).  0, or -1 when the backlog is full (the caller rejects it).
cdef int defer_accept(MuxListener* lst, const core.AcceptRequest* req) noexcept nogil
