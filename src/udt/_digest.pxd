# cython: language_level=3
"""SHA-256 whose update runs without the GIL (the receive path hashes ring slots in C)."""


cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_MD_CTX:
        pass


cdef class Sha256:
    cdef EVP_MD_CTX* ctx
    cdef int feed(self, const void* data, size_t length) noexcept nogil
