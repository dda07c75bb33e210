# cython: language_level=3
"""Receive-rate and link-capacity estimation (protocol.md §7): arrival and packet-pair gap
histories and their median filter.  Header-only (cdef inline): it runs on every data packet."""
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t

from udt._core cimport ARRIVAL_WINDOW, PROBE_WINDOW, Conn, RateEstimator
from udt.core.seq cimport seq_inc


cdef inline void _record_arrival(Conn* c, int32_t seq, int64_t now) noexcept nogil:
    cdef RateEstimator* r = &c.rate
    cdef int64_t gap
    if r.last_arrival > 0:
        gap = now - r.last_arrival
        if gap < 1:
            gap = 1
        r.arrival_gap[r.arrival_pos] = gap
        r.arrival_pos = (r.arrival_pos + 1) % ARRIVAL_WINDOW
        if r.arrival_count < ARRIVAL_WINDOW:
            r.arrival_count += 1
    r.last_arrival = now if now > 0 else 1
    if (seq & 0xF) == 0:
        r.probe1_time = now if now > 0 else 1
        r.probe1_seq = seq
    elif r.probe1_time > 0 and seq == seq_inc(r.probe1_seq):
        gap = now - r.probe1_time
        if gap < 1:
            gap = 1
        r.probe_gap[r.probe_pos] = gap
        r.probe_pos = (r.probe_pos + 1) % PROBE_WINDOW
        if r.probe_count < PROBE_WINDOW:
            r.probe_count += 1
        r.probe1_time = 0
    else:
        r.probe1_time = 0


cdef inline double _median_mean(const int64_t* values, int count, int min_survivors) noexcept nogil:
    """Median filter of protocol.md §7: drop values outside (median/8, median*8), average the rest.
    Returns the mean gap in µs, or 0 if fewer than min_survivors values survive."""
    cdef int64_t tmp[PROBE_WINDOW]
    cdef int i, j, n = 0
    cdef int64_t v, median, total = 0
    if count <= 0:
        return 0
    for i in range(count):
        v = values[i]
        j = i
        while j > 0 and tmp[j - 1] > v:
            tmp[j] = tmp[j - 1]
            j -= 1
        tmp[j] = v
    median = tmp[count // 2]
    for i in range(count):
        v = values[i]
        if v * 8 > median and v < median * 8:
            total += v
            n += 1
    if n < min_survivors or n == 0:
        return 0
    return <double>total / n


cdef inline int64_t _receive_rate(Conn* c) noexcept nogil:
    cdef double mean = _median_mean(c.rate.arrival_gap, c.rate.arrival_count, 9)
    if mean <= 0:
        return 0
    return <int64_t>ceil(1e6 / mean)        # UDT4 rounds up


cdef inline int64_t _link_capacity(Conn* c) noexcept nogil:
    cdef double mean = _median_mean(c.rate.probe_gap, c.rate.probe_count, 1)
    if mean <= 0:
        return 1000
    return <int64_t>ceil(1e6 / mean)
