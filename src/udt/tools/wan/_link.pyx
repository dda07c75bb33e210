# cython: language_level=3
"""The WAN link's data path: per-direction shaping (``Shaper``) and the TUN forwarding loop.

A packet is judged once, when it arrives: Gilbert-Elliott loss, then random loss (a seeded
splitmix64 stream per direction), then the drop-tail queue.  An admitted packet departs at
``max(now, last departure) + size / rate`` (serialisation), is due ``delay ± jitter`` later (never
before the packet ahead of it: no reordering) and waits in a preallocated FIFO ring: fixed slots
for the metadata, one byte ring for the packets, nothing allocated per packet.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset

from udt.core.siphash cimport splitmix64


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int CLOCK_MONOTONIC
    int clock_gettime(int clock, timespec* ts)


cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        int fd
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int EPOLLIN
    int EPOLL_CTL_ADD
    int EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)


cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    int TFD_NONBLOCK
    int TFD_CLOEXEC
    int TFD_TIMER_ABSTIME
    int timerfd_create(int clock, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec* new_value, itimerspec* old_value)


cdef extern from "<sys/eventfd.h>" nogil:
    int EFD_NONBLOCK
    int EFD_CLOEXEC
    int eventfd(unsigned int initial, int flags)


cdef extern from "<sys/prctl.h>" nogil:
    int PR_SET_TIMERSLACK
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)


cdef extern from "<sys/resource.h>" nogil:
    int PRIO_PROCESS
    int setpriority(int which, int who, int prio)


cdef extern from "<unistd.h>" nogil:
    int gettid()
    ssize_t read(int fd, void* buf, size_t count)
    ssize_t write(int fd, const void* buf, size_t count)
    int close(int fd)


cdef enum:
    READ_BATCH = 64          # packets read from one TUN before the other side gets its turn
    MIN_SLOTS = 4096
    MEAN_SLOT_BYTES = 256    # the ring holds rate x time in bytes; slots assume small packets too
    FORWARDER_NICE = -10
    VNET_HDR = 10            # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start/offset
    VNET_READ_MAX = 65536 + 16
    VIRTIO_NEEDS_CSUM = 1
    VIRTIO_GSO_UDP_L4 = 5
    MAX_BATCH = 64           # datagrams in one GSO super-packet written to a TUN

# While packets flow the forwarder wakes on a periodic tick of this length (not once per
# packet): a packet is read and written at most this much after it could have been.
cdef int64_t TICK_NS = 50_000

# Verdicts of Shaper.offer (and of _admit).
cpdef enum Verdict:
    ADMITTED = 0
    RANDOM_DROP = 1
    GE_DROP = 2
    QUEUE_DROP = 3
    OVERFLOW_DROP = 4
    INVALID = 5


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline double _uniform(Direction* d) noexcept nogil:
    """A double in [0, 1) from the direction's stream."""
    return <double>(splitmix64(&d.rng) >> 11) * (1.0 / 9007199254740992.0)


cdef inline bint _valid_ip(const uint8_t* packet, uint32_t length) noexcept nogil:
    """An IPv4 or IPv6 header whose length field matches what the TUN gave us."""
    cdef uint32_t total
    if length < 20:
        return False
    if packet[0] >> 4 == 4:
        total = (<uint32_t>packet[2] << 8) | packet[3]
        return (packet[0] & 0x0F) >= 5 and total == length
    if packet[0] >> 4 == 6 and length >= 40:
        total = ((<uint32_t>packet[4] << 8) | packet[5]) + 40
        return total == length
    return False


cdef uint8_t* _reserve(Direction* d, uint32_t need) noexcept nogil:
    """Contiguous room for *need* bytes at the ring's write position, or NULL when full."""
    cdef uint64_t read_pos
    if d.tail - d.head >= d.nslots:
        return NULL
    if d.tail == d.head:
        d.write_pos = 0
        return d.ring if need <= d.ring_size else NULL
    read_pos = d.slots[d.head % d.nslots].offset
    if d.write_pos > read_pos:
        if d.write_pos + need <= d.ring_size:
            return d.ring + d.write_pos
        if need < read_pos:
            return d.ring        # wrap: the tail end of the ring stays unused this lap
        return NULL
    if d.write_pos + need < read_pos:
        return d.ring + d.write_pos
    return NULL


