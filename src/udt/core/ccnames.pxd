# cython: language_level=3
"""The native congestion controls by name (UDT_CC = "bbr", "udt4"): one table for the engine's users."""
from udt.core.ccapi cimport CCOps

cdef const CCOps* native_cc_by_name(str name)
