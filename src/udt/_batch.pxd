# cython: language_level=3
"""The preallocated batch structures of one sendmmsg/recvmmsg and their Python owners.

The multiplexer fills a :c:type:`CSendBatch` and drains a :c:type:`CRecvBatch` without the GIL;
the per-datagram helpers are inline here so its loops pay no call for them.
"""
from libc.errno cimport ENOBUFS
from libc.stdint cimport uint32_t, uint64_t
from posix.uio cimport iovec

from udt._sys cimport mmsghdr, sockaddr, sockaddr_storage, socklen_t


# Limits of one UDP datagram and of one GSO send (the kernel refuses more segments per call on
# older releases, and the whole GSO payload must fit one IP datagram).
cpdef enum:
    MAX_UDP_PAYLOAD_V4 = 65507
    MAX_UDP_PAYLOAD_V6 = 65527
    GSO_MAX_SEGMENTS = 64
    GRO_BUFFER_SIZE = 65536
    # A looped-back GSO send reaches a GRO socket whole: up to 128 segments on current kernels.
    GRO_MAX_SEGMENTS = 128
    MAX_IOVECS_PER_MESSAGE = 1024


cdef struct CSendBatch:
    # Datagrams queued for ONE destination, each made of one or more consecutive iovecs.
    int max_datagrams
    int max_iovecs
    int count                  # datagrams queued
    int iov_count              # iovecs used
    int done                   # datagrams already handed to the kernel (progress across calls)
    iovec* iov                 # [max_iovecs]
    int* first_iov             # [max_datagrams + 1]: datagram i uses iov[first_iov[i]:first_iov[i+1]]
    uint32_t* length           # [max_datagrams]: bytes of datagram i
    mmsghdr* messages          # [max_datagrams]: one per GSO run or per datagram
    int* message_datagrams     # [max_datagrams]: datagrams carried by messages[k]
    char* control              # [max_datagrams * CMSG_SPACE(sizeof(uint16_t))]
    sockaddr_storage address   # destination; address_length 0 = the connected peer
    socklen_t address_length


cdef struct CRecvBatch:
    # A reusable block of GRO-sized receive buffers and the datagrams found in them.
    int slots                  # receive buffers, one message each
    size_t slot_size
    char* area                 # [slots * slot_size]
    mmsghdr* messages          # [slots]
    iovec* iov                 # [slots]
    sockaddr_storage* sources  # [slots]
    char* control              # [slots * control_size]
    size_t control_size
    int max_datagrams          # capacity of the arrays below
    int count                  # datagrams delivered by the last receive
    char** data                # [max_datagrams]: start of datagram i (inside area)
    uint32_t* length           # [max_datagrams]
    int* source_slot           # [max_datagrams]: index into sources / messages of datagram i
    # Messages received but not yet split because the arrays above were full.
    int pending_message
    int pending_messages
    uint32_t pending_offset
    # Counters of datagrams the batch dropped: longer than a slot (MSG_TRUNC).
    uint64_t truncated


# ---- batch structures (no GIL; NULL on ENOMEM) ----
cdef CSendBatch* send_batch_new(int max_datagrams, int max_iovecs) noexcept nogil
cdef void send_batch_free(CSendBatch* batch) noexcept nogil
cdef CRecvBatch* recv_batch_new(int slots, size_t slot_size, int max_datagrams) noexcept nogil
cdef void recv_batch_free(CRecvBatch* batch) noexcept nogil
# Per batch, not per datagram: group unsent datagrams into (GSO) messages; cut received
# messages (GRO buffers) into datagrams.
cdef int send_batch_plan(CSendBatch* batch, bint use_gso, uint32_t segment_limit,
                         int max_payload) noexcept nogil
cdef void recv_batch_split(CRecvBatch* batch) noexcept nogil


cdef inline void send_batch_clear(CSendBatch* batch) noexcept nogil:
    batch.count = 0
    batch.iov_count = 0
    batch.done = 0
    batch.first_iov[0] = 0


cdef inline int send_batch_add(CSendBatch* batch, const void* data, size_t length) noexcept nogil:
    """Queue one datagram made of one buffer; -ENOBUFS when the batch is full."""
    if batch.count >= batch.max_datagrams or batch.iov_count >= batch.max_iovecs:
        return -ENOBUFS
    batch.iov[batch.iov_count].iov_base = <void*>data
    batch.iov[batch.iov_count].iov_len = length
    batch.iov_count += 1
    batch.length[batch.count] = <uint32_t>length
    batch.count += 1
    batch.first_iov[batch.count] = batch.iov_count
    return 0


cdef inline int send_batch_add_pair(CSendBatch* batch, const void* header, size_t header_length,
                                    const void* payload, size_t payload_length) noexcept nogil:
    """Queue one datagram sent as header + payload without copying them together."""
    if batch.count >= batch.max_datagrams or batch.iov_count + 2 > batch.max_iovecs:
        return -ENOBUFS
    batch.iov[batch.iov_count].iov_base = <void*>header
    batch.iov[batch.iov_count].iov_len = header_length
    batch.iov[batch.iov_count + 1].iov_base = <void*>payload
    batch.iov[batch.iov_count + 1].iov_len = payload_length
    batch.iov_count += 2
    batch.length[batch.count] = <uint32_t>(header_length + payload_length)
    batch.count += 1
    batch.first_iov[batch.count] = batch.iov_count
    return 0


cdef inline const sockaddr* recv_batch_source(CRecvBatch* batch, int index) noexcept nogil:
    return <const sockaddr*>&batch.sources[batch.source_slot[index]]


cdef inline socklen_t recv_batch_source_length(CRecvBatch* batch, int index) noexcept nogil:
    return batch.messages[batch.source_slot[index]].msg_hdr.msg_namelen


cdef class SendBatch:
    """Python owner of a :c:type:`CSendBatch` (tests, bench, and the Python send path)."""
    cdef CSendBatch* c
    cdef list _keep          # the objects whose buffers the iovecs point into
    cdef void* _views        # Py_buffer array, one per kept object
    cdef int _view_count
    cdef int _view_capacity
    cdef void _release_views(self) noexcept


cdef class RecvBatch:
    """Python owner of a :c:type:`CRecvBatch`."""
    cdef CRecvBatch* c
