# cython: language_level=3
"""Buffers of their own pages (mmap), for the few large per-port and per-connection areas and
the rings' chunks: malloc would put them on its heap once glibc's dynamic mmap threshold has
risen (scrypt's 16 MiB block, the key exchange of protocol.md §12, raises it to 16 MiB), where
they reuse pages scrypt dirtied and, once freed, stay resident as glibc's reserve.  A mapping
is resident only where it was touched and goes back to the kernel at munmap."""
from posix.mman cimport MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, munmap


cdef inline void* pages_map(size_t size) noexcept nogil:
    """size bytes of zero-filled pages of their own; NULL when out of memory."""
    cdef void* p
    if size == 0:
        return NULL
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    return NULL if p == MAP_FAILED else p


cdef inline void pages_unmap(void* p, size_t size) noexcept nogil:
    """Give back what pages_map(size) returned (NULL: nothing)."""
    if p != NULL:
        munmap(p, size)
