# cython: language_level=3
"""Native congestion control (UDT's DAIMD): the engine's default CCOps table."""
from udt.core.ccapi cimport CCOps

cdef const CCOps* native_cc_ops() noexcept nogil
