# cython: language_level=3
"""Receive-rate and link-capacity estimation (protocol.md §7): arrival and packet-pair gap
histories and their median filter.  Header-only (cdef inline): it runs on every data packet."""
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t

from udt._core cimport ARRIVAL_WINDOW, PROBE_WINDOW, Conn, RateEstimator
from udt.core.seq cimport seq_inc


cdef inline void _close_batch(RateEstimator* r) noexcept nogil:
    """Record the arrival gaps of the packets that arrived at last_arrival: the interval since
    the arrival before them, spread evenly over them.  A receive batch (recvmmsg, GRO, the
    receive worker's nap) hands many packets over at one time; their own gaps were 0 and,
    recorded as such (1 us), put the receive rate at a million packets/s."""
    cdef int64_t gap
    cdef int _i, n
    if r.batch_from <= 0 or r.batch_packets <= 0:
        return
    gap = (r.last_arrival - r.batch_from) // r.batch_packets
    if gap < 1:
        gap = 1
    n = r.batch_packets if r.batch_packets < ARRIVAL_WINDOW else ARRIVAL_WINDOW
    for _i in range(n):
        r.arrival_gap[r.arrival_pos] = gap
        r.arrival_pos = (r.arrival_pos + 1) % ARRIVAL_WINDOW
    r.arrival_count = r.arrival_count + n if r.arrival_count + n < ARRIVAL_WINDOW else ARRIVAL_WINDOW


cdef inline void _record_pair_gap(RateEstimator* r, int64_t gap) noexcept nogil:
    r.probe_gap[r.probe_pos] = gap
    r.probe_pos = (r.probe_pos + 1) % PROBE_WINDOW
    if r.probe_count < PROBE_WINDOW:
        r.probe_count += 1


cdef inline void _record_arrival(Conn* c, int32_t seq, int64_t now) noexcept nogil:
    """Note one data packet's arrival in the receive-rate and packet-pair histories.

    A pair's gap is the link's only if each of its packets arrived alone: the first packet not
    sharing its time with the one before it, the second not with the one after it.  A pair
    handed over in one receive batch has a gap of 0 (recorded as 1 us it was a capacity of a
    million packets/s), and one split across two batches has the time between them."""
    cdef RateEstimator* r = &c.rate
    if now < 1:
        now = 1
    if r.pair_gap > 0:                      # the previous packet ended a pair: alone?
        if now != r.last_arrival:
            _record_pair_gap(r, r.pair_gap)
        r.pair_gap = 0
    if now == r.last_arrival:
        r.batch_packets += 1
    else:
        _close_batch(r)
        r.batch_from = r.last_arrival
        r.last_arrival = now
        r.batch_packets = 1
    if (seq & 0xF) == 0:
        r.probe1_time = now if r.batch_packets == 1 else 0
        r.probe1_seq = seq
    else:
        if r.probe1_time > 0 and seq == seq_inc(r.probe1_seq) and now > r.probe1_time:
            r.pair_gap = now - r.probe1_time
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
