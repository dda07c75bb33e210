# cython: language_level=3
"""The WAN link's queue discipline (``Shaper``, one per direction) and its I/O loop (``Forwarder``).

The shaper is pure arithmetic on a caller-given clock, so tests drive it with a fake clock; the
forwarder moves packets between two TUN fds through two shapers in one ``nogil`` epoll loop.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef struct Counters:
    uint64_t arrived              # packets read from the sending side (valid or not)
    uint64_t delivered            # packets written to the other side
    uint64_t delivered_bytes
    uint64_t random_drops         # independent random loss
    uint64_t ge_drops             # Gilbert-Elliott loss
    uint64_t queue_drops          # drop-tail: the queue (in time or packets) was full
    uint64_t overflow_drops       # the preallocated ring was full (rate above the sizing)
    uint64_t invalid              # not an IPv4/IPv6 packet
    uint64_t write_errors         # the receiving TUN refused the packet
    uint64_t gso_writes           # UDP GSO super-packets written (each several delivered packets)
    uint64_t queue_delay_ns_sum   # time spent waiting behind earlier packets, admitted packets
    uint64_t queue_delay_ns_max
    uint64_t admitted


cdef struct Slot:
    int64_t depart_ns             # end of this packet's serialisation
    int64_t due_ns                # depart_ns + one-way delay (+ jitter): when it is written out
    uint32_t offset               # into the byte ring (the virtio-net header, when there is one)
    uint32_t length


cdef struct Direction:
    double ns_per_byte            # 8e9 / rate; the rate is never unlimited
    double base_ns_per_byte       # the rate before any schedule entry
    double max_ns_per_byte        # the rate the rings were sized for (set_rate may not exceed it)
    int64_t delay_ns
    int64_t jitter_ns             # uniform in [-jitter, +jitter], never reordering
    int64_t queue_ns              # 0: no limit in time
    uint64_t queue_packets        # 0: no limit in packets
    double loss
    bint ge_on
    bint ge_bad
    double ge_p_good_bad
    double ge_p_bad_good
    double ge_loss_good
    double ge_loss_bad
    uint64_t rng
    # rate schedule: from sched_origin_ns + sched_t_ns[i] the rate is sched_ns_per_byte[i]
    int64_t* sched_t_ns
    double* sched_ns_per_byte
    Py_ssize_t sched_n
    Py_ssize_t sched_next
    int64_t sched_origin_ns
    int64_t last_depart_ns
    int64_t last_due_ns
    Slot* slots
    uint64_t nslots
    uint64_t head                 # sequence numbers: slot index = seq % nslots
    uint64_t tail
    uint64_t waiting              # first packet not yet serialised (for the packet limit)
    uint8_t* ring
    uint64_t ring_size
    uint64_t write_pos
    uint32_t mtu
    uint32_t vnet                 # bytes of virtio-net header before each slot's packet (0 or 10)
    Counters c


cdef class Shaper:
    cdef Direction d
    cdef object _name


cdef class Forwarder:
    cdef Shaper forward           # left TUN -> right TUN
    cdef Shaper reverse           # right TUN -> left TUN
    cdef int left_fd
    cdef int right_fd
    cdef int epoll_fd              # idle: both TUNs, the timer, stop
    cdef int busy_epoll_fd         # ticking: the timer and stop only
    cdef int timer_fd
    cdef int stop_fd
    cdef uint8_t* scratch
    cdef bint vnet                # the TUN fds carry virtio-net headers (UDP GSO offload)
    cdef int loop_errno

    cdef int _loop(self) noexcept nogil
