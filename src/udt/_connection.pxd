# cython: language_level=3
"""A connection as the socket layer sees it (the user-thread side of a MuxConn)."""
from libc.stdint cimport int64_t, uint8_t
from posix.uio cimport iovec

from udt._conntable cimport MuxConn
from udt._muxcore cimport BurstArea, MuxCore
from udt._net cimport Channel


cdef class Connection


cdef class RingLease:
    cdef Connection conn
    cdef iovec iov[64]           # RECVFILE_IOV
    cdef int n
    cdef readonly size_t nbytes  # written to the file: what feed hashes and release gives back
    cdef uint8_t* bounce         # the copy of slots that may move, or NULL
    cdef bint released


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
    cdef size_t _lent             # bytes recvfile_lend wrote and leases hold (under c.lock)
    cdef int _leases              # leases not released (under the GIL)
    cdef BurstArea* _direct      # the user threads' direct sends (one at a time: tx_inflight)
    cdef BurstArea* _direct_area(self)
    cdef _no_file_receive(self)
    cdef _release_lent(self, size_t count)