cdef void _apply_schedule(Direction* d, int64_t now) noexcept nogil:
    while d.sched_next < d.sched_n and now >= d.sched_origin_ns + d.sched_t_ns[d.sched_next]:
        d.ns_per_byte = d.sched_ns_per_byte[d.sched_next]
        d.sched_next += 1


cdef int _admit(Direction* d, int64_t now, uint8_t* packet, uint32_t length) noexcept nogil:
    """Judge the packet just written at *packet* (from _reserve) and queue it if it passes."""
    cdef int64_t start, backlog, serialise, due, jitter
    cdef Slot* slot
    cdef double p
    d.c.arrived += 1
    if not _valid_ip(packet, length):
        d.c.invalid += 1
        return INVALID
    _apply_schedule(d, now)
    if d.ge_on:
        if d.ge_bad:
            if _uniform(d) < d.ge_p_bad_good:
                d.ge_bad = False
        elif _uniform(d) < d.ge_p_good_bad:
            d.ge_bad = True
        p = d.ge_loss_bad if d.ge_bad else d.ge_loss_good
        if p > 0.0 and _uniform(d) < p:
            d.c.ge_drops += 1
            return GE_DROP
    if d.loss > 0.0 and _uniform(d) < d.loss:
        d.c.random_drops += 1
        return RANDOM_DROP
    while d.waiting < d.tail and d.slots[d.waiting % d.nslots].depart_ns <= now:
        d.waiting += 1
    start = d.last_depart_ns if d.last_depart_ns > now else now
    backlog = start - now
    serialise = <int64_t>(length * d.ns_per_byte)
    if (d.queue_ns > 0 and backlog + serialise > d.queue_ns) or (
        d.queue_packets > 0 and d.tail - d.waiting >= d.queue_packets
    ):
        d.c.queue_drops += 1
        return QUEUE_DROP
    slot = &d.slots[d.tail % d.nslots]
    slot.offset = <uint32_t>(packet - d.ring) - d.vnet
    slot.length = length
    slot.depart_ns = start + serialise
    due = slot.depart_ns + d.delay_ns
    if d.jitter_ns > 0:
        jitter = <int64_t>((2.0 * _uniform(d) - 1.0) * d.jitter_ns)
        due += jitter
        if due < slot.depart_ns:
            due = slot.depart_ns
    if due < d.last_due_ns:
        due = d.last_due_ns
    slot.due_ns = due
    d.last_due_ns = due
    d.last_depart_ns = slot.depart_ns
    d.write_pos = slot.offset + d.vnet + length
    d.tail += 1
    d.c.admitted += 1
    d.c.queue_delay_ns_sum += <uint64_t>backlog
    if <uint64_t>backlog > d.c.queue_delay_ns_max:
        d.c.queue_delay_ns_max = <uint64_t>backlog
    return ADMITTED


cdef inline Slot* _due(Direction* d, int64_t now) noexcept nogil:
    """The head packet if it is due at *now*, else NULL."""
    cdef Slot* slot
    if d.head == d.tail:
        return NULL
    slot = &d.slots[d.head % d.nslots]
    return slot if slot.due_ns <= now else NULL


cdef inline void _pop(Direction* d, Slot* slot) noexcept nogil:
    d.c.delivered += 1
    d.c.delivered_bytes += slot.length
    d.head += 1
    if d.waiting < d.head:
        d.waiting = d.head


cdef inline int64_t _next_due(Direction* d) noexcept nogil:
    return d.slots[d.head % d.nslots].due_ns if d.head != d.tail else -1


