# cython: language_level=3
"""The batch structures: allocation, GSO planning, GRO splitting, and their Python owners.

:class:`SendBatch` and :class:`RecvBatch` own one C batch each for Python callers (tests, bench,
``Channel.send_batch``/``recv_batch``); the multiplexer allocates the C structures directly.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport ENOBUFS
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from udt._pages cimport pages_map, pages_unmap

from udt._addr cimport address_from_sockaddr
from udt._sys cimport (CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE, MSG_TRUNC,
                       SOL_UDP, UDP_GRO, UDP_SEGMENT, cmsghdr, mmsghdr, msghdr, raise_errno,
                       sockaddr_storage)

__all__ = ["SendBatch", "RecvBatch", "GSO_MAX_SEGMENTS", "GRO_BUFFER_SIZE"]

cdef enum:
    # Room for the UDP_GRO cmsg plus what other enabled options (packet info, timestamps) add.
    GRO_CONTROL_SPACE = 256
    DEFAULT_SEND_DATAGRAMS = 1024


cdef CSendBatch* send_batch_new(int max_datagrams, int max_iovecs) noexcept nogil:
    """A send batch for up to ``max_datagrams`` datagrams built from ``max_iovecs`` iovecs."""
    cdef CSendBatch* batch
    if max_datagrams <= 0 or max_iovecs < max_datagrams:
        return NULL
    batch = <CSendBatch*>calloc(1, sizeof(CSendBatch))
    if batch == NULL:
        return NULL
    batch.max_datagrams = max_datagrams
    batch.max_iovecs = max_iovecs
    batch.iov = <iovec*>calloc(max_iovecs, sizeof(iovec))
    batch.first_iov = <int*>calloc(max_datagrams + 1, sizeof(int))
    batch.length = <uint32_t*>calloc(max_datagrams, sizeof(uint32_t))
    batch.messages = <mmsghdr*>calloc(max_datagrams, sizeof(mmsghdr))
    batch.message_datagrams = <int*>calloc(max_datagrams, sizeof(int))
    batch.control = <char*>calloc(max_datagrams, CMSG_SPACE(sizeof(uint16_t)))
    if (batch.iov == NULL or batch.first_iov == NULL or batch.length == NULL
            or batch.messages == NULL or batch.message_datagrams == NULL or batch.control == NULL):
        send_batch_free(batch)
        return NULL
    send_batch_clear(batch)
    return batch


cdef void send_batch_free(CSendBatch* batch) noexcept nogil:
    if batch == NULL:
        return
    free(batch.iov)
    free(batch.first_iov)
    free(batch.length)
    free(batch.messages)
    free(batch.message_datagrams)
    free(batch.control)
    free(batch)


cdef CRecvBatch* recv_batch_new(int slots, size_t slot_size, int max_datagrams) noexcept nogil:
    """``slots`` receive buffers of ``slot_size`` bytes (GRO needs GRO_BUFFER_SIZE) delivering at
    most ``max_datagrams`` datagrams per receive (0: every datagram a full GRO buffer can hold;
    never fewer than ``slots``; what does not fit stays pending for the next receive)."""
    cdef CRecvBatch* batch
    cdef int i
    if slots <= 0 or slot_size == 0:
        return NULL
    batch = <CRecvBatch*>calloc(1, sizeof(CRecvBatch))
    if batch == NULL:
        return NULL
    batch.slots = slots
    batch.slot_size = slot_size
    batch.control_size = GRO_CONTROL_SPACE
    if max_datagrams <= 0:
        max_datagrams = slots * (GRO_MAX_SEGMENTS if slot_size >= GRO_BUFFER_SIZE else 1)
    elif max_datagrams < slots:
        max_datagrams = slots                  # every receive buffer needs an entry at least
    batch.max_datagrams = max_datagrams
    batch.area = <char*>pages_map(slots * slot_size)   # touched only as far as GRO fills it
    batch.messages = <mmsghdr*>calloc(slots, sizeof(mmsghdr))
    batch.iov = <iovec*>calloc(slots, sizeof(iovec))
    batch.sources = <sockaddr_storage*>calloc(slots, sizeof(sockaddr_storage))
    batch.control = <char*>calloc(slots, batch.control_size)
    batch.data = <char**>calloc(batch.max_datagrams, sizeof(char*))
    batch.length = <uint32_t*>calloc(batch.max_datagrams, sizeof(uint32_t))
    batch.source_slot = <int*>calloc(batch.max_datagrams, sizeof(int))
    if (batch.area == NULL or batch.messages == NULL or batch.iov == NULL
            or batch.sources == NULL or batch.control == NULL or batch.data == NULL
            or batch.length == NULL or batch.source_slot == NULL):
        recv_batch_free(batch)
        return NULL
    for i in range(slots):
        batch.iov[i].iov_base = batch.area + <size_t>i * slot_size
        batch.messages[i].msg_hdr.msg_iov = &batch.iov[i]
        batch.messages[i].msg_hdr.msg_iovlen = 1
        batch.messages[i].msg_hdr.msg_name = &batch.sources[i]
        batch.messages[i].msg_hdr.msg_control = batch.control + <size_t>i * batch.control_size
    return batch


cdef void recv_batch_free(CRecvBatch* batch) noexcept nogil:
    if batch == NULL:
        return
    pages_unmap(batch.area, <size_t>batch.slots * batch.slot_size)
    free(batch.messages)
    free(batch.iov)
    free(batch.sources)
    free(batch.control)
    free(batch.data)
    free(batch.length)
    free(batch.source_slot)
    free(batch)


cdef int send_batch_plan(CSendBatch* batch, bint use_gso, uint32_t segment_limit,
                         int max_payload) noexcept nogil:
    """Group the unsent datagrams into messages: runs of equal-size segments under one
    UDP_SEGMENT cmsg (the last of a run may be shorter) when ``use_gso``, else one each.

    GSO runs hold segments of at most ``segment_limit`` bytes and at most ``max_payload`` bytes
    in all (one IP datagram): the sending channel's limits. Returns the number of messages."""
    cdef int i = batch.done, j, k = 0
    cdef uint32_t segment, total
    cdef mmsghdr* message
    cdef cmsghdr* cmsg
    cdef uint16_t gso_size
    cdef size_t control_space = CMSG_SPACE(sizeof(uint16_t))
    while i < batch.count:
        message = &batch.messages[k]
        message.msg_hdr.msg_name = &batch.address if batch.address_length else NULL
        message.msg_hdr.msg_namelen = batch.address_length
        message.msg_hdr.msg_control = NULL
        message.msg_hdr.msg_controllen = 0
        message.msg_hdr.msg_flags = 0
        j = i + 1
        segment = batch.length[i]
        if use_gso and 0 < segment <= segment_limit:
            total = segment
            while (j < batch.count and j - i < GSO_MAX_SEGMENTS
                   and batch.length[j - 1] == segment and 0 < batch.length[j] <= segment
                   and total + batch.length[j] <= <uint32_t>max_payload
                   and batch.first_iov[j + 1] - batch.first_iov[i] <= MAX_IOVECS_PER_MESSAGE):
                total += batch.length[j]
                j += 1
            if j - i > 1:
                message.msg_hdr.msg_control = batch.control + <size_t>k * control_space
                message.msg_hdr.msg_controllen = control_space
                cmsg = CMSG_FIRSTHDR(&message.msg_hdr)
                cmsg.cmsg_level = SOL_UDP
                cmsg.cmsg_type = UDP_SEGMENT
                cmsg.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                gso_size = <uint16_t>segment
                memcpy(CMSG_DATA(cmsg), &gso_size, sizeof(uint16_t))
        message.msg_hdr.msg_iov = &batch.iov[batch.first_iov[i]]
        message.msg_hdr.msg_iovlen = batch.first_iov[j] - batch.first_iov[i]
        batch.message_datagrams[k] = j - i
        k += 1
        i = j
    return k


