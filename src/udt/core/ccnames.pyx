# cython: language_level=3
"""The native congestion controls by name: what ``UDT_CC`` accepts as a string."""
from udt.core.bbr cimport bbr_cc_ops
from udt.core.cc cimport native_cc_ops
from udt.core.ccapi cimport CCOps

#: the names in the order udt.cc.available() lists them
NATIVE_NAMES = ("bbr", "udt4")


cdef const CCOps* native_cc_by_name(str name):
    """The CCOps table of a native controller, NULL if no native controller has that name."""
    if name == "bbr":
        return bbr_cc_ops()
    if name == "udt4":
        return native_cc_ops()
    return NULL