cdef class Shaper:
    """One direction of the link: its settings, queue, PRNG and counters.

    ``offer(now_ns, packet)`` and ``pop_due(now_ns)`` run the same code as the forwarder on a
    caller-given clock (tests use a fake one).  All times are nanoseconds, rates bits/s.
    """

    def __cinit__(self):
        self.d.slots = NULL
        self.d.ring = NULL
        self.d.sched_t_ns = NULL
        self.d.sched_ns_per_byte = NULL

    def __init__(self, str name, double rate_bps, *, double max_rate_bps=0.0, int64_t delay_ns=0,
                 int64_t jitter_ns=0, int64_t queue_ns=0, uint64_t queue_packets=0, double loss=0.0,
                 ge=None, uint64_t seed=1, schedule=(), uint32_t mtu=1500):
        cdef double capacity_bps = max(rate_bps, max_rate_bps, *(rate for _, rate in schedule))
        cdef double seconds
        if rate_bps <= 0.0:
            raise ValueError(f"{name}: rate must be above 0 bits/s, got {rate_bps}")
        if delay_ns < 0 or jitter_ns < 0 or queue_ns < 0:
            raise ValueError(f"{name}: delay, jitter and queue must be >= 0")
        if queue_ns == 0 and queue_packets == 0:
            raise ValueError(f"{name}: give a queue limit (queue_ns or queue_packets)")
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"{name}: loss must be in [0, 1), got {loss}")
        if not 576 <= mtu <= 65535:
            raise ValueError(f"{name}: mtu {mtu} outside 576..65535")
        self._name = name
        self.d.mtu = mtu
        self.d.ns_per_byte = 8e9 / rate_bps
        self.d.base_ns_per_byte = self.d.ns_per_byte
        self.d.max_ns_per_byte = 8e9 / capacity_bps
        self.d.delay_ns = delay_ns
        self.d.jitter_ns = jitter_ns
        self.d.queue_ns = queue_ns
        self.d.queue_packets = queue_packets
        self.d.loss = loss
        self.d.rng = seed
        if ge is not None:
            self._set_ge(*ge)
        self._set_schedule(schedule)
        # Bytes in the link at most: the queue plus everything in flight for delay + jitter.
        seconds = (queue_ns + delay_ns + jitter_ns) / 1e9 + 0.01
        self.d.ring_size = <uint64_t>(capacity_bps / 8.0 * seconds) + 64 * <uint64_t>mtu
        self.d.ring_size += self.d.ring_size // 8    # room for virtio-net headers (Forwarder)
        if queue_packets:
            self.d.ring_size = max(self.d.ring_size, (queue_packets + 64) * <uint64_t>mtu)
        self.d.nslots = max(<uint64_t>MIN_SLOTS, self.d.ring_size // MEAN_SLOT_BYTES)
        self.d.ring = <uint8_t*>malloc(self.d.ring_size)
        self.d.slots = <Slot*>calloc(self.d.nslots, sizeof(Slot))
        if self.d.ring == NULL or self.d.slots == NULL:
            raise MemoryError(f"{name}: ring of {self.d.ring_size} bytes")

    def __dealloc__(self):
        free(self.d.ring)
        free(self.d.slots)
        free(self.d.sched_t_ns)
        free(self.d.sched_ns_per_byte)

    def _set_ge(self, double p_good_bad, double p_bad_good, double loss_good, double loss_bad):
        for value in (p_good_bad, p_bad_good, loss_good, loss_bad):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self._name}: Gilbert-Elliott probabilities must be in [0, 1]")
        self.d.ge_on = True
        self.d.ge_bad = False
        self.d.ge_p_good_bad = p_good_bad
        self.d.ge_p_bad_good = p_bad_good
        self.d.ge_loss_good = loss_good
        self.d.ge_loss_bad = loss_bad

    def _set_schedule(self, schedule):
        cdef Py_ssize_t i, n = len(schedule)
        entries = sorted(schedule)
        for seconds, rate in entries:
            if seconds < 0 or rate <= 0:
                raise ValueError(f"{self._name}: schedule entries need t >= 0 and rate > 0")
        self.d.sched_t_ns = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
        self.d.sched_ns_per_byte = <double*>malloc(max(n, 1) * sizeof(double))
        if self.d.sched_t_ns == NULL or self.d.sched_ns_per_byte == NULL:
            raise MemoryError("schedule")
        for i in range(n):
            self.d.sched_t_ns[i] = <int64_t>(entries[i][0] * 1e9)
            self.d.sched_ns_per_byte[i] = 8e9 / entries[i][1]
        self.d.sched_n = n
        self.d.sched_next = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def rate_bps(self) -> float:
        return 8e9 / self.d.ns_per_byte

    def set_rate(self, double rate_bps):
        """Change the rate now (a schedule entry still applies at its time)."""
        if rate_bps <= 0.0 or 8e9 / rate_bps < self.d.max_ns_per_byte * (1 - 1e-9):
            raise ValueError(
                f"{self._name}: rate {rate_bps:g} bit/s outside (0, {8e9 / self.d.max_ns_per_byte:g}] "
                "(the rings are sized for max_rate)"
            )
        self.d.ns_per_byte = 8e9 / rate_bps

    def start_schedule(self, int64_t now_ns):
        """Make the schedule's t = 0 *now_ns*: back to the first rate, every entry to come.

        The forwarder may be reading these fields meanwhile: it can see one entry applied early
        or late by the few microseconds this call takes, no more."""
        self.d.sched_next = self.d.sched_n
        self.d.ns_per_byte = self.d.base_ns_per_byte
        self.d.sched_origin_ns = now_ns
        self.d.sched_next = 0

    def offer(self, int64_t now_ns, bytes packet) -> int:
        """Feed one packet at *now_ns*; returns the verdict (ADMITTED, RANDOM_DROP, ...)."""
        cdef Py_ssize_t length = PyBytes_GET_SIZE(packet)
        cdef uint8_t* room = _reserve(&self.d, self.d.vnet + self.d.mtu)
        if length > self.d.mtu:
            raise ValueError(f"packet of {length} bytes above the mtu {self.d.mtu}")
        if room == NULL:
            self.d.c.arrived += 1
            self.d.c.overflow_drops += 1
            return OVERFLOW_DROP
        memset(room, 0, self.d.vnet)
        memcpy(room + self.d.vnet, PyBytes_AS_STRING(packet), length)
        return _admit(&self.d, now_ns, room + self.d.vnet, <uint32_t>length)

    def pop_due(self, int64_t now_ns) -> list:
        """Every packet due at *now_ns*, in order (as bytes)."""
        cdef Slot* slot
        out = []
        while True:
            slot = _due(&self.d, now_ns)
            if slot == NULL:
                return out
            out.append(PyBytes_FromStringAndSize(<char*>self.d.ring + slot.offset + self.d.vnet, slot.length))
            _pop(&self.d, slot)

    def next_due_ns(self):
        """When the head packet is due, or None when the link is empty."""
        cdef int64_t due = _next_due(&self.d)
        return None if due < 0 else due

    def counters(self) -> dict:
        """A snapshot of the counters (read while the forwarder runs: each field is one word)."""
        cdef Counters c = self.d.c
        return {
            "arrived": c.arrived,
            "delivered": c.delivered,
            "delivered_bytes": c.delivered_bytes,
            "random_drops": c.random_drops,
            "ge_drops": c.ge_drops,
            "queue_drops": c.queue_drops,
            "overflow_drops": c.overflow_drops,
            "invalid": c.invalid,
            "write_errors": c.write_errors,
            "gso_writes": c.gso_writes,
            "queue_delay_ms_mean": c.queue_delay_ns_sum / c.admitted / 1e6 if c.admitted else 0.0,
            "queue_delay_ms_max": c.queue_delay_ns_max / 1e6,
            "in_link": self.d.tail - self.d.head,
            "rate_bps": 8e9 / self.d.ns_per_byte,
        }


