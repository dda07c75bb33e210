# cython: language_level=3
"""errno to exception, shared by every channel unit (the declarations are in ``_sys.pxd``)."""
from libc.errno cimport ETIMEDOUT
from libc.string cimport strerror


cdef object raise_errno(int error):
    """Raise the OSError subclass the socket module would raise for ``error``."""
    if error == ETIMEDOUT:
        raise TimeoutError("timed out")
    raise OSError(error, strerror(error).decode("utf-8", "replace"))