cdef inline int _gro_segment_size(msghdr* header) noexcept nogil:
    """The UDP_GRO segment size the kernel attached to a message, 0 when it is one datagram."""
    cdef cmsghdr* cmsg = CMSG_FIRSTHDR(header)
    cdef int size = 0
    while cmsg != NULL:
        if cmsg.cmsg_level == SOL_UDP and cmsg.cmsg_type == UDP_GRO:
            memcpy(&size, CMSG_DATA(cmsg), sizeof(int))
            return size
        cmsg = CMSG_NXTHDR(header, cmsg)
    return 0


cdef void recv_batch_split(CRecvBatch* batch) noexcept nogil:
    """Cut the received messages into datagrams until the output arrays are full."""
    cdef int k, segment
    cdef uint32_t total, offset
    cdef msghdr* header
    batch.count = 0
    k = batch.pending_message
    offset = batch.pending_offset
    while k < batch.pending_messages:
        header = &batch.messages[k].msg_hdr
        total = batch.messages[k].msg_len
        if header.msg_flags & MSG_TRUNC:
            batch.truncated += 1             # longer than a slot: its tail is gone, drop it
            k += 1
            offset = 0
            continue
        segment = _gro_segment_size(header)
        if segment <= 0 or <uint32_t>segment >= total:
            segment = total
        if total == 0:                         # an empty datagram is still one datagram
            if batch.count == batch.max_datagrams:
                break
            batch.data[batch.count] = <char*>batch.iov[k].iov_base
            batch.length[batch.count] = 0
            batch.source_slot[batch.count] = k
            batch.count += 1
            k += 1
            continue
        while offset < total:
            if batch.count == batch.max_datagrams:
                batch.pending_message = k
                batch.pending_offset = offset
                return
            batch.data[batch.count] = <char*>batch.iov[k].iov_base + offset
            batch.length[batch.count] = segment if offset + segment <= total else total - offset
            batch.source_slot[batch.count] = k
            batch.count += 1
            offset += segment
        k += 1
        offset = 0
    batch.pending_message = k
    batch.pending_offset = offset


