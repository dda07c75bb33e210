# cython: language_level=3
# distutils: libraries = crypto
"""SHA-256 through OpenSSL's EVP, fed from C without the GIL.

``hashlib.sha256`` needs a Python buffer per update; the file receive path
(``Connection.recvfile``) hashes the payloads of receive-ring slots right after writing them,
a few hundred bytes to 64 KiB each, so it calls ``feed`` on raw pointers instead.  The object
also answers ``update``/``digest``/``hexdigest`` like hashlib's, so a caller holds one type.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer


cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_MD:
        pass
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX* out, const EVP_MD_CTX* inp)
    const EVP_MD* EVP_sha256()
    int EVP_DigestInit_ex(EVP_MD_CTX* ctx, const EVP_MD* md, void* impl)
    int EVP_DigestUpdate(EVP_MD_CTX* ctx, const void* d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX* ctx, unsigned char* md, unsigned int* s)


cdef class Sha256:
    """``hashlib.sha256()`` with a C entry point: ``feed`` (nogil) for the receive path."""

    def __cinit__(self):
        self.ctx = EVP_MD_CTX_new()
        if self.ctx == NULL or EVP_DigestInit_ex(self.ctx, EVP_sha256(), NULL) != 1:
            raise MemoryError("cannot set up SHA-256")

    def __dealloc__(self):
        if self.ctx != NULL:
            EVP_MD_CTX_free(self.ctx)

    cdef int feed(self, const void* data, size_t length) noexcept nogil:
        """Hash length bytes at data; 0, or -1 if OpenSSL failed."""
        return 0 if EVP_DigestUpdate(self.ctx, data, length) == 1 else -1

    def update(self, data) -> None:
        cdef Py_buffer view
        cdef int result
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                result = self.feed(view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        if result != 0:
            raise RuntimeError("SHA-256 update failed")

    def digest(self) -> bytes:
        """The digest of what was fed so far (feeding may go on, as with hashlib)."""
        cdef unsigned char out[32]
        cdef unsigned int size = 0
        cdef EVP_MD_CTX* copy = EVP_MD_CTX_new()
        if copy == NULL:
            raise MemoryError()
        try:
            if EVP_MD_CTX_copy_ex(copy, self.ctx) != 1 or EVP_DigestFinal_ex(copy, out, &size) != 1:
                raise RuntimeError("SHA-256 final failed")
        finally:
            EVP_MD_CTX_free(copy)
        return out[:size]

    def hexdigest(self) -> str:
        return self.digest().hex()
