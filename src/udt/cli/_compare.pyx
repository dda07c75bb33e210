# cython: language_level=3
"""Byte-exact comparison of two buffers at memory speed, for ``udt-recv --mem``.

The memory mode's receiver checks every byte it receives against the pattern the sender
generated (see :mod:`udt.cli._pattern`).  ``memoryview.__eq__`` compares element by element
through the struct machinery (0.17 GB/s here), slower than the transport; ``bytes(a) == bytes(b)``
allocates and copies both sides.  ``memcmp`` without the GIL reads each buffer once.
"""
from libc.string cimport memcmp


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """True when ``a`` and ``b`` (contiguous byte buffers) have the same length and contents."""
    cdef Py_ssize_t n = a.shape[0]
    cdef int diff
    if n != b.shape[0]:
        return False
    if n == 0:
        return True
    with nogil:
        diff = memcmp(&a[0], &b[0], <size_t>n)
    return diff == 0