cdef class SendBatch:
    """Datagrams queued for one destination, sent by :meth:`Channel.send_batch` in one call.

    Buffers are referenced, not copied: each added object stays alive (and, for a bytearray,
    unresizable) until :meth:`clear`. A datagram may be several buffers (header + payload).
    """

    def __cinit__(self, int max_datagrams=DEFAULT_SEND_DATAGRAMS, max_iovecs=None):
        cdef int iovecs = max_datagrams * 2 if max_iovecs is None else max_iovecs
        if max_datagrams <= 0:
            raise ValueError("max_datagrams must be positive")
        if iovecs < max_datagrams:
            raise ValueError("max_iovecs must be at least max_datagrams")
        self.c = send_batch_new(max_datagrams, iovecs)
        if self.c == NULL:
            raise MemoryError()
        self._views = calloc(iovecs, sizeof(Py_buffer))
        if self._views == NULL:
            raise MemoryError()
        self._view_capacity = iovecs
        self._view_count = 0
        self._keep = []

    def __dealloc__(self):
        self._release_views()
        free(self._views)
        send_batch_free(self.c)

    cdef void _release_views(self) noexcept:
        cdef Py_buffer* views = <Py_buffer*>self._views
        cdef int i
        for i in range(self._view_count):
            PyBuffer_Release(&views[i])
        self._view_count = 0

    def add(self, data) -> None:
        """Queue one datagram: a bytes-like, or a sequence of bytes-likes sent back to back."""
        cdef Py_buffer* views = <Py_buffer*>self._views
        cdef int first_view = self._view_count
        cdef int pieces, i
        cdef size_t total = 0
        cdef CSendBatch* c = self.c
        parts = (data,) if PyObject_CheckBuffer(data) else tuple(data)
        pieces = len(parts)
        if pieces == 0:
            raise ValueError("a datagram needs at least one buffer")
        if c.count >= c.max_datagrams or c.iov_count + pieces > c.max_iovecs:
            raise_errno(ENOBUFS)  # the batch is full
        try:
            for i in range(pieces):
                PyObject_GetBuffer(parts[i], &views[self._view_count], PyBUF_SIMPLE)
                self._view_count += 1
        except BaseException:
            while self._view_count > first_view:      # not a bytes-like: undo this datagram
                self._view_count -= 1
                PyBuffer_Release(&views[self._view_count])
            raise
        for i in range(pieces):
            c.iov[c.iov_count + i].iov_base = views[first_view + i].buf
            c.iov[c.iov_count + i].iov_len = views[first_view + i].len
            total += views[first_view + i].len
        c.iov_count += pieces
        c.length[c.count] = <uint32_t>total
        c.count += 1
        c.first_iov[c.count] = c.iov_count
        self._keep.append(parts)

    def clear(self) -> None:
        """Forget every queued datagram and release their buffers."""
        self._release_views()
        self._keep.clear()
        send_batch_clear(self.c)

    def rewind(self) -> None:
        """Mark every queued datagram unsent again, so the same batch can be sent once more."""
        self.c.done = 0

    def __len__(self) -> int:
        return self.c.count

    @property
    def pending(self) -> int:
        """Datagrams queued but not yet handed to the kernel."""
        return self.c.count - self.c.done

    @property
    def capacity(self) -> int:
        return self.c.max_datagrams


