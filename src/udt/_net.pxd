# cython: language_level=3
"""C declarations of the UDP channel, shared with every Cython unit that does socket I/O.

Other units ``cimport`` from here: the kernel structures (sockaddr_storage, iovec, mmsghdr),
the address helpers, the preallocated batch structures and the :class:`Channel` whose
``c_*`` methods run without the GIL and return ``-errno`` instead of raising. They are declared
in the units that implement them (``_sys``, ``_addr``, ``_batch``, ``_sock``) and re-exported
here, so ``from udt._net cimport X`` keeps working for all of them.
"""
from libc.stdint cimport int64_t, uint32_t
from posix.uio cimport iovec

cimport udt._batch as _batch
from udt._addr cimport address_from_sockaddr, sockaddr_from_address
from udt._batch cimport (CRecvBatch, CSendBatch, recv_batch_free, recv_batch_new,
                         recv_batch_source, recv_batch_source_length, recv_batch_split,
                         send_batch_add, send_batch_add_pair, send_batch_clear, send_batch_free,
                         send_batch_new, send_batch_plan)
from udt._sock cimport UdpSocket
from udt._sys cimport *


cdef class Channel(UdpSocket):
    # The descriptor, its lifetime and its options live in the base (udt._sock).
    cdef bint _gso_supported
    cdef bint _gro_supported
    cdef bint _gso
    cdef bint _gro
    cdef int _max_payload
    cdef uint32_t _gso_segment_limit    # lowered when a GSO run of larger segments got EINVAL
    # Python-level receive path when GRO is on: one shared GRO batch under a lock.
    cdef _batch.RecvBatch _rx
    cdef int _rx_next
    cdef void* _rx_lock
    # Python-level send path: the last destination converted (avoids re-parsing the tuple).
    cdef object _last_address
    cdef sockaddr_storage _last_sockaddr
    cdef socklen_t _last_sockaddr_length
    cdef object _last_source
    cdef sockaddr_storage _last_source_sockaddr
    cdef socklen_t _last_source_length

    cdef int c_send_batch(self, CSendBatch* batch, int64_t timeout_us) noexcept nogil
    cdef int c_recv_batch(self, CRecvBatch* batch, int64_t timeout_us) noexcept nogil
    cdef object _source_tuple(self, const sockaddr* addr, socklen_t length)
    cdef _setup(self, int fd, int family, bint reuse_addr, bint reuse_port, bint gso, bint gro,
                object rcvbuf, object sndbuf)
    cdef int _destination(self, object address, socklen_t* length) except -1
    cdef object _recvfrom_gro(self, Py_buffer* view, int64_t wait_us)
    cdef CRecvBatch* _shared_rx(self) except NULL
    cdef bint _rx_has_datagrams(self) noexcept
