# cython: language_level=3
"""C side of the flood generator's data path (see _sender.pyx)."""
from libc.stdint cimport int64_t, uint8_t


cdef class RawSender:
    cdef int fd
    cdef uint8_t* ring              # count packets of stride bytes, IPv4 + UDP headers included
    cdef size_t* lengths
    cdef int count
    cdef int stride
    cdef int batch
    cdef void* messages             # mmsghdr[batch]
    cdef void* iov                  # iovec[batch]
    cdef void* destination          # sockaddr_in
    cdef volatile int stop_flag
    cdef int64_t sent
    cdef int64_t errors
    cdef int64_t batches