cdef class RecvBatch:
    """A reusable receive area: ``slots`` buffers of ``slot_size`` bytes (64 KiB for GRO).

    After :meth:`Channel.recv_batch` it holds ``len(batch)`` datagrams, valid until the next
    receive into it; ``batch[i]`` is ``(bytes, address)``.
    """

    def __cinit__(self, int slots=64, size_t slot_size=GRO_BUFFER_SIZE, int max_datagrams=0):
        # max_datagrams: the most datagrams one receive delivers (0: all a GRO buffer can hold).
        if slots <= 0:
            raise ValueError("slots must be positive")
        if slot_size == 0 or slot_size > GRO_BUFFER_SIZE:
            raise ValueError(f"slot_size must be 1-{GRO_BUFFER_SIZE}")
        if max_datagrams < 0:
            raise ValueError("max_datagrams must be positive (or 0 for the default)")
        self.c = recv_batch_new(slots, slot_size, max_datagrams)
        if self.c == NULL:
            raise MemoryError()

    def __dealloc__(self):
        recv_batch_free(self.c)

    def __len__(self) -> int:
        return self.c.count

    def __getitem__(self, int index):
        if index < 0:
            index += self.c.count
        if not 0 <= index < self.c.count:
            raise IndexError("datagram index out of range")
        return (PyBytes_FromStringAndSize(self.c.data[index], self.c.length[index]),
                address_from_sockaddr(recv_batch_source(self.c, index),
                                      recv_batch_source_length(self.c, index)))

    def length(self, int index) -> int:
        if not 0 <= index < self.c.count:
            raise IndexError("datagram index out of range")
        return self.c.length[index]

    @property
    def nbytes(self) -> int:
        """Total payload bytes of the datagrams now in the batch."""
        cdef int i
        cdef size_t total = 0
        for i in range(self.c.count):
            total += self.c.length[i]
        return total

    @property
    def truncated(self) -> int:
        """Datagrams dropped so far because they did not fit one slot."""
        return self.c.truncated

    @property
    def has_pending(self) -> bool:
        """Datagrams already received but not yet delivered (the next receive returns them)."""
        return self.c.pending_message < self.c.pending_messages

    @property
    def slots(self) -> int:
        return self.c.slots

    @property
    def slot_size(self) -> int:
        return self.c.slot_size
