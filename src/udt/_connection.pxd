# cython: language_level=3
"""A connection as the socket layer sees it (the user-thread side of a MuxConn)."""
from libc.stdint cimport int64_t

from udt._conntable cimport MuxConn
from udt._muxcore cimport BurstArea, MuxCore
from udt._net cimport Channel


cdef class Connection:
    cdef MuxConn* c
    cdef MuxConn* _conn(self) except NULL
    cdef int64_t _unacknowledged(self)
    cdef MuxCore* m              # the multiplexer's state, alive as long as `mux` is
    cdef Channel channel
    cdef object mux              # the Multiplexer (a Python reference: it is in a later unit)
    cdef object _peer_address
    cdef object _cc
    cdef bint _closed
    cdef bint _file_receiving     # a recvfile is writing from the ring's slots: no other reader
    cdef BurstArea* _direct      # the user threads' direct sends (one at a time: tx_inflight)
    cdef BurstArea* _direct_area(self)
    cdef _no_file_receive(self)
