# cython: language_level=3
"""The flood generator's data path: prepared IPv4/UDP datagrams (any source address, so
spoofed ones) sent through a raw IP_HDRINCL socket in sendmmsg batches, paced to a packet rate,
without the GIL.  A Python loop cannot hold 50,000 packets/s on a small machine; this can.
Needs CAP_NET_RAW (root)."""
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, nanosleep, timespec
from posix.unistd cimport close
from posix.uio cimport iovec


from udt._sys cimport (AF_INET, SO_SNDBUF, SOL_SOCKET, htonl, mmsghdr, sendmmsg, setsockopt,
                       sockaddr_in, socket)


cdef extern from "<sys/socket.h>" nogil:
    enum:
        SOCK_RAW


cdef extern from "<netinet/in.h>" nogil:
    enum:
        IPPROTO_RAW
        IPPROTO_IP
        IP_HDRINCL


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class RawSender:
    """Send prepared datagrams round-robin at a target rate.

    packets: list of (source_ip: int, source_port: int, payload: bytes); they are wrapped in
    IPv4 + UDP headers once, here, to target (ip: int, port)."""

    def __cinit__(self):
        self.fd = -1

    def __init__(self, list packets, uint32_t target_ip, int target_port, int batch=64):
        cdef int i, n = len(packets)
        cdef sockaddr_in* dst
        cdef mmsghdr* msgs
        cdef iovec* iov
        cdef int one = 1, sndbuf = 4 << 20
        cdef int longest = 0
        cdef bytes payload
        cdef uint8_t* p
        cdef int length
        if n == 0 or batch < 1:
            raise ValueError("need at least one packet and a batch of 1 or more")
        for item in packets:
            longest = max(longest, len(item[2]))
        if longest > 1400:
            raise ValueError("payloads must fit one datagram (1400 bytes)")
        self.stride = (28 + longest + 7) & ~7
        self.count = n
        self.batch = batch
        self.ring = <uint8_t*>calloc(n, self.stride)
        self.lengths = <size_t*>calloc(n, sizeof(size_t))
        self.messages = calloc(batch, sizeof(mmsghdr))
        self.iov = calloc(batch, sizeof(iovec))
        self.destination = calloc(1, sizeof(sockaddr_in))
        if (self.ring == NULL or self.lengths == NULL or self.messages == NULL or self.iov == NULL
                or self.destination == NULL):
            raise MemoryError()
        for i in range(n):
            source_ip, source_port, payload = packets[i]
            p = self.ring + <size_t>i * self.stride
            length = 28 + len(payload)
            p[0] = 0x45                                  # IPv4, 20-byte header
            p[2] = <uint8_t>(length >> 8)                # total length (the kernel checks it)
            p[3] = <uint8_t>(length & 0xFF)
            p[8] = 64                                    # TTL
            p[9] = 17                                    # UDP; id and checksum: the kernel's
            _put32(p + 12, <uint32_t>source_ip)
            _put32(p + 16, target_ip)
            p[20] = <uint8_t>((<int>source_port) >> 8)
            p[21] = <uint8_t>((<int>source_port) & 0xFF)
            p[22] = <uint8_t>(target_port >> 8)
            p[23] = <uint8_t>(target_port & 0xFF)
            p[24] = <uint8_t>((length - 20) >> 8)
            p[25] = <uint8_t>((length - 20) & 0xFF)
            # UDP checksum 0: "none", valid for IPv4
            memcpy(p + 28, <const char*>payload, len(payload))
            self.lengths[i] = length
        dst = <sockaddr_in*>self.destination
        dst.sin_family = AF_INET
        dst.sin_addr.s_addr = htonl(target_ip)
        msgs = <mmsghdr*>self.messages
        iov = <iovec*>self.iov
        for i in range(batch):
            msgs[i].msg_hdr.msg_name = self.destination
            msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            msgs[i].msg_hdr.msg_iov = &iov[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        self.fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW)
        if self.fd < 0:
            raise OSError(errno, "raw socket (needs CAP_NET_RAW)")
        setsockopt(self.fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(int))
        setsockopt(self.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(int))

    def run(self, double rate_pps, double duration_s):
        """Send at rate_pps (0: as fast as possible) for duration_s seconds or until stop().
        Returns (datagrams sent, send errors, seconds elapsed).  Releases the GIL."""
        cdef int64_t start, now, end, due, sent = 0, errors = 0
        cdef int64_t batches = 0
        cdef int want, i, rc, slot = 0
        cdef mmsghdr* msgs = <mmsghdr*>self.messages
        cdef iovec* iov = <iovec*>self.iov
        cdef timespec pause
        if self.fd < 0:
            raise OSError("the sender is closed")
        self.stop_flag = 0
        with nogil:
            start = _now_ns()
            end = start + <int64_t>(duration_s * 1e9)
            now = start
            while self.stop_flag == 0 and now < end:
                if rate_pps > 0:
                    due = <int64_t>((now - start) * rate_pps / 1e9) - sent
                    if due <= 0:
                        pause.tv_sec = 0
                        pause.tv_nsec = <long>(1e9 / rate_pps * self.batch / 2)
                        if pause.tv_nsec > 2000000:
                            pause.tv_nsec = 2000000
                        nanosleep(&pause, NULL)
                        now = _now_ns()
                        continue
                    want = <int>(due if due < self.batch else self.batch)
                else:
                    want = self.batch
                for i in range(want):
                    iov[i].iov_base = self.ring + <size_t>slot * self.stride
                    iov[i].iov_len = self.lengths[slot]
                    slot += 1
                    if slot == self.count:
                        slot = 0
                rc = sendmmsg(self.fd, msgs, want, 0)
                batches += 1
                if rc < 0:
                    # counted as offered (pacing must not try to catch up) and as failed
                    sent += want
                    errors += want
                else:
                    sent += rc
                    if rc < want:
                        errors += want - rc
                now = _now_ns()
        self.sent += sent
        self.errors += errors
        self.batches += batches
        return sent - errors, errors, (now - start) / 1e9

    def stop(self):
        """Make a run() in another thread return soon (it checks between batches)."""
        self.stop_flag = 1

    def close(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
        free(self.ring)
        free(self.lengths)
        free(self.messages)
        free(self.iov)
        free(self.destination)


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v