cdef int _drain_fd(int fd, Direction* d, uint8_t* scratch) noexcept nogil:
    """Read up to READ_BATCH packets from *fd* into *d*; 1 when more may wait, -1 on error."""
    cdef int _i
    cdef ssize_t n
    cdef uint8_t* room
    for _i in range(READ_BATCH):
        if d.vnet:
            n = read(fd, scratch, VNET_READ_MAX)
            if n < 0:
                return 0 if errno == EAGAIN or errno == EINTR else -1
            _take_vnet(d, _now_ns(), scratch, <uint32_t>n)
            continue
        room = _reserve(d, d.mtu)
        n = read(fd, scratch if room == NULL else room, d.mtu)
        if n < 0:
            return 0 if errno == EAGAIN or errno == EINTR else -1
        if room == NULL:
            d.c.arrived += 1
            d.c.overflow_drops += 1
        else:
            _admit(d, _now_ns(), room, <uint32_t>n)
    return 1


cdef inline uint32_t _get16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline void _put16(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = <uint8_t>(value >> 8)
    p[1] = <uint8_t>value


cdef uint32_t _sum16(const uint8_t* p, uint32_t length, uint32_t total) noexcept nogil:
    """Ones'-complement sum of big-endian 16-bit words (length even), folded to 16 bits."""
    cdef uint32_t i
    for i in range(0, length, 2):
        total += _get16(p + i)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


cdef void _offer_vnet(Direction* d, int64_t now, const uint8_t* hdr, const uint8_t* packet,
                      uint32_t length) noexcept nogil:
    """Queue one packet (and its virtio-net header) read from a TUN with offloads."""
    cdef uint8_t* room = _reserve(d, VNET_HDR + length)
    if room == NULL:
        d.c.arrived += 1
        d.c.overflow_drops += 1
        return
    memcpy(room, hdr, VNET_HDR)
    memcpy(room + VNET_HDR, packet, length)
    _admit(d, now, room + VNET_HDR, length)


cdef void _take_vnet(Direction* d, int64_t now, uint8_t* buf, uint32_t n) noexcept nogil:
    """One read from a TUN with UDP GSO offload: a plain packet, or a UDP super-packet that is
    cut into the datagrams its sender wrote, each judged as if it had come alone."""
    cdef uint8_t hdr[VNET_HDR]
    cdef uint8_t* ip = buf + VNET_HDR
    cdef uint32_t length, l4, gso_size, payload, chunk, done, total, i, pseudo, ipv4_id
    cdef bint v4
    if n < VNET_HDR + 20:
        d.c.arrived += 1
        d.c.invalid += 1
        return
    length = n - VNET_HDR
    if buf[1] == 0:                                  # VIRTIO_NET_HDR_GSO_NONE
        if length > d.mtu:
            d.c.arrived += 1
            d.c.invalid += 1
            return
        _offer_vnet(d, now, buf, ip, length)
        return
    # UDP_L4 only (the TUNs offer no TCP segmentation); csum_start is where UDP begins
    l4 = buf[6] | (<uint32_t>buf[7] << 8)
    gso_size = buf[4] | (<uint32_t>buf[5] << 8)
    v4 = ip[0] >> 4 == 4
    if (buf[1] & 0x7F) != VIRTIO_GSO_UDP_L4 or not _valid_ip(ip, length) or gso_size == 0 or (
            l4 + 8 > length) or l4 + 8 + gso_size > d.mtu or (v4 and (ip[9] != 17 or l4 != (ip[0] & 0xF) * 4)) or (
            not v4 and (ip[6] != 17 or l4 != 40)):
        d.c.arrived += 1
        d.c.invalid += 1
        return
    # each datagram: NEEDS_CSUM with the UDP checksum left to the receiving stack, as the
    # sender's kernel left it for the super-packet (the checksum field: the pseudo-header sum)
    memset(hdr, 0, VNET_HDR)
    hdr[0] = VIRTIO_NEEDS_CSUM
    hdr[6] = <uint8_t>l4
    hdr[8] = 6                                       # csum_offset: UDP's checksum field
    payload = length - l4 - 8
    ipv4_id = _get16(ip + 4) if v4 else 0
    done = 0
    i = 0
    while done < payload:
        chunk = payload - done if payload - done < gso_size else gso_size
        total = l4 + 8 + chunk
        # the segment's headers in place, just before its payload (the previous segment has
        # been copied out already; the first one's are the super-packet's own)
        if done > 0:
            memmove(ip + done, ip, l4 + 8)
        if v4:
            _put16(ip + done + 2, total)
            _put16(ip + done + 4, (ipv4_id + i) & 0xFFFF)
            _put16(ip + done + 10, 0)
            _put16(ip + done + 10, (~_sum16(ip + done, l4, 0)) & 0xFFFF)
            pseudo = _sum16(ip + done + 12, 8, 17 + 8 + chunk)
        else:
            _put16(ip + done + 4, 8 + chunk)
            pseudo = _sum16(ip + done + 8, 32, 17 + 8 + chunk)
        _put16(ip + done + l4 + 4, 8 + chunk)
        _put16(ip + done + l4 + 6, pseudo)
        _offer_vnet(d, now, hdr, ip + done, total)
        done += chunk
        i += 1


cdef inline uint32_t _udp_l4(const uint8_t* hdr, const uint8_t* ip, uint32_t length) noexcept nogil:
    """Where UDP starts in a packet that may join a batch (NEEDS_CSUM, no options), else 0."""
    if hdr[0] != VIRTIO_NEEDS_CSUM or hdr[1] != 0:
        return 0
    if ip[0] == 0x45 and ip[9] == 17 and length >= 28 and (ip[6] & 0x3F) == 0 and ip[7] == 0:
        return 20
    if ip[0] >> 4 == 6 and ip[6] == 17 and length >= 48:
        return 40
    return 0


cdef inline bint _same_flow(const uint8_t* a, const uint8_t* b, uint32_t l4) noexcept nogil:
    """Same addresses, ports and header fields, all but the lengths, id and checksums."""
    if l4 == 20:
        return (memcmp(a, b, 2) == 0 and memcmp(a + 6, b + 6, 4) == 0 and memcmp(a + 12, b + 12, 12) == 0)
    return memcmp(a, b, 4) == 0 and memcmp(a + 6, b + 6, 38) == 0


cdef uint64_t _batch_end(Direction* d, int64_t now, uint64_t first, uint32_t l4) noexcept nogil:
    """The sequence after the last due packet that can join *first*'s batch: one flow, equal
    payload sizes (the last may be shorter), at most MAX_BATCH datagrams and 64 KB."""
    cdef Slot* head = &d.slots[first % d.nslots]
    cdef Slot* slot
    cdef const uint8_t* ip0 = d.ring + head.offset + d.vnet
    cdef const uint8_t* ip
    cdef uint32_t size = head.length, total = head.length
    cdef uint64_t seq = first + 1
    while seq < d.tail and seq - first < MAX_BATCH:
        slot = &d.slots[seq % d.nslots]
        ip = d.ring + slot.offset + d.vnet
        if (slot.due_ns > now or slot.length > size or total + slot.length - l4 - 8 > 65000
                or _udp_l4(ip - d.vnet, ip, slot.length) != l4 or not _same_flow(ip0, ip, l4)):
            break
        total += slot.length - l4 - 8
        seq += 1
        if slot.length < size:
            break                                    # a shorter datagram ends a GSO batch
    return seq


cdef void _write_batch(int fd, Direction* d, uint64_t first, uint64_t end, uint32_t l4,
                       uint8_t* out) noexcept nogil:
    """Packets first..end-1 of one flow as one UDP GSO super-packet (the receiving stack cuts
    it again, or hands it whole to a socket with UDP_GRO)."""
    cdef Slot* head = &d.slots[first % d.nslots]
    cdef Slot* slot
    cdef uint8_t* ip = out + VNET_HDR
    cdef uint32_t pos = l4 + 8, payload = head.length - l4 - 8, udp_len
    cdef uint64_t seq
    memset(out, 0, VNET_HDR)
    out[0] = VIRTIO_NEEDS_CSUM
    out[1] = VIRTIO_GSO_UDP_L4
    out[2] = <uint8_t>(l4 + 8)                       # hdr_len
    out[4] = <uint8_t>payload                        # gso_size, little-endian
    out[5] = <uint8_t>(payload >> 8)
    out[6] = <uint8_t>l4                             # csum_start
    out[8] = 6                                       # csum_offset
    memcpy(ip, d.ring + head.offset + VNET_HDR, pos)
    for seq in range(first, end):
        slot = &d.slots[seq % d.nslots]
        memcpy(ip + pos, d.ring + slot.offset + VNET_HDR + l4 + 8, slot.length - l4 - 8)
        pos += slot.length - l4 - 8
    udp_len = pos - l4
    if l4 == 20:
        _put16(ip + 2, pos)
        _put16(ip + 10, 0)
        _put16(ip + 10, (~_sum16(ip, 20, 0)) & 0xFFFF)
        _put16(ip + l4 + 6, _sum16(ip + 12, 8, 17 + udp_len))
    else:
        _put16(ip + 4, udp_len)
        _put16(ip + l4 + 6, _sum16(ip + 8, 32, 17 + udp_len))
    _put16(ip + l4 + 4, udp_len)
    d.c.gso_writes += 1
    if write(fd, out, VNET_HDR + pos) < 0:
        d.c.write_errors += end - first


cdef void _deliver(int fd, Direction* d, int64_t now, uint8_t* out) noexcept nogil:
    """Write every packet due by *now*; with offloads, runs of one UDP flow's datagrams due
    together leave as one GSO super-packet (one write, one pass up the receiving stack)."""
    cdef Slot* slot = _due(d, now)
    cdef uint32_t l4
    cdef uint64_t end
    while slot != NULL:
        l4 = _udp_l4(d.ring + slot.offset, d.ring + slot.offset + d.vnet, slot.length) if d.vnet else 0
        end = _batch_end(d, now, d.head, l4) if l4 else d.head + 1
        if end - d.head > 1:
            _write_batch(fd, d, d.head, end, l4, out)
            while d.head < end:
                _pop(d, &d.slots[d.head % d.nslots])
        else:
            if write(fd, d.ring + slot.offset, d.vnet + slot.length) < 0:
                d.c.write_errors += 1
            _pop(d, slot)
        slot = _due(d, now)


cdef void _arm(int timer_fd, int64_t value_ns, int64_t interval_ns, bint absolute) noexcept nogil:
    """Set the timer: at *value_ns* (absolute or from now; 0 disarms), then every *interval_ns*."""
    cdef itimerspec when
    when.it_value.tv_sec = value_ns // 1000000000
    when.it_value.tv_nsec = value_ns % 1000000000
    when.it_interval.tv_sec = interval_ns // 1000000000
    when.it_interval.tv_nsec = interval_ns % 1000000000
    timerfd_settime(timer_fd, TFD_TIMER_ABSTIME if absolute else 0, &when, NULL)


cdef class Forwarder:
    """Moves packets between two TUN fds (non-blocking, IFF_NO_PI) through two shapers.

    ``run()`` blocks in a ``nogil`` epoll loop (call it from a thread) until ``stop()``.  The
    caller owns the TUN fds; the forwarder owns its epoll, timer and stop fds.
    """

    def __cinit__(self):
        self.epoll_fd = -1
        self.busy_epoll_fd = -1
        self.timer_fd = -1
        self.stop_fd = -1
        self.scratch = NULL

    def __init__(self, int left_fd, int right_fd, Shaper forward, Shaper reverse, *, bint vnet_hdr=False):
        """``vnet_hdr``: the fds were opened with IFF_VNET_HDR and UDP segmentation offload, so
        a read may be a UDP GSO super-packet (cut into its datagrams here) and every write
        carries a virtio-net header.  The shapers must not be in use yet."""
        cdef epoll_event event
        self.left_fd = left_fd
        self.right_fd = right_fd
        self.forward = forward
        self.reverse = reverse
        self.vnet = vnet_hdr
        forward.d.vnet = reverse.d.vnet = VNET_HDR if vnet_hdr else 0
        self.scratch = <uint8_t*>malloc(VNET_READ_MAX if vnet_hdr else max(forward.d.mtu, reverse.d.mtu))
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        self.busy_epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        self.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        self.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if (self.scratch == NULL or self.epoll_fd < 0 or self.busy_epoll_fd < 0 or self.timer_fd < 0
                or self.stop_fd < 0):
            raise OSError(errno, "forwarder setup failed")
        # Idle: woken by either TUN, the timer (next due packet) or stop.  Ticking: by the
        # timer or stop only (the TUNs are read at every tick anyway).
        for epfd, fds in ((self.epoll_fd, (left_fd, right_fd, self.timer_fd, self.stop_fd)),
                          (self.busy_epoll_fd, (self.timer_fd, self.stop_fd))):
            for fd in fds:
                event.events = EPOLLIN
                event.data.fd = fd
                if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) < 0:
                    raise OSError(errno, f"epoll_ctl({fd}) failed")

    def __dealloc__(self):
        for fd in (self.epoll_fd, self.busy_epoll_fd, self.timer_fd, self.stop_fd):
            if fd >= 0:
                close(fd)
        free(self.scratch)

    def start_schedules(self):
        """t = 0 of both rate schedules is now."""
        now = _now_ns()
        self.forward.start_schedule(now)
        self.reverse.start_schedule(now)

    def stop(self):
        """Wake ``run()`` and make it return (callable from any thread)."""
        cdef uint64_t one = 1
        write(self.stop_fd, &one, sizeof(one))

    def run(self):
        """Forward until ``stop()``; raises OSError if a TUN fd fails."""
        with nogil:
            self.loop_errno = self._loop()
        if self.loop_errno:
            raise OSError(self.loop_errno, "WAN forwarder: reading a TUN device failed")

    cdef int _loop(self) noexcept nogil:
        cdef epoll_event events[4]
        cdef int64_t now, next_fwd, next_rev, next_due, armed = -1   # -1: off, -2: ticking
        cdef uint64_t expirations, moved, seen = 0
        cdef int n, i, fd, more_left = 0, more_right = 0
        cdef bint left_ready = False, right_ready = False, busy = False, timer_fired
        cdef Direction* fwd = &self.forward.d
        cdef Direction* rev = &self.reverse.d
        prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)    # delays are set in microseconds, not 50 us slack
        # The link must not be the bottleneck on a busy machine: this thread goes before the
        # endpoints (needs root, like the namespaces; harmless if refused).
        setpriority(PRIO_PROCESS, gettid(), FORWARDER_NICE)
        while True:
            if more_left or more_right:
                # A read batch was full: take the rest now, without sleeping (a tick can wait).
                n = epoll_wait(self.busy_epoll_fd, events, 4, 0)
                left_ready = more_left != 0
                right_ready = more_right != 0
            else:
                n = epoll_wait(self.busy_epoll_fd if busy else self.epoll_fd, events, 4, -1)
                # Ticking: both TUNs are read at every tick, whatever epoll says of them.
                left_ready = right_ready = busy
            if n < 0:
                if errno == EINTR:
                    continue
                return errno
            timer_fired = False
            for i in range(n):
                fd = events[i].data.fd
                if fd == self.stop_fd:
                    return 0
                if fd == self.timer_fd:
                    read(self.timer_fd, &expirations, sizeof(expirations))
                    timer_fired = True
                left_ready = left_ready or fd == self.left_fd
                right_ready = right_ready or fd == self.right_fd
            more_left = more_right = 0
            if left_ready:
                more_left = _drain_fd(self.left_fd, fwd, self.scratch)
                if more_left < 0:
                    return errno
            if right_ready:
                more_right = _drain_fd(self.right_fd, rev, self.scratch)
                if more_right < 0:
                    return errno
            now = _now_ns()
            _deliver(self.right_fd, fwd, now, self.scratch)
            _deliver(self.left_fd, rev, now, self.scratch)
            if more_left or more_right or (busy and not timer_fired):
                continue
            # Tick while packets flow: one periodic timer wake-up per TICK_NS reads both TUNs
            # and writes every packet due by then, instead of one wake-up (and one timer
            # re-arm, a costly VM exit) per packet.  Due times stay those planned on arrival,
            # so a late tick writes its backlog at once and never shifts later packets.
            moved = fwd.c.arrived + rev.c.arrived + fwd.c.delivered + rev.c.delivered
            if moved != seen:
                seen = moved
                if not busy:
                    busy = True
                    _arm(self.timer_fd, TICK_NS, TICK_NS, False)
                    armed = -2                  # periodic: replaced whatever comes next
                continue
            # A tick that moved nothing: back to waiting on the TUNs and the next due packet.
            busy = False
            next_fwd = _next_due(fwd)
            next_rev = _next_due(rev)
            next_due = next_fwd if next_rev < 0 or (0 <= next_fwd < next_rev) else next_rev
            if next_due != armed:
                _arm(self.timer_fd, next_due if next_due >= 0 else 0, 0, True)
                armed = next_due
