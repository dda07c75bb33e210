# cython: language_level=3
"""Native BBR-family congestion control: a CCOps table the engine selects by name ("bbr")."""
from udt.core.ccapi cimport CCOps

cdef const CCOps* bbr_cc_ops() noexcept nogil
