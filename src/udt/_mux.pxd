# cython: language_level=3
"""The multiplexer: one UDP channel, its connections and two worker threads.

The shared structures (MuxCore, MuxListener) and the lock order are in ``_muxcore.pxd``."""
from libc.stdint cimport int64_t, uint8_t

from udt._conntable cimport MuxConn
from udt._muxcore cimport MuxCore
from udt._net cimport Channel, CRecvBatch, sockaddr
cimport udt.core.engine as core


cdef class Multiplexer:
    cdef MuxCore* _m
    cdef Channel channel
    cdef object _key
    cdef int _refs
    cdef object _pair
    cdef bint _stopped
    cdef object _local_address
    cdef object __weakref__
    cdef _setup(self, Channel channel)
    cdef _free_core(self)
    cdef bint _receive_ready(self, int batches) noexcept nogil
    cdef int64_t _send_due(self, int turns) noexcept nogil
    cdef void _run_timers(self, int64_t now) noexcept nogil
    cdef bint _open_batch(self, CRecvBatch* rx, int n) noexcept nogil
    cdef MuxConn* _route_handshake(self, const uint8_t* data, size_t length, const sockaddr* source,
                                   core.PacketInfo* info, int64_t now) noexcept nogil
    cdef void _reply(self, const sockaddr* destination, ssize_t length) noexcept nogil
    cdef dict _listener_stats(self)
