# cython: language_level=3
"""C API of udt/core/stats.pyx: perfmon values of a connection."""
from libc.stdint cimport int64_t

from udt._core cimport Conn, Stats

# Fill *out with perfmon values; clear=1 restarts the interval counters.
cdef void conn_stats(Conn* conn, Stats* out, bint clear, int64_t now) noexcept nogil

# Stats as the public perfmon dict (udt.socket.perfmon(), the test shim): the one table of keys.
# UDT4's fields in snake_case, pkt_duplicate_total, pkt_late_total, invalid_<reason> per
# udt._core.INVALID_REASONS (the Python names of the InvalidReason enum) and invalid_total.
cdef dict stats_dict(const Stats* s)
