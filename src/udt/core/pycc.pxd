# cython: language_level=3
"""The Python congestion-control trampoline (udt/core/pycc.pyx); _core.pxd re-exports it."""
from udt.core.ccapi cimport CCOps

cdef const CCOps* python_cc_ops() noexcept nogil
